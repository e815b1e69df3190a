"""Rule atlas_demo: ICBM152 T1, its T2-like contrast and brain mask on SRI24's 240 x 240 x 155 grid."""

from pddpm.demo import anatomy
from pddpm.io import save_nifti
from pddpm.runlog import logged

with logged(snakemake.log[0]) as logger:
    images = anatomy.atlas_images()
    for key in ("t1", "t2", "mask"):
        save_nifti(images[key], anatomy.ATLAS_AFFINE, snakemake.output[key])
    logger.info("atlas %s written", anatomy.ATLAS_SHAPE)
