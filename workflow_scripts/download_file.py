"""Rule download_file: one file of a public source, hash-checked (pddpm.data.download.fetch)."""

from pddpm.data.download import fetch
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    fetch(p.url, snakemake.output[0], p.known_hash, tofu=p.tofu, retries=p.retries, timeout=p.timeout)
