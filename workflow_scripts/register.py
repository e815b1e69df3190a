"""Rule register: stripped image -> atlas brain (antspyx); labels warped with nearest neighbour."""

import os

os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(snakemake.threads)  # before ants loads ITK

from pddpm.preprocess.register import register_subject  # noqa: E402
from pddpm.runlog import logged  # noqa: E402

with logged(snakemake.log[0]) as log:
    i, p = snakemake.input, snakemake.params
    out = {k: snakemake.output[k] for k in snakemake.output.keys()}
    info = register_subject(i.t2, i.mask, i.seg, i.atlas_image, i.atlas_mask, p.spacing_mm, p.transform,
                            out, seed=p.seed, optimiser=p.optimiser)
    log.info("%s: %s registration in %.1f s, mask Dice with atlas %.3f", i.t2, p.transform,
             info["seconds"], info["mask_dice_atlas"])
