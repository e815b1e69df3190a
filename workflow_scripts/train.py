"""Rule train: train one model on one fold (pddpm.train), resuming from its checkpoint if one exists."""

import json

import torch

from pddpm.artefacts import load_split
from pddpm.runlog import logged
from pddpm.train import run_record, train, write_outputs

with logged(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    cfg = snakemake.config
    train_images = load_split(snakemake.input.train)["image"]
    val_images = load_split(snakemake.input.val)["image"]
    # plain JSON types: the settings are stored in model.pt and read back with weights_only=True
    settings = json.loads(json.dumps({"kind": p.kind, "unet": dict(p.unet), "diffusion": dict(p.diffusion),
                                      "patch": dict(p.patch), "image_size": list(train_images.shape[-2:])}))
    train_cfg = {**dict(p.train), "checkpoint_every_steps": cfg["train"]["checkpoint_every_steps"],
                 "compile": cfg["train"]["compile"]}
    result = train(train_images, val_images, settings, train_cfg, seed=p.seed, device=cfg.get("device", "auto"),
                   checkpoint_dir=p.checkpoint_dir)
    record = run_record({"settings": settings, "train": train_cfg, "train_dataset": cfg["train_dataset"],
                         "inputs": [snakemake.input.train, snakemake.input.val]}, p.seed)
    write_outputs(result, settings, record, snakemake.output.model, snakemake.output.log_csv, snakemake.output.run)
