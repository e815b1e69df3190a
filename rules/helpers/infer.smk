# Functions of rules/infer.smk (kept apart from the rules, as snakemake's linter asks).


def infer_inputs(wildcards):
    inputs = {"slices": fill(artefacts.SLICES, ds=wildcards.ds, split=wildcards.split)}
    if has_network(wildcards.model):
        inputs["model"] = fill(artefacts.MODEL, model=wildcards.model, fold=wildcards.fold)
    return inputs


def network_param(wildcards, key):
    return config["infer"][key] if has_network(wildcards.model) else None


def infer_mem_mb(wildcards, input, attempt):
    # per voxel: image + mask (memory-mapped), float32 reconstruction, float16 map and its float16 copies
    # while saving; input.size_mb counts image, mask and seg (4 bytes per voxel) plus the model file.
    # Times the attempt, so that a job killed for memory is resubmitted with more (docs/cluster.md)
    return (2000 + int(3 * input.size_mb)) * attempt
