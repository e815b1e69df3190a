# Functions of rules/train.smk (kept apart from the rules, as snakemake's linter asks).


def train_split(split):
    """The training data set's slices of one fold's `split` (train or val), `{fold}` left a wildcard."""
    return fill(artefacts.SLICES, ds=config["train_dataset"], split=f"{split}_fold{{fold}}")


def train_mem_mb(wildcards, attempt):
    # train.mem_mb, times the attempt: a job killed for memory is resubmitted with twice, three times as
    # much (docs/cluster.md, "Troubleshooting")
    return config["train"]["mem_mb"] * attempt
