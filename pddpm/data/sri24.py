"""SRI24 atlas, SPM8 release (`sri24_spm8.zip`) -> resources/atlas/{t1,t2,mask}.nii.gz (240 x 240 x 155, 1 mm).

The original pDDPM preprocessing registers to `templates/T1_brain.nii` of this archive (docs/spec.md,
section 2): the atlas images here are `T1_brain.nii` and `T2_brain.nii`, unchanged. The archive has no
brain mask file, so the mask is derived: the non-zero region of T1_brain with its enclosed holes filled.
T2_brain is the same brain masked the same way, so its non-zero region is checked to agree (Dice at least
`MASK_DICE_MIN`): a lower value means the two templates are not what this code expects. Because the
mask is T1_brain's own support, "atlas image x mask" (what registration uses as the fixed image) is
T1_brain exactly, as in the original.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
from scipy import ndimage

from pddpm.data.raw import visible_files
from pddpm.errors import PddpmInputError
from pddpm.io import load_nifti, save_nifti

log = logging.getLogger(__name__)

PATTERNS = {
    "t1": re.compile(r"^T1_brain\.nii(\.gz)?$"),
    "t2": re.compile(r"^T2_brain\.nii(\.gz)?$"),
}
EXPECTED = ("the SRI24 SPM8 release sri24_spm8.zip with templates/T1_brain.nii and templates/T2_brain.nii "
            "(and the other templates/ and tpm/ files)")
SHAPE = (240, 240, 155)
# assumed: both templates are the same brain cut out with one mask; anything below means another atlas
MASK_DICE_MIN = 0.97


def git_blob_sha1(path: str | os.PathLike) -> str:
    """`git hash-object FILE`: the SHA-1 of 'blob <size>\\0' + content, how git names a file's bytes."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


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
    several = {k: [str(p) for p in v] for k, v in found.items() if len(v) > 1}
    if several:
        raise PddpmInputError(f"{folder}: several candidates {several}; expected {EXPECTED}")
    return {k: v[0] for k, v in found.items()}


def brain_mask(t1_brain: np.ndarray) -> np.ndarray:
    """The atlas brain mask: the non-zero region of the skull-stripped T1 template, holes filled."""
    return ndimage.binary_fill_holes(t1_brain != 0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum()))


def check_members(folder: Path, members: dict[str, dict]) -> dict[str, bool]:
    """Compare unpacked members with known git blob SHA-1s (`{relative path: {"git_sha1": hex}}`); a
    difference is logged, not fatal: the known values come from another copy of the atlas."""
    result = {}
    for rel, want in members.items():
        hits = [p for p in visible_files(folder) if p.as_posix().endswith("/" + rel)]
        if not hits or "git_sha1" not in want:
            continue
        got = git_blob_sha1(hits[0])
        result[rel] = got == want["git_sha1"]
        if result[rel]:
            log.info("%s: identical to the original pDDPM repository's copy (git blob %s)", rel, got)
        else:
            log.warning("%s: git blob %s differs from the original pDDPM repository's copy %s: the atlas "
                        "is not byte for byte the one the authors registered to", rel, got, want["git_sha1"])
    return result


def convert(folder: str | os.PathLike, out: dict[str, str | os.PathLike],
            members: dict[str, dict] | None = None) -> dict:
    """Write the atlas T1 and T2 (float32, the `_brain` templates) and the derived brain mask (uint8) with
    their affine. Returns {'mask_dice_t2', 'mask_ml', 'identical_to_original': {member: bool}}."""
    folder = Path(folder)
    paths = find(folder)
    imgs = {k: load_nifti(p) for k, p in paths.items()}
    shapes = {k: img.shape[:3] for k, img in imgs.items()}
    if len(set(shapes.values())) != 1 or not np.allclose(imgs["t1"].affine, imgs["t2"].affine, atol=1e-3):
        raise PddpmInputError(f"{folder}: T1_brain and T2_brain differ in grid {shapes}; expected one grid "
                              f"({EXPECTED})")
    if shapes["t1"] != SHAPE:
        # allowed, but the original pipeline's atlas grid is 240 x 240 x 155
        log.warning("SRI24 grid %s differs from the expected %s", shapes["t1"], SHAPE)
    data = {k: np.asarray(img.dataobj, dtype=np.float32) for k, img in imgs.items()}
    mask = brain_mask(data["t1"])
    agree = dice(mask, brain_mask(data["t2"]))
    if not mask.any() or agree < MASK_DICE_MIN:
        raise PddpmInputError(f"{paths['t1']}: the brain mask from T1_brain's non-zero region agrees with "
                              f"T2_brain's only at Dice {agree:.3f} (< {MASK_DICE_MIN}); expected {EXPECTED}")
    for key in ("t1", "t2"):
        save_nifti(data[key], imgs[key].affine, out[key])
    save_nifti(mask.astype(np.uint8), imgs["t1"].affine, out["mask"])
    ml = float(mask.sum() * np.prod(imgs["t1"].header.get_zooms()[:3]) / 1000)
    log.info("SRI24 brain mask: %.0f ml, Dice with T2_brain's non-zero region %.4f", ml, agree)
    return {"mask_dice_t2": agree, "mask_ml": ml, "identical_to_original": check_members(folder, members or {})}
