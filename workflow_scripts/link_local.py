"""Rule link_local: a file of a local data set, symlinked into data/raw/{ds}/ in the raw naming."""

from pathlib import Path

from pddpm.data.raw import place
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    place(Path(snakemake.input[0]), Path(snakemake.output[0]), mode="link")
