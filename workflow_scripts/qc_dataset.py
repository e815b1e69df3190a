"""Rule qc_dataset: the per-subject QC rows of a data set in one table, outliers flagged."""

import pandas as pd

from pddpm.preprocess.qc import flag_outliers, write_tsv
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    df = pd.concat([pd.read_csv(p, sep="\t") for p in snakemake.input.rows], ignore_index=True)
    df = flag_outliers(df)
    flagged = df[df["flags"].fillna("") != ""]
    log.info("%d subjects, %d flagged", len(df), len(flagged))
    for _, r in flagged.iterrows():
        log.warning("%s: %s", r["subject"], r["flags"])
    write_tsv(df, snakemake.output.tsv)
