"""Rule `dice_distribution`: per-volume Dice per model and anomalous data set."""

from pddpm.report import figures, table
from pddpm.runlog import logged

with logged(snakemake.log[0]) as logger:
    p = snakemake.params
    # only the Dice columns are read, so kind and source do not matter here
    datasets = [table.Dataset(ds, kind="", role="anomalous", source="") for ds in p.datasets]
    per_volume = table.load_per_volume(p.eval_dir, p.models, p.folds, datasets)
    figures.dice_distribution_figure(per_volume, p.datasets, snakemake.output[0])
    logger.info("wrote %s", snakemake.output[0])
