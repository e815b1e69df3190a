# Functions of rules/evaluate.smk (kept apart from the rules, as snakemake's linter asks).


def eval_mem_mb(wildcards, input):
    # per voxel: the slices file holds 4 bytes (memory-mapped), the inference file's float16 maps are read
    # (4 bytes) and the threshold search copies the maps to float32 (4 bytes): about 1.5 x the inputs
    return 1000 + int(1.5 * input.size_mb)


def anomalous_param(wildcards, key):
    return config["evaluate"][key] if is_anomalous(wildcards.ds) else None


def metrics_inputs(wildcards):
    wc = {"model": wildcards.model, "fold": wildcards.fold, "ds": wildcards.ds}
    inputs = {
        "infer": fill(artefacts.INFERENCE, split="test", **wc),
        "slices": fill(artefacts.SLICES, split="test", ds=wildcards.ds),
    }
    if is_anomalous(wildcards.ds):
        inputs["threshold"] = fill(artefacts.THRESHOLD, **wc)
    return inputs
