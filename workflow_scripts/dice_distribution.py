"""Rule `dice_distribution`: per-volume Dice per model and anomalous data set."""

from pddpm.report import figures, table
from pddpm.runlog import logged

with logged(snakemake.log[0]) as logger:
    p = snakemake.params
    files = {tuple(key): path for key, path in zip(p.per_volume_keys, snakemake.input, strict=True)}
    # only the Dice columns are read, so kind and source do not matter here
    datasets = [table.Dataset(ds, kind="", role="anomalous", source="") for ds in p.datasets]
    per_volume = table.load_per_volume(files, datasets)
    figures.dice_distribution_figure(per_volume, p.datasets, snakemake.output[0])
    logger.info("wrote %s", snakemake.output[0])
