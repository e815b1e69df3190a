"""Rule train: train one model kind on one fold (pddpm.train), resuming from its checkpoint if one exists."""

import torch

from pddpm.artefacts import load_split
from pddpm.models import TRAIN_SPEED_KEYS, kind, settings_from_sections
from pddpm.runlog import logged
from pddpm.train import run_record, train, write_outputs

with logged(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    cfg = snakemake.config
    train_split = load_split(snakemake.input.train)
    val_split = load_split(snakemake.input.val)
    settings = settings_from_sections(p.kind, dict(p.settings), train_split["image"].shape[-2:])
    # not params: speed-only settings, so changing them must not rerun training
    train_cfg = {**dict(p.train), **{k: cfg["train"][k] for k in TRAIN_SPEED_KEYS}}
    extra = {name: getattr(snakemake.input, name) for name in kind(p.kind).extra_inputs}
    result = train(train_split, val_split, settings, train_cfg, seed=p.seed, device=cfg["device"],
                   checkpoint_dir=p.checkpoint_dir, extra_inputs=extra)
    record = run_record({"settings": settings, "train": train_cfg, "train_dataset": cfg["train_dataset"],
                         "inputs": [snakemake.input.train, snakemake.input.val, *extra.values()]}, p.seed)
    write_outputs(result, settings, record, snakemake.output.model, snakemake.output.log_csv, snakemake.output.run)
