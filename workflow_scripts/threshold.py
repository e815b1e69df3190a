"""Rule threshold: the Dice-optimal threshold of an anomalous data set's validation split."""

from pddpm.evaluate.split import split_threshold, write_json
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    result = split_threshold(snakemake.input.infer, snakemake.input.slices, method=p.method, steps=p.steps,
                             threads=snakemake.threads)
    write_json(result, snakemake.output[0])
