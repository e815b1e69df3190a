"""Rule hdbet_weights: HD-BET v2's downloaded weights archive -> its weights folder (the skull-strip
jobs get that folder as an input and never download)."""

from pddpm.preprocess.skullstrip import install_hdbet_v2_weights
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    folder = install_hdbet_v2_weights(snakemake.input[0], snakemake.output[0], snakemake.params.members)
    log.info("HD-BET v2 weights in %s", folder)
