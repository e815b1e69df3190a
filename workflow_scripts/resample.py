"""Rule resample: raw T2 (+ seg) -> isotropic RAS+ grid (B-spline image, nearest labels)."""

from pddpm.preprocess.stages import resample_files
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    i, o = snakemake.input, snakemake.output
    info = resample_files(i.t2, i.get("seg"), snakemake.params.spacing_mm, o.t2, o.seg)
    log.info("%s: %s", i.t2, info)
