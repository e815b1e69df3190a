"""Rule skullstrip: brain mask with the configured backend; the stripped image = image x mask."""

import numpy as np

from pddpm.io import load_nifti, save_nifti
from pddpm.preprocess.skullstrip import brain_mask
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    import torch

    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    device = p.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    img = load_nifti(snakemake.input.t2)
    mask, seconds = brain_mask(snakemake.input.t2, img, p.backend, device=device, hdbet_mode=p.hdbet_mode,
                               tta=p.tta, weights_dir=p.weights_dir)
    data = np.asarray(img.dataobj, dtype=np.float32)
    log.info("%s: backend %s, %.1f s, brain %.0f ml", snakemake.input.t2, p.backend, seconds,
             mask.sum() * np.prod(img.header.get_zooms()[:3]) / 1000)
    save_nifti(mask.astype(np.uint8), img.affine, snakemake.output.mask)
    save_nifti(np.where(mask, data, 0).astype(np.float32), img.affine, snakemake.output.t2)
