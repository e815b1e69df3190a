"""Rule `qualitative`: input, reconstruction, anomaly map, thresholded map and ground truth per model."""

from pddpm.report import figures
from pddpm.runlog import logged

with logged(snakemake.log[0]) as logger:
    p = snakemake.params
    infer = dict(zip(p.models, snakemake.input.infer, strict=True))
    thresholds = dict(zip(p.models, snakemake.input.thresholds, strict=True))
    figures.qualitative_from_files(
        snakemake.input.slices, infer, thresholds, p.volumes,
        f"{snakemake.wildcards.ds} test, fold {p.fold} ({p.run_name})", snakemake.output[0],
        min_component_voxels=p.min_component_voxels)
    logger.info("wrote %s", snakemake.output[0])
