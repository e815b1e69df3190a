"""Rule crop: image, mask and segmentation to the bounding box of the registered brain mask."""

from pddpm.preprocess.stages import crop_files
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    i, o = snakemake.input, snakemake.output
    info = crop_files(i.t2, i.mask, i.seg, snakemake.params.margin_vox,
                      {"t2": o.t2, "mask": o.mask, "seg": o.seg})
    log.info("%s: %s", i.t2, info)
