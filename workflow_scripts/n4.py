"""Rule n4: bias field correction inside the brain mask; mask and segmentation pass through."""

import numpy as np

from pddpm.io import load_nifti, save_nifti
from pddpm.preprocess.n4 import n4_subject
from pddpm.runlog import logged

with logged(snakemake.log[0]) as log:
    i, p = snakemake.input, snakemake.params
    img, mask, seg = load_nifti(i.t2), load_nifti(i.mask), load_nifti(i.seg)
    out, seconds = n4_subject(img, mask, implementation=p.implementation, levels=p.levels,
                              iterations=p.iterations, tolerance=p.tolerance, mask_sigma_mm=p.mask_sigma_mm,
                              shrink_factor=p.shrink_factor, threads=snakemake.threads, name=i.mask)
    log.info("%s: N4 (%s) in %.1f s", i.t2, p.implementation, seconds)
    save_nifti(np.asarray(seg.dataobj).astype(np.uint8), seg.affine, snakemake.output.seg)
    save_nifti(np.asarray(mask.dataobj).astype(np.uint8), mask.affine, snakemake.output.mask)
    save_nifti(out.get_fdata(dtype=np.float32), out.affine, snakemake.output.t2)
