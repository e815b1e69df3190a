"""Rule crop: image, mask and segmentation to the bounding box of the registered brain mask."""

import numpy as np

from pddpm.io import load_nifti, save_nifti
from pddpm.preprocess.crop import crop_subject
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    i = snakemake.input
    imgs = {k: load_nifti(i[k]) for k in ("t2", "mask", "seg")}
    out = crop_subject(imgs["t2"], imgs["mask"], imgs["seg"], snakemake.params.margin_vox,
                       names=(i.t2, i.mask, i.seg))
    log.info("%s: %s -> %s", i.t2, imgs["t2"].shape, out["t2"].shape)
    for k, dtype in (("seg", np.uint8), ("mask", np.uint8), ("t2", np.float32)):
        save_nifti(np.asarray(out[k].dataobj).astype(dtype), out[k].affine, snakemake.output[k])
