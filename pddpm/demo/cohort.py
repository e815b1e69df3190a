"""One demo subject from the reference anatomy: ixi (healthy, raw), mslub (raw + MS lesions), brats
(skull-stripped, atlas space, tumour). Deterministic from a seed; writes the raw scan and its truth."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from pddpm import artefacts
from pddpm.demo import fields, lesions
from pddpm.demo.anatomy import (
    ATLAS_AFFINE,
    ATLAS_SHAPE,
    HEAD_BRAIN,
    HEAD_CSF,
    HEAD_NECK,
    HEAD_OUTSIDE,
    NECK_CORTEX,
    NECK_FAT,
    NECK_MARROW,
    NECK_MUSCLE,
    T2_WEIGHTS,
    Anatomy,
    t2_contrast,
)
from pddpm.io import atomic_path, save_nifti

KINDS = ("ixi", "brats", "mslub")

# Native scanner grids of the raw-looking kinds: anisotropic voxels, radiological axis orders, a field
# of view (~190 x 225 x 180 mm) that holds the whole head whatever the pose.
NATIVE_GRIDS = {
    # like IXI T2: 0.94 x 0.94 x 1.2 mm, x flipped (LAS)
    "ixi": {"shape": (200, 240, 150), "axes": (-0.94, 0.94, 1.2)},
    # like MSLUB T2: coarser slices, DICOM's LPS axes
    "mslub": {"shape": (184, 224, 140), "axes": (-1.0, -1.0, 1.3)},
}

# The ICBM152 brain's bounding-box centre in MNI mm: the scanner isocentre of a centred head.
BRAIN_CENTRE = np.array([0.0, -17.0, 5.0])


def subject_seed(demo_seed: int, ds: str, index: int) -> np.random.SeedSequence:
    """Seed of one subject: from the cohort seed, the data set name and the subject's index only,
    so adding subjects or data sets leaves existing ones byte-identical (crc32: stable across runs)."""
    return np.random.SeedSequence([int(demo_seed), zlib.crc32(ds.encode()), int(index)])


def native_affine(kind: str) -> tuple[tuple[int, int, int], np.ndarray]:
    g = NATIVE_GRIDS[kind]
    aff = np.diag([*g["axes"], 1.0])
    aff[:3, 3] = -aff[:3, :3] @ ((np.array(g["shape"]) - 1) / 2)  # grid centre at the isocentre
    return g["shape"], aff


@dataclass
class Subject:
    kind: str
    t2: np.ndarray                 # float32, scanner-like units
    seg: np.ndarray                # uint8 lesion labels (zeros for healthy); BraTS values for brats
    mask: np.ndarray               # uint8 brain mask
    wm: np.ndarray                 # uint8 white-matter mask
    bias: np.ndarray               # float32 multiplicative bias field
    affine: np.ndarray             # native voxel -> native world
    native_to_atlas: np.ndarray    # native world -> atlas world (4x4)
    info: dict = field(default_factory=dict)


def _head_image(anat: Anatomy, rng: np.random.Generator, weights: dict, with_head: bool) -> np.ndarray:
    """T2-like image on the reference grid: brain contrast, plus for raw kinds a head of per-subject
    thickness: CSF rim (bright), skull (dark), scalp (fat, bright), skull base and neck tissues."""
    img = t2_contrast(anat.csf, anat.gm, anat.wm, weights)
    if not with_head:
        return img * anat.mask
    csf = np.float32(weights["csf"])
    e1 = rng.uniform(0.5, 2.0)  # CSF rim beyond the envelope: 1.5-3 mm of CSF over the brain in all
    e2 = e1 + rng.uniform(4.0, 7.0)
    e3 = e2 + rng.uniform(4.0, 8.0)
    skull, scalp = np.float32(rng.uniform(0.03, 0.08)), np.float32(rng.uniform(0.5, 0.7))
    # shells as a function of the distance to the head envelope, 1 mm ramps between them (partial volume)
    d = (np.arange(256 - HEAD_OUTSIDE, dtype=np.float32)) / 4
    s1, s2, s3 = (np.clip(d - np.float32(e - 0.5), 0, 1) for e in (e1, e2, e3))
    lut = np.zeros(256, np.float32)
    lut[HEAD_OUTSIDE:] = csf * (1 - s1) + skull * (s1 - s2) + scalp * (s2 - s3)
    lut[HEAD_CSF] = csf
    out = np.where(anat.head == HEAD_BRAIN, img, lut[anat.head])
    # below the brain: a skull-base bone plate along the envelope, then neck tissues of per-subject
    # intensity (muscle dark, fat as bright as the scalp, air, marrow in cortical bone), none of them
    # like grey or white matter
    tissue = np.zeros(8, np.float32)
    tissue[NECK_MUSCLE] = rng.uniform(0.12, 0.2)
    tissue[NECK_FAT] = scalp
    tissue[NECK_MARROW] = rng.uniform(0.4, 0.5) * scalp
    tissue[NECK_CORTEX] = skull
    base = rng.uniform(5.0, 9.0)
    bone = np.clip(np.float32(base + 0.5) - d, 0, 1)  # 1 inside the plate, 1 mm ramp
    neck_lut = bone[:, None] * skull + (1 - bone[:, None]) * tissue[None, :]  # [dist code, class]
    sel = anat.head == HEAD_NECK
    out[sel] = neck_lut[np.minimum(anat.neck_dist[sel], len(d) - 1), anat.neck[sel]]
    return out


def _sample(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    return ndi.map_coordinates(volume, coords, order=1, output=np.float32, mode="constant", cval=0.0)


def _grid_coords(shape, vox_to_ref: np.ndarray, extra=None) -> np.ndarray:
    """Reference-grid voxel coordinates of every voxel of `shape`: an affine part plus `extra`
    displacements (in reference voxels = mm), as one (3, *shape) float32 array."""
    i, j, k = (np.arange(n, dtype=np.float32) for n in shape)
    coords = np.empty((3, *shape), np.float32)
    for r in range(3):
        a = vox_to_ref[r].astype(np.float32)
        coords[r] = (a[0] * i)[:, None, None] + (a[1] * j)[None, :, None] + (a[2] * k)[None, None, :] + a[3]
        if extra is not None:
            coords[r] += extra[r]
    return coords


def _add_mass_effect(extra: list[np.ndarray], affine: np.ndarray, tumour: dict) -> None:
    """Subtract the tumour's push from the sampling displacements (mm; the grid is 1 mm RAS), within
    a box of 4 oedema radii where it is not yet negligible (it decays as 1/r^2)."""
    ijk_c = np.linalg.solve(affine, np.append(tumour["centre"], 1.0))[:3]
    half = int(np.ceil(4 * tumour["r_oedema"]))
    shape = extra[0].shape
    lo = np.maximum(np.round(ijk_c).astype(int) - half, 0)
    hi = np.minimum(np.round(ijk_c).astype(int) + half + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    idx = np.ogrid[box]
    xw = [(idx[a] * affine[a, a] + affine[a, 3]).astype(np.float32) for a in range(3)]
    for a, m in enumerate(lesions.mass_effect(*xw, tumour)):
        extra[a][box] -= m


def make_subject(anat: Anatomy, kind: str, seed, grid: tuple | None = None) -> Subject:
    """Synthesise one subject of `kind` ('ixi', 'mslub', 'brats') from `seed` (int or SeedSequence).

    `grid` = (shape, affine) replaces the kind's output grid (axis-aligned affines only): tests use
    a coarse one to stay fast."""
    if kind not in KINDS:
        raise ValueError(f"demo kind '{kind}' unknown; expected one of {KINDS}")
    rng = np.random.default_rng(seed)
    weights = {"csf": T2_WEIGHTS["csf"], "gm": T2_WEIGHTS["gm"] * rng.uniform(0.93, 1.07),
               "wm": T2_WEIGHTS["wm"] * rng.uniform(0.93, 1.07)}
    ref_inv = np.linalg.inv(anat.affine)
    info: dict = {"weights": weights}

    if kind == "brats":
        shape, affine = grid or (ATLAS_SHAPE, ATLAS_AFFINE.copy())
        to_atlas = np.eye(4)
        # tumour centre: cerebral white matter (above the cerebellum), picked on the reference anatomy
        cand = np.argwhere((anat.wm > 0.7) & anat.mask)
        cand = cand[(anat.affine[:3, :3] @ cand.T + anat.affine[:3, 3:4])[2] > -20]
        centre = anat.affine[:3, :3] @ cand[rng.integers(len(cand))] + anat.affine[:3, 3]
        tumour = lesions.tumour_params(rng, centre)
        extra = fields.smooth_displacement(rng, shape, np.abs(np.diag(affine)[:3]), amplitude_mm=2.0)
        _add_mass_effect(extra, affine, tumour)
        info["tumour"] = {k: v for k, v in tumour.items() if k not in ("core_shape", "oedema_shape")}
    else:
        shape, affine = grid or native_affine(kind)
        pose = fields.random_pose(rng)
        to_atlas = fields.native_to_atlas(pose, BRAIN_CENTRE)
        extra = fields.smooth_displacement(rng, shape, np.abs(np.diag(affine)[:3]), amplitude_mm=3.0)
        info["pose"] = pose
    coords = _grid_coords(shape, (ref_inv @ to_atlas @ affine)[:3], extra)
    del extra

    ref_img = _head_image(anat, rng, weights, with_head=kind != "brats")
    img = _sample(ref_img, coords)
    del ref_img
    brain = _sample(anat.mask.view(np.uint8), coords) >= 0.5
    wm_prob = _sample(anat.wm, coords)
    seg = np.zeros(shape, np.uint8)
    if kind == "brats":
        # CSF probability only where the tumour can reach: a full-grid resampling costs ~0.4 s
        box = lesions.tumour_box(shape, affine, tumour)
        csf_prob = np.zeros(shape, np.float32)
        csf_prob[box] = _sample(anat.csf, coords[(slice(None), *box)])
        img, seg = lesions.paint_tumour(img, brain, csf_prob, affine, tumour)
        del csf_prob
    elif kind == "mslub":
        img, seg, n = lesions.paint_ms_lesions(rng, img, wm_prob, brain, np.abs(np.diag(affine)[:3]),
                                               level=weights["csf"] * rng.uniform(0.8, 0.95))
        info["n_lesions"] = n
    del coords

    bias = fields.bias_field(rng, shape, max_gain=0.1 if kind == "brats" else 0.3)
    bias = np.round(bias, 3)  # 0.1 % is plenty, and compresses far better
    gain = np.float32(rng.uniform(800, 1200))
    sigma = rng.uniform(0.015, 0.03) * gain
    # rounded to whole numbers like a scanner's integer output (and so it compresses); sigma >> 0.5
    t2 = np.round(fields.rician(rng, img * bias * gain, sigma))
    if kind == "brats":
        t2 *= brain  # BraTS ships skull-stripped: zero outside the brain
    info.update(gain=float(gain), sigma=float(sigma))
    return Subject(kind=kind, t2=t2.astype(np.float32), seg=seg, mask=brain.astype(np.uint8),
                   wm=((wm_prob >= 0.5) & brain).astype(np.uint8), bias=bias.astype(np.float32),
                   affine=affine, native_to_atlas=to_atlas, info=info)


def subject_paths(raw_dir: str | os.PathLike, sub: str) -> dict[str, Path]:
    """Where a demo subject's files go (docs/contracts.md, "Raw")."""
    names = {k: artefacts.fill(artefacts.RAW_NAME, sub=sub, key=k) for k in ("t2", "seg")}
    names |= {k: artefacts.fill(artefacts.DEMO_TRUTH_NAME, sub=sub, key=k) for k in ("mask", "wm", "bias", "lesions")}
    names["native_to_atlas"] = artefacts.fill(artefacts.DEMO_TRUTH_MATRIX_NAME, sub=sub)
    return {k: Path(raw_dir) / name for k, name in names.items()}


def write_subject(subject: Subject, paths: dict) -> None:
    """Write each file atomically; `paths` keys: t2, mask, wm, bias, native_to_atlas, and optionally
    seg / lesions (both get the lesion labels)."""
    save_nifti(subject.t2, subject.affine, paths["t2"])
    for key in ("seg", "lesions"):
        if paths.get(key):
            save_nifti(subject.seg, subject.affine, paths[key])
    save_nifti(subject.mask, subject.affine, paths["mask"])
    save_nifti(subject.wm, subject.affine, paths["wm"])
    save_nifti(subject.bias, subject.affine, paths["bias"])
    with atomic_path(paths["native_to_atlas"]) as tmp:
        np.savetxt(tmp, subject.native_to_atlas, fmt="%.10f",
                   header="native world RAS mm -> atlas world RAS mm (4x4, apply to [x, y, z, 1])")


def describe(subject: Subject) -> str:
    """One log line of what was drawn (pose, lesions) for the job log."""
    parts = [f"brain {int(subject.mask.sum())} vox", f"lesion vox {int((subject.seg > 0).sum())}"]
    if "pose" in subject.info:
        p = subject.info["pose"]
        parts.append(f"rot {p['angle_deg']:.1f} deg, trans {np.round(p['translation'], 1).tolist()} mm, "
                     f"scale {np.round(p['scale'], 3).tolist()}")
    if "n_lesions" in subject.info:
        parts.append(f"{subject.info['n_lesions']} lesions")
    if "tumour" in subject.info:
        t = subject.info["tumour"]
        parts.append(f"tumour at {np.round(t['centre'], 1).tolist()} core {t['r_core']:.1f} mm "
                     f"oedema {t['r_oedema']:.1f} mm mass {t['mass_mm']:.1f} mm")
    return ", ".join(parts)


def write_subjects_tsv(path: str | os.PathLike, subjects: list[str], anomalous: bool) -> None:
    """subjects.tsv: subject, t2, seg, label (file names relative to the data set folder)."""
    rows = [artefacts.subjects_row(sub, has_seg=anomalous, label=int(anomalous)) for sub in subjects]
    artefacts.write_subjects_tsv(rows, path)
