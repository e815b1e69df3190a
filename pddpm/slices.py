"""From a preprocessed volume to the model grid (docs/spec.md section 3), the per-subject array file, and the
per-split array file assembled from those (docs/splits-and-slices.md).

Per subject, in this order (as the original's torchio pipeline):
1. curvature-flow smoothing of the intensity image only (SimpleITK, time step 0.125, 3 iterations);
2. centre crop or zero-pad to the field of view (torchio `CropOrPad`: an odd remainder goes to the
   low-index side);
3. clip to the 1st..99th percentile of the intensities inside the brain mask, rescale to [0, 1];
4. resample to the target spacing (torchio `Resample`: B-spline for the image, nearest neighbour for
   mask and segmentation, the first output voxel centred between the first input voxels).

Orientation. The original reads each file with SimpleITK and takes `GetArrayFromImage(img).transpose(2,
1, 0)`, i.e. the stored voxel order (i, j, k), with no reorientation; its files lie on the SRI24 /
BraTS grid, whose voxel axes run right->left, anterior->posterior, inferior->superior (nibabel axis
codes L, P, S; ITK calls it RAI). We reorient every volume to that voxel order first, so that files
stored any other way give the same arrays, then store (Z, H, W) = (k, i, j): H runs from the patient's
right to left, W from anterior to posterior, Z from inferior to superior. Shown as
`imshow(slice.T)` (rows = W, anterior at the top) the patient's right is on the viewer's left: the
radiological convention. `imshow(slice)` shows what the network sees, identical to the original.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

# the split file itself (reader and writer) belongs to pddpm.artefacts; re-exported for existing callers
from pddpm.artefacts import SPLIT_KEYS, load_split, save_split  # noqa: F401
from pddpm.config import defaults
from pddpm.errors import PddpmInputError
from pddpm.io import atomic_path, load_nifti
from pddpm.preprocess.checks import check_aligned

ORIENTATION = ("L", "P", "S")
SUBJECT_KEYS = ("image", "mask", "seg", "spacing_mm", "fov_mm", "orientation")
log = logging.getLogger("pddpm.slices")


# --- single steps (pure functions on arrays) ---------------------------------------------------------

def reorient(img: nib.Nifti1Image, axcodes: Sequence[str] = ORIENTATION) -> tuple[np.ndarray, np.ndarray]:
    """Voxel data in the voxel order `axcodes` and its voxel sizes (mm) in that order."""
    ornt = ornt_transform(io_orientation(img.affine), axcodes2ornt(tuple(axcodes)))
    data = apply_orientation(np.asanyarray(img.dataobj), ornt)
    sizes = np.sqrt((np.asarray(img.affine)[:3, :3] ** 2).sum(axis=0))
    spacing = np.empty(3)
    spacing[ornt[:, 0].astype(int)] = sizes
    return data, spacing


def _to_sitk(arr: np.ndarray, spacing: Sequence[float]) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    return img


def _from_sitk(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img).transpose(2, 1, 0)


def curvature_flow(image: np.ndarray, spacing: Sequence[float], *, time_step: float = 0.125,
                   iterations: int = 3) -> np.ndarray:
    """Edge-preserving smoothing (SimpleITK CurvatureFlow) of an intensity volume; float32 out."""
    image = np.asarray(image, dtype=np.float32)
    if iterations == 0:
        return image
    out = sitk.CurvatureFlow(_to_sitk(image, spacing), timeStep=float(time_step),
                             numberOfIterations=int(iterations))
    return _from_sitk(out).astype(np.float32, copy=False)


def crop_or_pad(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Centre crop or zero-pad to `shape`. As torchio's CropOrPad, an odd difference puts the larger half
    at the low-index side: cropping 5 voxels removes 3 at the start and 2 at the end."""
    out = arr
    for axis, (have, want) in enumerate(zip(arr.shape, shape, strict=True)):
        diff = want - have
        lo, hi = int(np.ceil(abs(diff) / 2)), abs(diff) // 2
        if diff < 0:
            out = np.take(out, np.arange(lo, have - hi), axis=axis)
        elif diff > 0:
            widths = [(0, 0)] * out.ndim
            widths[axis] = (lo, hi)
            out = np.pad(out, widths, mode="constant", constant_values=0)
    return out


def rescale_percentiles(image: np.ndarray, mask: np.ndarray, percentiles: Sequence[float] = (1, 99),
                        *, name: str = "image") -> np.ndarray:
    """Clip to the given percentiles of the intensities inside `mask`, then map that range to [0, 1].

    Equals torchio's RescaleIntensity((0, 1), percentiles, masking_method=mask): it clips the whole
    volume at the masked percentiles and rescales by the clipped volume's min and max, which are them.
    """
    inside = np.asarray(image)[np.asarray(mask) > 0]
    if inside.size == 0:
        raise PddpmInputError(f"{name}: the brain mask is empty inside the field of view; check the mask "
                              "and the preprocessing QC")
    lo, hi = np.percentile(inside.astype(np.float64), list(percentiles))
    if not hi > lo:
        raise PddpmInputError(f"{name}: intensities inside the brain mask are constant ({lo:g}); the "
                              "image is blank or the mask is wrong")
    out = (np.clip(image, lo, hi) - lo) / (hi - lo)
    return out.astype(np.float32)


def resample(arr: np.ndarray, spacing: Sequence[float], target_mm: float, *, label: bool) -> np.ndarray:
    """Resample to isotropic `target_mm` as torchio's Resample: size ceil(n * spacing / target), output
    voxel 0 centred at input continuous index (target / spacing - 1) / 2; B-spline (cubic) for images,
    nearest neighbour for labels, zero outside."""
    spacing = np.asarray(spacing, dtype=float)
    if np.allclose(spacing, target_mm):
        return arr
    src = _to_sitk(np.asarray(arr, dtype=np.uint8 if label else np.float32), spacing)
    # 1e-6: 96 * 2.0 / 4.0 must give 48, not 49 through float noise
    size = [int(np.ceil(n * s / target_mm - 1e-6)) for n, s in zip(arr.shape, spacing, strict=True)]
    origin = [0.5 * (target_mm - s) for s in spacing]
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkBSpline
    out = sitk.Resample(src, size, sitk.Transform(), interp, origin, [float(target_mm)] * 3,
                        src.GetDirection(), 0, src.GetPixelID())
    return _from_sitk(out)


def fov_shape(fov_mm: Sequence[float], spacing: Sequence[float]) -> tuple[int, ...]:
    return tuple(int(round(f / s)) for f, s in zip(fov_mm, spacing, strict=True))


# --- one subject --------------------------------------------------------------------------------------

def slice_settings(**given) -> dict:
    """process_subject's settings: the given ones (None = not given) over the schema's `slices` defaults."""
    d = defaults("slices")
    base = {"fov_mm": d["fov_mm"], "target_spacing_mm": d["target_spacing_mm"], "percentiles": d["percentiles"],
            "time_step": d["curvature_flow"]["time_step"], "iterations": d["curvature_flow"]["iterations"],
            "clip_output": d["clip_output"]}
    unknown = set(given) - set(base)
    if unknown:
        raise TypeError(f"unknown slice settings {sorted(unknown)}")
    return {**base, **{k: v for k, v in given.items() if v is not None}}


def process_subject(t2: str | os.PathLike, mask: str | os.PathLike, seg: str | os.PathLike | None = None, *,
                    fov_mm: Sequence[float] | None = None, target_spacing_mm: float | None = None,
                    percentiles: Sequence[float] | None = None, time_step: float | None = None,
                    iterations: int | None = None, clip_output: bool | None = None) -> dict[str, np.ndarray]:
    """One subject from its preprocessed NIfTI files to model-grid arrays (Z, H, W):
    `image` float32 (in [0, 1] up to the B-spline overshoot, see `clip_output`), `mask` and `seg` uint8
    in {0, 1}. Settings not given take the schema's `slices` defaults.

    A missing `seg` (healthy data in the authors' layout) gives zeros. `clip_output` clips the B-spline
    over- and undershoot at the brain edge back to [0, 1]; the original kept it (the default).
    """
    cfg = slice_settings(fov_mm=fov_mm, target_spacing_mm=target_spacing_mm, percentiles=percentiles,
                         time_step=time_step, iterations=iterations, clip_output=clip_output)
    t2_img = load_nifti(t2)
    mask_img = load_nifti(mask)
    check_aligned(t2_img, mask_img, str(t2), str(mask))
    seg_img = load_nifti(seg) if seg else None
    if seg_img is not None:
        check_aligned(t2_img, seg_img, str(t2), str(seg))

    image, spacing = reorient(t2_img)
    mask_arr = reorient(mask_img)[0] > 0
    seg_arr = reorient(seg_img)[0] > 0 if seg_img is not None else np.zeros(image.shape, bool)

    image = curvature_flow(image, spacing, time_step=cfg["time_step"], iterations=cfg["iterations"])
    shape = fov_shape(cfg["fov_mm"], spacing)
    image, mask_arr, seg_arr = (crop_or_pad(a, shape) for a in (image, mask_arr, seg_arr))
    image = rescale_percentiles(image, mask_arr, cfg["percentiles"], name=str(t2))
    target = cfg["target_spacing_mm"]
    image = resample(image, spacing, target, label=False)
    mask_arr = resample(mask_arr.astype(np.uint8), spacing, target, label=True)
    seg_arr = resample(seg_arr.astype(np.uint8), spacing, target, label=True)
    if cfg["clip_output"]:
        image = np.clip(image, 0.0, 1.0)
    # (i, j, k) -> (k, i, j): axial slices first
    return {"image": np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32),
            "mask": np.ascontiguousarray((mask_arr > 0).transpose(2, 0, 1), dtype=np.uint8),
            "seg": np.ascontiguousarray((seg_arr > 0).transpose(2, 0, 1), dtype=np.uint8)}


# --- one subject's file --------------------------------------------------------------------------------
# Each subject is sliced once (rule `slice_subject`) and every split file is assembled from these files,
# so the five folds of a run never slice a subject twice. The image is stored as float16, the split
# file's precision, by the same cast, so an assembled split holds the very bits slicing per split gave.

def save_subject(volume: Mapping[str, np.ndarray], path: str | os.PathLike, *, fov_mm: Sequence[float],
                 target_spacing_mm: float) -> Path:
    """Write one subject's model-grid arrays (process_subject's output) atomically as an uncompressed
    .npz: `image` float16, `mask`, `seg` uint8 (Z, H, W), and the grid they are on."""
    arrays = {"image": np.asarray(volume["image"]).astype(np.float16),
              "mask": np.asarray(volume["mask"], dtype=np.uint8), "seg": np.asarray(volume["seg"], dtype=np.uint8),
              "spacing_mm": np.float64(target_spacing_mm), "fov_mm": np.asarray(fov_mm, dtype=np.float64),
              "orientation": np.array("".join(ORIENTATION))}
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return Path(path)


def load_subject(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A subject file as written by `save_subject` (`spacing_mm` a float, `orientation` a str)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in SUBJECT_KEYS if k not in npz.files]
            if missing:
                raise PddpmInputError(f"{path}: subject slice file lacks {', '.join(missing)}; delete it and "
                                      "rerun `slice_subject`")
            out = {k: npz[k] for k in SUBJECT_KEYS}
    except PddpmInputError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise PddpmInputError(f"{path}: not a readable subject slice file ({exc}); delete it and rerun "
                              "`slice_subject`") from exc
    out["spacing_mm"] = float(out["spacing_mm"])
    out["orientation"] = str(out["orientation"])
    return out


# --- one split file ------------------------------------------------------------------------------------

def _stack_split(rows: list[Mapping], volumes: Iterable[tuple[str, Mapping[str, np.ndarray]]], *,
                 progress: bool) -> dict[str, np.ndarray]:
    """The split file's arrays but its grid (spacing_mm, fov_mm, orientation) from `volumes` ((name for
    errors, arrays), one per row, in row order), written into preallocated arrays, so the peak memory is
    the split file plus one subject."""
    if not rows:
        raise PddpmInputError("split sheet has no rows")
    if progress:
        from tqdm import tqdm
        volumes = tqdm(volumes, total=len(rows), desc="slicing", unit="subject")
    out = None
    for n, (r, (source, vol)) in enumerate(zip(rows, volumes, strict=True)):
        if out is None:
            shape = (len(rows), *vol["image"].shape)
            out = {"image": np.empty(shape, np.float16), "mask": np.empty(shape, np.uint8),
                   "seg": np.empty(shape, np.uint8)}
        for key in ("image", "mask", "seg"):
            if vol[key].shape != out[key].shape[1:]:
                raise PddpmInputError(f"{source}: model grid {vol[key].shape} differs from the "
                                      f"split's {out[key].shape[1:]}; all subjects must share one spacing")
            out[key][n] = vol[key]
        log.info("%s: %s", r["img_name"], vol["image"].shape)
    out["subjects"] = np.array([str(r["img_name"]) for r in rows], dtype=str)
    out["label"] = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    return out


def _with_grid(arrays: dict, fov_mm: Sequence[float], target_spacing_mm: float) -> dict[str, np.ndarray]:
    arrays["spacing_mm"] = np.float64(target_spacing_mm)
    arrays["fov_mm"] = np.asarray(fov_mm, dtype=np.float64)
    arrays["orientation"] = np.array("".join(ORIENTATION))
    return arrays


def build_split(rows: Iterable[Mapping], *, progress: bool = False, **settings) -> dict[str, np.ndarray]:
    """Arrays of a split file from sheet rows (`img_name`, `label`, `img_path`, `mask_path`, `seg_path`),
    slicing every subject here. `settings` go to `process_subject` (schema defaults otherwise).

    The workflow slices each subject once and uses `assemble_split`, which gives the same arrays."""
    rows = list(rows)
    cfg = slice_settings(**settings)
    volumes = ((r["img_path"], process_subject(r["img_path"], r["mask_path"], r.get("seg_path") or None, **cfg))
               for r in rows)
    return _with_grid(_stack_split(rows, volumes, progress=progress), cfg["fov_mm"], cfg["target_spacing_mm"])


def assemble_split(rows: Iterable[Mapping], subject_files: Mapping[str, str | os.PathLike], *,
                   progress: bool = False) -> dict[str, np.ndarray]:
    """Arrays of a split file from sheet rows (`img_name`, `label`) and the subject files (`save_subject`)
    of those subjects (`img_name` -> path; more may be given): nothing is recomputed. All subjects must be
    on one grid (spacing and field of view)."""
    rows = list(rows)
    missing = [str(r["img_name"]) for r in rows if str(r["img_name"]) not in subject_files]
    if missing:
        raise PddpmInputError(f"split sheet names subject(s) without a slice file: {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''}; each must be a subject of its data set")
    first: list = []  # (path, grid) of the first subject: every other must be on the same grid

    def volumes():
        for r in rows:
            path = subject_files[str(r["img_name"])]
            vol = load_subject(path)
            grid = (vol["spacing_mm"], tuple(vol["fov_mm"].tolist()), vol["orientation"])
            if not first:
                first.append((path, grid))
            elif grid != first[0][1]:
                raise PddpmInputError(f"{path}: sliced with spacing, field of view, orientation {grid}, but "
                                      f"{first[0][0]} with {first[0][1]}; rerun `slice_subject` for both")
            yield path, vol

    arrays = _stack_split(rows, volumes(), progress=progress)
    spacing, fov, _ = first[0][1]
    return _with_grid(arrays, fov, spacing)


def preview_figure(split: Mapping[str, np.ndarray], path: str | os.PathLike, *, max_subjects: int = 4,
                   title: str = "") -> Path:
    """A PNG of the middle axial slice of the first subjects of a split, in radiological view (anterior
    up, the patient's right on the viewer's left), with the brain mask (cyan) and segmentation (red)
    outlined: a check of intensity scaling and orientation at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(max_subjects, len(split["subjects"]))
    z = split["image"].shape[1] // 2
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.4), squeeze=False)
    for ax, i in zip(axes[0], range(n), strict=True):
        # arrays are (H, W) = (right->left, anterior->posterior); .T puts anterior up, right on the left
        ax.imshow(np.asarray(split["image"][i, z], dtype=np.float32).T, cmap="gray", vmin=0, vmax=1)
        ax.contour(np.asarray(split["mask"][i, z]).T, levels=[0.5], colors="c", linewidths=0.6)
        if np.asarray(split["seg"][i, z]).any():
            ax.contour(np.asarray(split["seg"][i, z]).T, levels=[0.5], colors="r", linewidths=0.8)
        h, w = split["image"].shape[2:]
        for text, xy in (("R", (0.02, 0.5)), ("L", (0.93, 0.5)), ("A", (0.47, 0.93)), ("P", (0.47, 0.02))):
            ax.text(*xy, text, color="yellow", transform=ax.transAxes, fontsize=9)
        ax.set_title(f"{split['subjects'][i]}  z={z}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)
