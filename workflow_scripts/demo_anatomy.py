"""Rule demo_anatomy: the template's tissue maps and the synthetic head on the reference grid."""

from pddpm.demo import anatomy
from pddpm.runlog import logged

with logged(snakemake.log[0]) as logger:
    ref = anatomy.build_reference()
    anatomy.save_reference(ref, snakemake.output[0])
    logger.info("reference anatomy %s written to %s", ref.mask.shape, snakemake.output[0])
