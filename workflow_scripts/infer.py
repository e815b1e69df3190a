"""Rule infer: reconstruct and post-process one split (pddpm.infer.infer_split)."""

import torch

from pddpm.infer import infer_split
from pddpm.runlog import logged

with logged(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    cfg = snakemake.config
    options = dict(p.options)  # the kind's infer keys (pddpm.models.infer_params), precision among them
    infer_split(
        snakemake.input.slices, snakemake.output[0],
        model=p.model, model_path=snakemake.input.get("model"),
        erosion_iterations=p.erosion_iterations, median_size=p.median_size, seed=p.seed, stream=p.stream,
        # not params: they change speed only, so changing them must not rerun inference
        batch_size=cfg["infer"]["batch_size"], device=cfg["device"],
        **options,
    )
