"""Rule skullstrip: brain mask with the configured backend; the stripped image = image x mask."""

from pddpm.preprocess.stages import skullstrip_files
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    device = snakemake.config["device"]
    if p.backend != "none":  # torch only for the networks: 'none' (BraTS) stays light
        import torch

        torch.set_num_threads(snakemake.threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
    info = skullstrip_files(snakemake.input.t2, p.backend, snakemake.output.t2, snakemake.output.mask,
                            device=device, hdbet_mode=p.hdbet_mode, tta=p.tta,
                            weights_dir=snakemake.input.get("weights"))
    log.info("%s: backend %s, %s", snakemake.input.t2, p.backend, info)
