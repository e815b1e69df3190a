"""Rule n4: bias field correction inside the brain mask; mask and segmentation pass through."""

from pddpm.preprocess.stages import n4_files
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    info = n4_files(i.t2, i.mask, i.seg, {"t2": o.t2, "mask": o.mask, "seg": o.seg},
                    implementation=p.implementation, levels=p.levels, iterations=p.iterations,
                    tolerance=p.tolerance, mask_sigma_mm=p.mask_sigma_mm, shrink_factor=p.shrink_factor,
                    threads=snakemake.threads)
    log.info("%s: N4 (%s) %s", i.t2, p.implementation, info)
