"""Real anatomy for the demo: nilearn's ICBM152 2009a (1 mm, skull-stripped) on two fixed grids.

- the *atlas* grid (240 x 240 x 155, 1 mm, like SRI24) that the pipeline registers to;
- the *reference* grid, larger, holding the tissue maps plus a synthetic head (CSF rim, skull, scalp,
  neck) from which every demo subject is resampled.

Both grids live in MNI world coordinates (RAS mm), so "atlas world" is MNI space: a subject's
native-to-atlas matrix maps its scanner coordinates to MNI millimetres.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from pddpm.io import atomic_path

# The atlas stand-in: SRI24's 240 x 240 x 155 1 mm grid, RAS axes. The translation puts the ICBM152
# brain's bounding box (x -72..72, y -107..73, z -72..82 mm) in the middle of the grid: voxel (120, 137, 72)
# is the world origin, template voxel (i, j, k) lands on atlas voxel (i + 22, j + 3, k) exactly.
ATLAS_SHAPE = (240, 240, 155)
ATLAS_AFFINE = np.array([[1.0, 0, 0, -120.0],
                         [0, 1.0, 0, -137.0],
                         [0, 0, 1.0, -72.0],
                         [0, 0, 0, 1.0]])

# Reference grid for subject synthesis: the template plus ~35 mm all round for the head and neck.
REF_SHAPE = (225, 258, 224)
REF_AFFINE = np.array([[1.0, 0, 0, -112.0],
                       [0, 1.0, 0, -146.0],
                       [0, 0, 1.0, -104.0],
                       [0, 0, 0, 1.0]])

# T2-like contrast from tissue probabilities (CSF bright, GM mid, WM dark), as in the issue.
T2_WEIGHTS = {"csf": 1.0, "gm": 0.55, "wm": 0.35}

# Codes of the reference grid's `head` map: brain, CSF inside the head envelope, neck soft tissue;
# codes from HEAD_OUTSIDE on are outside the envelope at (code - HEAD_OUTSIDE) / 4 mm from it, so one
# 256-entry lookup table per subject turns the map into skull and scalp shells of any thickness.
HEAD_BRAIN, HEAD_CSF, HEAD_NECK, HEAD_OUTSIDE = 0, 1, 2, 3

# Tissue classes of the reference grid's `neck` map (the head below and around the skull base), each
# drawn per subject with a T2 intensity unlike grey or white matter, so that a brain-extraction network
# sees a skull base and a neck, not more brain: muscle dark, fat bright, air black, bone marrow mid-dark
# inside a black cortical rim. Under all of them lies the skull base: a bone plate of per-subject
# thickness along the head envelope, coded by the `neck_dist` map (distance to the envelope, 1/4 mm).
NECK_NONE, NECK_MUSCLE, NECK_FAT, NECK_AIR, NECK_MARROW, NECK_CORTEX = 0, 1, 2, 3, 4, 5


def load_template() -> dict[str, np.ndarray]:
    """ICBM152 2009a at 1 mm from the nilearn package (no download): t1, gm, wm, csf, mask + affine."""
    from nilearn import datasets

    def arr(img):
        return np.asarray(img.dataobj, dtype=np.float32)

    t1_img = datasets.load_mni152_template(resolution=1)
    mask = arr(datasets.load_mni152_brain_mask(resolution=1)) > 0
    # the probability maps spill outside the brain mask; the mask defines the brain
    gm = arr(datasets.load_mni152_gm_template(resolution=1)) * mask
    wm = arr(datasets.load_mni152_wm_template(resolution=1)) * mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    return {"t1": arr(t1_img) * mask, "gm": gm, "wm": wm, "csf": csf, "mask": mask,
            "affine": np.asarray(t1_img.affine, dtype=float)}


def t2_contrast(csf, gm, wm, weights: dict[str, float] | None = None) -> np.ndarray:
    w = weights or T2_WEIGHTS
    return (w["csf"] * csf + w["gm"] * gm + w["wm"] * wm).astype(np.float32)


def place(volume: np.ndarray, src_affine: np.ndarray, dst_shape, dst_affine: np.ndarray) -> np.ndarray:
    """Pad/crop `volume` onto an axis-aligned grid of the same spacing by whole-voxel shifts (no
    interpolation): both affines must be 1 mm RAS and differ by an integer translation."""
    if not (np.allclose(src_affine[:3, :3], np.eye(3)) and np.allclose(dst_affine[:3, :3], np.eye(3))):
        raise ValueError("place() needs 1 mm RAS grids on both sides")
    shift = src_affine[:3, 3] - dst_affine[:3, 3]
    if not np.allclose(shift, np.round(shift)):
        raise ValueError(f"grids are not aligned on whole voxels (shift {shift})")
    shift = np.round(shift).astype(int)
    out = np.zeros(dst_shape, dtype=volume.dtype)
    src_sl, dst_sl = [], []
    for ax in range(3):
        lo = max(0, shift[ax])
        hi = min(dst_shape[ax], shift[ax] + volume.shape[ax])
        dst_sl.append(slice(lo, hi))
        src_sl.append(slice(lo - shift[ax], hi - shift[ax]))
    out[tuple(dst_sl)] = volume[tuple(src_sl)]
    return out


def atlas_images(template: dict | None = None) -> dict[str, np.ndarray]:
    """The atlas stand-in on ATLAS_SHAPE/ATLAS_AFFINE: t1, t2 (T2-like contrast), mask (uint8)."""
    tpl = template or load_template()
    aff = tpl["affine"]
    t2 = t2_contrast(tpl["csf"], tpl["gm"], tpl["wm"])
    return {"t1": place(tpl["t1"], aff, ATLAS_SHAPE, ATLAS_AFFINE),
            "t2": place(t2, aff, ATLAS_SHAPE, ATLAS_AFFINE),
            "mask": place(tpl["mask"].astype(np.uint8), aff, ATLAS_SHAPE, ATLAS_AFFINE)}


@dataclass
class Anatomy:
    """Tissue maps on the reference grid (probabilities in [0, 1] as float32)."""

    csf: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray      # brain, bool
    head: np.ndarray      # uint8 HEAD_* codes (see above)
    neck: np.ndarray      # uint8 NECK_* tissue classes where head == HEAD_NECK, else NECK_NONE
    neck_dist: np.ndarray  # uint8 distance of a neck voxel to the head envelope, 1/4 mm (255: >= 63.75)
    affine: np.ndarray = field(default_factory=REF_AFFINE.copy)


def build_reference(template: dict | None = None) -> Anatomy:
    """Tissue maps on the reference grid and a synthetic head envelope around the brain.

    The envelope is the brain smoothed and closed (so sulci at the surface fill with CSF), continued
    below the brain stem as a neck; skull and scalp are laid on later, per subject, as shells at a
    distance from it (coded in `head`)."""
    tpl = template or load_template()
    aff = tpl["affine"]
    maps = {k: place(tpl[k], aff, REF_SHAPE, REF_AFFINE) for k in ("csf", "gm", "wm")}
    mask = place(tpl["mask"], aff, REF_SHAPE, REF_AFFINE)
    # 0.4: ~1 mm past a flat brain surface (0.25 put ~2.7 mm of CSF there, which with the CSF rim made a
    # 4-6 mm bright shell: skull-strip networks, trained to stop at the inner table of the skull, then
    # overshot the truth mask by that much; adult convexity CSF is ~1-3 mm)
    envelope = ndi.gaussian_filter(mask.astype(np.float32), 4.0) > 0.4
    envelope |= mask
    # neck: an elliptic column (60 x 50 mm semi-axes) under the brain stem with a domed top that meets
    # the head around the lowest brain slices
    z0 = int(np.flatnonzero(mask.any(axis=(0, 1)))[0])
    cx, cy = np.argwhere(mask[:, :, z0 + 5]).mean(axis=0)
    x, y, z = np.ogrid[:REF_SHAPE[0], :REF_SHAPE[1], :REF_SHAPE[2]]
    r2 = ((x - cx) / 60.0) ** 2 + ((y - cy - 10) / 50.0) ** 2
    neck = (r2 <= 1) & (z < z0 + 8 + 25 * np.sqrt(np.clip(1 - r2, 0, 1)))
    neck &= ~envelope
    dist = ndi.distance_transform_edt(~(envelope | neck))
    head = (HEAD_OUTSIDE + np.clip(np.round(dist * 4), 0, 255 - HEAD_OUTSIDE)).astype(np.uint8)
    head[envelope] = HEAD_CSF
    head[neck] = HEAD_NECK
    head[mask] = HEAD_BRAIN
    neck_cls, neck_dist = _neck_tissues(neck, envelope, (cx, cy, z0), x, y, z)
    return Anatomy(csf=maps["csf"], gm=maps["gm"], wm=maps["wm"], mask=mask, head=head, neck=neck_cls,
                   neck_dist=neck_dist)


def _neck_tissues(neck: np.ndarray, envelope: np.ndarray, centre, x, y, z) -> tuple[np.ndarray, np.ndarray]:
    """Tissue classes inside the neck column and each neck voxel's distance to the head envelope.

    A flat block there looked like more brain to skull-strip networks (Dice 0.88 instead of >= 0.90).
    Real heads have, under the brain: the skull base (laid on per subject from `neck_dist`), then muscle
    with fat planes between the muscles, the pharynx (air) in front and the cervical spine behind. The
    layout is fixed (a fixed-seed texture), so the reference anatomy stays deterministic."""
    cx, cy, z0 = centre
    cls = np.where(neck, NECK_MUSCLE, NECK_NONE).astype(np.uint8)
    # fat planes: a band of a smooth random field (fixed seed), a few mm thick sheets between muscles
    rng = np.random.default_rng(20231)
    noise = ndi.gaussian_filter(rng.standard_normal(neck.shape, dtype=np.float32), 4.0)
    noise /= np.float32(noise[neck].std())
    cls[neck & (np.abs(noise) < 0.25)] = NECK_FAT
    del noise
    # cervical spine behind the pharynx: a vertebral column (marrow in a cortical rim) from the skull
    # base down, and the pharynx in front of it, both rising to ~10 mm under the lowest brain voxel
    below = z < z0 - 10
    r_spine = ((x - cx) / 9.0) ** 2 + ((y - cy + 22) / 8.0) ** 2
    cls[neck & below & (r_spine <= 1.6)] = NECK_CORTEX
    cls[neck & below & (r_spine <= 1.0)] = NECK_MARROW
    r_air = ((x - cx) / 12.0) ** 2 + ((y - cy - 2) / 6.0) ** 2
    cls[neck & below & (r_air <= 1.0)] = NECK_AIR
    dist = ndi.distance_transform_edt(~envelope)
    neck_dist = np.where(neck, np.clip(np.round(dist * 4), 0, 255), 0).astype(np.uint8)
    return cls, neck_dist


def save_reference(anatomy: Anatomy, path: str | os.PathLike) -> None:
    """Store the reference anatomy compactly (probabilities as uint8 / 255)."""
    q = {k: np.round(getattr(anatomy, k) * 255).astype(np.uint8) for k in ("csf", "gm", "wm")}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **q, mask=anatomy.mask, head=anatomy.head, neck=anatomy.neck,
                     neck_dist=anatomy.neck_dist, affine=anatomy.affine)


def load_reference(path: str | os.PathLike) -> Anatomy:
    with np.load(path) as z:
        return Anatomy(csf=z["csf"].astype(np.float32) / 255, gm=z["gm"].astype(np.float32) / 255,
                       wm=z["wm"].astype(np.float32) / 255, mask=z["mask"], head=z["head"],
                       neck=z["neck"], neck_dist=z["neck_dist"], affine=z["affine"])
