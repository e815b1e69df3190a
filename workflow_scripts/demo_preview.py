"""Rule demo_preview: one subject of each demo data set, with its ground truth, for the report."""

from pddpm.demo.preview import plot_cohort
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    keys = ("t2", "mask", "lesions", "bias")
    subjects = {ds: {k: snakemake.input[f"{ds}_{k}"] for k in keys} for ds in snakemake.params.datasets}
    plot_cohort(subjects, snakemake.output[0])
