"""Rule `training_curves`: training and validation loss of every trained model and fold."""

from pddpm.report import figures
from pddpm.runlog import logged

with logged(snakemake.log[0]) as logger:
    p = snakemake.params
    keys = [(m, f) for m in p.models for f in p.folds]
    logs = {k: figures.read_train_log(path) for k, path in zip(keys, snakemake.input.logs, strict=True)}
    figures.training_curves_figure(logs, snakemake.output[0])
    logger.info("wrote %s", snakemake.output[0])
