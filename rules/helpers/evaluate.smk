# Functions of rules/evaluate.smk (kept apart from the rules, as snakemake's linter asks).
from pddpm.evaluate.postprocess import voxel_settings

# The post-processing sizes of the `evaluate` section (mm) in voxels of the model grid: the rules pass
# these integers as params, so a change in mm that leaves them alone reruns nothing.
POSTPROCESS_VOXELS = voxel_settings(config["evaluate"], config["slices"]["target_spacing_mm"])


def eval_mem_mb(wildcards, threads):
    # the split is read one volume at a time, whatever its size: about 100 MB for the job and as much per
    # worker process on the paper's grid (measured: bench/bench_eval.py, docs/evaluation.md)
    return 500 + 250 * threads


def anomalous_param(wildcards, key):
    """A setting of the anomalous metrics (None for a healthy data set, so changing it reruns nothing there)."""
    if not is_anomalous(wildcards.ds):
        return None
    return POSTPROCESS_VOXELS[key] if key in POSTPROCESS_VOXELS else config["evaluate"][key]


def metrics_inputs(wildcards):
    pre = f"{RES}/eval/{wildcards.model}/fold{wildcards.fold}/{wildcards.ds}"
    inputs = {
        "infer": f"{RES}/infer/{wildcards.model}/fold{wildcards.fold}/{wildcards.ds}_test.npz",
        "slices": f"{RES}/slices/{wildcards.ds}_test.npz",
    }
    if is_anomalous(wildcards.ds):
        inputs["threshold"] = f"{pre}_threshold.json"
    return inputs
