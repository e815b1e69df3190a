"""Rule local_subjects: data/raw/{ds}/subjects.tsv of a local data set (listed at DAG-build time)."""

import pandas as pd

from pddpm.io import atomic_path
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    with atomic_path(snakemake.output[0]) as tmp:
        pd.DataFrame(snakemake.params.rows).to_csv(tmp, sep="\t", index=False)
