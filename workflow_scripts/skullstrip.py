"""Rule skullstrip: brain mask with the configured backend; the stripped image = image x mask."""

from pddpm.preprocess.stages import skullstrip_files
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    device = "cpu"  # backend 'none' (BraTS: already stripped) runs no network
    if p.backend != "none":  # torch only for the networks: 'none' stays light
        import torch

        from pddpm.device import resolve_device

        torch.set_num_threads(snakemake.threads)
        # resolved as for training and inference (pddpm.device), so `device` means the same in every rule
        device = resolve_device(snakemake.config["device"]).type
    info = skullstrip_files(snakemake.input.t2, p.backend, snakemake.output.t2, snakemake.output.mask,
                            device=device, hdbet_mode=p.hdbet_mode, tta=p.tta, deepbet_size=p.deepbet_size,
                            deepbet_at_1mm=p.deepbet_at_1mm,
                            weights_dir=snakemake.input.get("weights"))
    log.info("%s: backend %s, %s", snakemake.input.t2, p.backend, info)
