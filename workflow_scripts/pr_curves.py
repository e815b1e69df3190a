"""Rule `pr_curves`: precision-recall over all test voxels of one data set, one curve per model."""

from pddpm.report import figures
from pddpm.runlog import logged

with logged(snakemake.log[0]) as logger:
    p = snakemake.params
    keys = [(m, f) for m in p.models for f in p.folds]
    figures.pr_curves_from_files(
        snakemake.input.slices, dict(zip(keys, snakemake.input.infer, strict=True)),
        dict(zip(keys, snakemake.input.thresholds, strict=True)),
        f"{snakemake.wildcards.ds} test ({p.run_name})", snakemake.output[0])
    logger.info("wrote %s", snakemake.output[0])
