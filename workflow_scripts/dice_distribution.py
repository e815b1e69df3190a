"""Rule `dice_distribution`: per-volume Dice per model and anomalous data set."""

from pddpm.report import figures, table
from pddpm.runlog import logged

with logged(snakemake.log[0]) as logger:
    p = snakemake.params
    datasets = [d for d in table.datasets_from_config(p.table) if d.role == "anomalous"]
    per_volume = table.load_per_volume(p.eval_dir, p.table["models"], p.table["folds_to_run"], datasets)
    figures.dice_distribution_figure(per_volume, [d.key for d in datasets], snakemake.output[0])
    logger.info("wrote %s", snakemake.output[0])
