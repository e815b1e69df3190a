"""Rule atlas_grid: the atlas brain and mask on the working grid (pddpm.preprocess.register)."""

from pddpm.preprocess.register import write_atlas_grid
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    i, o = snakemake.input, snakemake.output
    write_atlas_grid(i.image, i.mask, snakemake.params.spacing_mm, o.brain, o.mask)
    log.info("%s, %s at %s mm -> %s, %s", i.image, i.mask, snakemake.params.spacing_mm, o.brain, o.mask)
