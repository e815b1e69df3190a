"""Checkpoint download_raw: downloaded archives -> data/raw/{ds}/ in the raw naming + subjects.tsv."""

from pathlib import Path

from pddpm.data.normalise import from_archives
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    from_archives(snakemake.params.kind, list(snakemake.input), Path(snakemake.output[0]).parent,
                  snakemake.params.role)
