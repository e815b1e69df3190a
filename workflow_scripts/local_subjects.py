"""Rule local_subjects: data/raw/{ds}/subjects.tsv of a local data set (listed at DAG-build time)."""

from pddpm.artefacts import write_subjects_tsv
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    write_subjects_tsv(snakemake.params.rows, snakemake.output[0])
