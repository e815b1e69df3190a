"""Rule demo_subjects_tsv: the subject sheet of one demo data set (docs/contracts.md, "Raw")."""

from pddpm.demo import cohort
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    cohort.write_subjects_tsv(snakemake.output[0], snakemake.params.subjects, snakemake.params.anomalous)
