"""Rule pretrain: masked-image-modelling pre-training of the cddpm encoder on one fold (pddpm.pretrain)."""

import torch

from pddpm.artefacts import load_split
from pddpm.pretrain import pretrain, save_encoder
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    result = pretrain(load_split(snakemake.input.train), load_split(snakemake.input.val), p.encoder,
                      dict(p.settings), seed=p.seed, device=snakemake.config["device"])
    save_encoder(result, snakemake.output.encoder, snakemake.output.log_csv)
