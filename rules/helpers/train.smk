# Functions of rules/train.smk (kept apart from the rules, as snakemake's linter asks).


def train_split(split):
    return f"{RES}/slices/{config['train_dataset']}_{split}_fold{{fold}}.npz"
