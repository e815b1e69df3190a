# Functions of rules/train.smk (kept apart from the rules, as snakemake's linter asks).
from pddpm.models import kind as model_kind
from pddpm.models import train_params as kind_train_params


def train_split(split):
    """The training data set's slices of one fold's `split` (train or val), `{fold}` left a wildcard."""
    return fill(artefacts.SLICES, ds=config["train_dataset"], split=f"{split}_fold{{fold}}")


def train_inputs(wildcards):
    """The fold's training and validation slices, plus the extra files the model kind reads (e.g. the
    model.pt of a pre-trained encoder's kind, same fold)."""
    inputs = {
        "train": train_split("train").format(fold=wildcards.fold),
        "val": train_split("val").format(fold=wildcards.fold),
    }
    for name, source in model_kind(wildcards.model).extra_inputs.items():
        # a kind's model.pt, or a pattern of pddpm.artefacts (the pretrain rule's encoder)
        pattern = artefacts.MODEL if source in KINDS else getattr(artefacts, source)
        inputs[name] = fill(pattern, model=source, fold=wildcards.fold)
    return inputs


def pretrain_inputs(wildcards):
    """The fold's training and validation slices, as the train rule reads them."""
    return {split: train_split(split).format(fold=wildcards.fold) for split in ("train", "val")}


def pretrain_params():
    """What the pre-trained encoder depends on: the encoder's architecture and the pre-training section
    (not the diffusion settings, so changing those retrains cddpm without redoing this)."""
    return {"encoder": config["cddpm"]["encoder"], "settings": config["cddpm_pretrain"]}


def train_params(wildcards):
    """The config sections this kind reads and the result-changing `train` keys (pddpm.models.train_params):
    changing another kind's section does not retrain this one."""
    return kind_train_params(wildcards.model, config)


def train_mem_mb(wildcards, attempt):
    # train.mem_mb, times the attempt: a job killed for memory is resubmitted with twice, three times as
    # much (docs/cluster.md, "Troubleshooting")
    return config["train"]["mem_mb"] * attempt
