"""SRI24 atlas archive -> resources/atlas/{t1,t2,mask}.nii.gz (240 x 240 x 155 at 1 mm)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from pddpm.data.raw import visible_files
from pddpm.errors import PddpmInputError
from pddpm.io import load_nifti, save_nifti

# the NIfTI release names the channels T1.nii, T2.nii and brainmask_nos.nii (no-skull brain mask);
# `_brain` variants (skull-stripped channels) are accepted as well
PATTERNS = {
    "t1": re.compile(r"^T1(_brain)?\.nii(\.gz)?$", re.IGNORECASE),
    "t2": re.compile(r"^T2(_brain)?\.nii(\.gz)?$", re.IGNORECASE),
    "mask": re.compile(r"^brain_?mask(_nos)?\.nii(\.gz)?$", re.IGNORECASE),
}
EXPECTED = "T1.nii, T2.nii and brainmask_nos.nii (or .nii.gz) anywhere in the SRI24 archive"
SHAPE = (240, 240, 155)


def find(folder: str | os.PathLike) -> dict[str, Path]:
    folder = Path(folder)
    found: dict[str, list[Path]] = {k: [] for k in PATTERNS}
    for p in visible_files(folder):
        for key, pat in PATTERNS.items():
            if pat.match(p.name):
                found[key].append(p)
    missing = [k for k, v in found.items() if not v]
    if missing:
        raise PddpmInputError(f"{folder}: no atlas {missing} found; expected {EXPECTED}")
    # the whole-head channel over its _brain variant: the workflow masks with the mask itself
    return {k: sorted(v, key=lambda p: ("_brain" in p.name.lower(), str(p)))[0] for k, v in found.items()}


def convert(folder: str | os.PathLike, out: dict[str, str | os.PathLike]) -> None:
    """Write the atlas T1, T2 (float32) and brain mask (uint8) with their affine; the shapes must agree."""
    paths = find(folder)
    imgs = {k: load_nifti(p) for k, p in paths.items()}
    shapes = {k: img.shape for k, img in imgs.items()}
    if len(set(shapes.values())) != 1:
        raise PddpmInputError(f"{folder}: atlas channels differ in shape {shapes}; expected one grid ({EXPECTED})")
    if shapes["t1"] != SHAPE:
        # allowed, but the original pipeline's atlas grid is 240 x 240 x 155
        logging.getLogger(__name__).warning("SRI24 grid %s differs from the expected %s", shapes["t1"], SHAPE)
    for key in ("t1", "t2"):
        save_nifti(np.asarray(imgs[key].dataobj, dtype=np.float32), imgs[key].affine, out[key])
    save_nifti((np.asarray(imgs["mask"].dataobj) > 0).astype(np.uint8), imgs["mask"].affine, out["mask"])
