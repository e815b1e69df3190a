"""Quality control: per-subject metrics and figure, per-data-set table with outlier flags.

Metrics that need no ground truth (any data set): brain volume, normalised cross-correlation with the
atlas inside the brain mask, Dice of the registered mask with the atlas mask, intensity statistics.
Where the demo's ground truth exists: skull-strip Dice, transform error in mm, white-matter CoV
before/after N4.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from pddpm.errors import PddpmInputError
from pddpm.evaluate.metrics import dice
from pddpm.io import atomic_path, load_nifti
from pddpm.preprocess.n4 import wm_cov
from pddpm.preprocess.resample import resample_to

# below these a subject is flagged (assumed: a failed stage gives far lower values, docs/preprocessing.md)
MIN_SKULLSTRIP_DICE = 0.90
MIN_REGISTER_DICE = 0.90
ROBUST_Z = 3.5


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x, y = a[mask].astype(float), b[mask].astype(float)
    x, y = x - x.mean(), y - y.mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else float("nan")


def crop_offset(parent: nib.Nifti1Image, child: nib.Nifti1Image) -> tuple[slice, slice, slice]:
    """The index slices of `parent` that `child` (a crop of it) covers."""
    off = np.rint(np.linalg.inv(parent.affine) @ child.affine[:, 3])[:3].astype(int)
    return tuple(slice(int(o), int(o + n)) for o, n in zip(off, child.shape[:3], strict=True))


def atlas_on_grid(atlas_image, atlas_mask, spacing_mm: float):
    """Atlas brain and mask arrays on the registered grid: the atlas_grid rule's files, read as they are."""
    img, mask = load_nifti(atlas_image), load_nifti(atlas_mask)
    if not np.allclose(img.header.get_zooms()[:3], spacing_mm):
        raise PddpmInputError(f"{atlas_image}: spacing {img.header.get_zooms()[:3]} mm, not the registered "
                              f"grid's {spacing_mm} mm; QC takes the atlas_grid rule's output (rerun it)")
    mask = np.asarray(mask.dataobj) > 0
    return np.asarray(img.dataobj, dtype=np.float32) * mask, mask


def truth_to_registered(truth_path, resampled: nib.Nifti1Image, registered_path, transforms) -> np.ndarray:
    """A raw-grid truth label -> resampled grid (nearest) -> atlas grid through the saved transform."""
    from pddpm.preprocess.register import map_to_atlas

    lab = load_nifti(truth_path)
    on_res = resample_to(lab, resampled.shape[:3], resampled.affine, order=0)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "lab.nii.gz"
        nib.save(nib.Nifti1Image((on_res > 0).astype(np.uint8), resampled.affine), p)
        return map_to_atlas(p, registered_path, transforms) > 0


def subject_metrics(files: dict, atlas: dict, spacing_mm: float, truth: dict | None = None) -> dict:
    """One row of the QC table. `files`: paths of resampled t2, skullstrip mask, registered t2/mask,
    affine (+warp), cropped t2, final t2/mask/seg; `atlas`: image, mask; `truth`: mask, wm, matrix."""
    from pddpm.preprocess.register import transform_error_mm, transform_list

    final = load_nifti(files["final_t2"])
    fmask = np.asarray(load_nifti(files["final_mask"]).dataobj) > 0
    fseg = np.asarray(load_nifti(files["final_seg"]).dataobj) > 0
    reg_t2 = load_nifti(files["registered_t2"])
    reg_mask = np.asarray(load_nifti(files["registered_mask"]).dataobj) > 0
    atlas_brain, atlas_mask = atlas_on_grid(atlas["image"], atlas["mask"], spacing_mm)
    sl = crop_offset(reg_t2, final)
    data = np.asarray(final.dataobj, dtype=np.float32)
    vals = data[fmask]
    row = {
        "mask_volume_ml": float(fmask.sum() * np.prod(final.header.get_zooms()[:3]) / 1000),
        "seg_volume_ml": float(fseg.sum() * np.prod(final.header.get_zooms()[:3]) / 1000),
        "ncc_atlas": ncc(data, atlas_brain[sl], fmask & atlas_mask[sl]),
        "register_dice": dice(reg_mask, atlas_mask),
        "intensity_mean": float(vals.mean()),
        "intensity_std": float(vals.std()),
        "intensity_p1": float(np.percentile(vals, 1)),
        "intensity_p99": float(np.percentile(vals, 99)),
        "final_shape": "x".join(map(str, final.shape[:3])),
    }
    if truth:
        resampled = load_nifti(files["resampled_t2"])
        ss = load_nifti(files["skullstrip_mask"])
        tmask = resample_to(load_nifti(truth["mask"]), ss.shape[:3], ss.affine, order=0) > 0
        row["skullstrip_dice"] = dice(np.asarray(ss.dataobj) > 0, tmask)
        tfs = transform_list(files["affine"], files.get("warp"))
        if "matrix" in truth and not files.get("warp"):
            row["transform_error_mm"] = transform_error_mm(files["affine"], np.loadtxt(truth["matrix"]),
                                                           atlas["mask"])
        # lesions (bright tumours, MS plaques) sit in white matter: they are not bias, leave them out
        wm = truth_to_registered(truth["wm"], resampled, files["registered_t2"], tfs)[sl] & fmask
        wm &= ~ndimage.binary_dilation(fseg, iterations=2)
        cropped = np.asarray(load_nifti(files["cropped_t2"]).dataobj, dtype=np.float32)
        # erode: voxels at the WM border mix with grey matter after two resamplings
        wm_core = ndimage.binary_erosion(wm) if ndimage.binary_erosion(wm).sum() > 50 else wm
        row["wm_cov_before_n4"] = wm_cov(cropped, wm_core)
        row["wm_cov_after_n4"] = wm_cov(data, wm_core)
    return row


def flag_outliers(df: pd.DataFrame) -> pd.DataFrame:
    """Add a `flags` column: robust z-score outliers (median/MAD) and failed thresholds, ';'-joined."""
    flags = [[] for _ in range(len(df))]
    for col in ("mask_volume_ml", "ncc_atlas", "register_dice", "intensity_p99"):
        v = df[col].astype(float)
        # a floor on the spread: tightly clustered values (MAD ~ 0) must not flag tiny deviations
        mad = max(1.4826 * (v - v.median()).abs().median(), 0.02 * abs(v.median()))
        if len(v) >= 4 and mad > 0:
            for i in np.flatnonzero(((v - v.median()).abs() / mad > ROBUST_Z).to_numpy()):
                flags[i].append(f"{col}_outlier")
    checks = [("register_dice", lambda v: v < MIN_REGISTER_DICE, "register_dice<0.90")]
    if "skullstrip_dice" in df:
        checks.append(("skullstrip_dice", lambda v: v < MIN_SKULLSTRIP_DICE, "skullstrip_dice<0.90"))
    for col, bad, name in checks:
        for i in np.flatnonzero(bad(df[col].astype(float)).to_numpy()):
            flags[i].append(name)
    if "wm_cov_after_n4" in df:
        worse = (df["wm_cov_after_n4"] >= df["wm_cov_before_n4"]).to_numpy()
        for i in np.flatnonzero(worse):
            flags[i].append("n4_did_not_lower_wm_cov")
    out = df.copy()
    out["flags"] = [";".join(f) for f in flags]
    return out


def write_tsv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.4f")


def qc_figure(files: dict, atlas: dict, spacing_mm: float, path, title: str) -> None:
    """Three orthogonal views through the brain's centre: final image, mask outline (red), atlas edges
    (cyan), and the segmentation outline (yellow) where there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    final = load_nifti(files["final_t2"])
    data = np.asarray(final.dataobj, dtype=np.float32)
    mask = np.asarray(load_nifti(files["final_mask"]).dataobj) > 0
    seg = np.asarray(load_nifti(files["final_seg"]).dataobj) > 0
    reg_t2 = load_nifti(files["registered_t2"])
    atlas_brain, atlas_mask = atlas_on_grid(atlas["image"], atlas["mask"], spacing_mm)
    sl = crop_offset(reg_t2, final)
    ab = atlas_brain[sl]
    edges = ndimage.gaussian_gradient_magnitude(ab, 1.0)
    edges = edges > np.percentile(edges[atlas_mask[sl]], 92) if atlas_mask[sl].any() else edges > 0
    c = np.rint(ndimage.center_of_mass(mask)).astype(int)
    vmax = np.percentile(data[mask], 99.5)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    views = [("axial", lambda a: a[:, :, c[2]]), ("coronal", lambda a: a[:, c[1], :]),
             ("sagittal", lambda a: a[c[0], :, :])]
    for ax, (name, cut) in zip(axes, views, strict=True):
        ax.imshow(cut(data).T, cmap="gray", origin="lower", vmin=0, vmax=vmax)
        e = np.ma.masked_where(~cut(edges).T, cut(edges).T)
        ax.imshow(e, cmap=ListedColormap(["cyan"]), origin="lower", alpha=0.6, interpolation="nearest")
        ax.contour(cut(mask).T.astype(float), levels=[0.5], colors="red", linewidths=1.2)
        if cut(seg).any():
            ax.contour(cut(seg).T.astype(float), levels=[0.5], colors="yellow", linewidths=1.2)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
