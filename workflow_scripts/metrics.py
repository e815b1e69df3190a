"""Rule metrics: per-volume metrics of a test split (anomalous: at the val threshold; healthy: error)."""

from pddpm.evaluate.split import per_volume, read_threshold, write_csv
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    threshold = read_threshold(snakemake.input.threshold) if p.anomalous else None
    table = per_volume(snakemake.input.infer, snakemake.input.slices, anomalous=p.anomalous, threshold=threshold,
                       min_component_voxels=p.min_component_voxels, search=p.search, steps=p.steps,
                       threads=snakemake.threads)
    write_csv(table, snakemake.output[0])
    print(table.describe().to_string())
