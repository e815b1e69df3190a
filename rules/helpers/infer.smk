# Functions of rules/infer.smk (kept apart from the rules, as snakemake's linter asks).
from pddpm.models import infer_params as kind_infer_params
from pddpm.models import kind as model_kind


def infer_inputs(wildcards):
    inputs = {"slices": fill(artefacts.SLICES, ds=wildcards.ds, split=wildcards.split)}
    if model_kind(wildcards.model).trained:
        inputs["model"] = fill(artefacts.MODEL, model=wildcards.model, fold=wildcards.fold)
    return inputs


def infer_options(wildcards):
    """The `infer` keys this kind's maps depend on (none for thresh): changing the others reruns nothing."""
    return kind_infer_params(wildcards.model, config)


def infer_gpus(wildcards):
    return config["infer"]["gpus"] if model_kind(wildcards.model).trained else 0


def infer_mem_mb(wildcards, input, attempt):
    # per voxel: image + mask (memory-mapped), float32 reconstruction, float16 map and its float16 copies
    # while saving; input.size_mb counts image, mask and seg (4 bytes per voxel) plus the model file.
    # Times the attempt, so that a job killed for memory is resubmitted with more (docs/cluster.md)
    return (2000 + int(3 * input.size_mb)) * attempt
