"""Step 3: register the skull-stripped image to the atlas brain with antspyx (Rigid, Affine or SyN).

The image is warped with a B-spline, the brain mask and the segmentation with nearest neighbour (the
original used linear interpolation for labels: a bug). The output grid is the atlas field of view at the
working spacing; the transform is saved (`{sub}_affine.mat`, plus `{sub}_warp.nii.gz` for SyN).
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np

from pddpm.errors import PddpmConfigError
from pddpm.io import atomic_path
from pddpm.preprocess.antspy import load as _ants
from pddpm.preprocess.checks import check_mask

TRANSFORMS = ("Rigid", "Affine", "SyN")


def atlas_reference(atlas_image: str | os.PathLike, atlas_mask: str | os.PathLike, spacing_mm: float):
    """The atlas brain (image x mask) and its mask on the atlas field of view at `spacing_mm`."""
    ants = _ants()
    img = ants.image_read(str(atlas_image))
    mask = ants.image_read(str(atlas_mask))
    if not np.allclose(img.spacing, spacing_mm):
        img = ants.resample_image(img, (spacing_mm,) * 3, use_voxels=False, interp_type=4)  # B-spline
        mask = ants.resample_image_to_target(mask, img, interp_type="nearestNeighbor")
    brain = img * (mask > 0)
    return brain, (mask > 0).astype("float32")


def level_problems(settings: dict) -> list[str]:
    """The optimiser's per-level lists of `preprocess.register` must have one entry per level each; the
    config check (pddpm.config_checks) and `optimiser_options` both ask here."""
    levels = {k: len(settings[k]) for k in ("iterations", "shrink_factors", "smoothing_sigmas")}
    if len(set(levels.values())) == 1:
        return []
    return [f"preprocess.register: iterations, shrink_factors and smoothing_sigmas need one entry per level "
            f"each, got {levels}; give the three lists the same length"]


def optimiser_options(settings: dict) -> dict:
    """antspyx keyword arguments of the affine optimiser from `preprocess.register` (schema defaults:
    antspyx's own, which the original code used)."""
    problems = level_problems(settings)
    if problems:
        raise PddpmConfigError(problems[0])
    return {"aff_iterations": tuple(settings["iterations"]), "aff_shrink_factors": tuple(settings["shrink_factors"]),
            "aff_smoothing_sigmas": tuple(settings["smoothing_sigmas"]),
            "aff_random_sampling_rate": float(settings["sampling_rate"])}


def write_atlas_grid(atlas_image, atlas_mask, spacing_mm: float, out_brain, out_mask) -> None:
    """The atlas brain and mask on the working grid (`atlas_reference`), written for registration and QC;
    `atlas_reference` reads them back unchanged, as they already have the working spacing."""
    brain, mask = atlas_reference(atlas_image, atlas_mask, spacing_mm)
    _write(brain, out_brain, "float")
    _write(mask, out_mask, "unsigned char")


def register_subject(t2_path, mask_path, seg_path, atlas_image, atlas_mask, spacing_mm: float,
                     transform: str, out: dict, seed: int = 3141, optimiser: dict | None = None) -> dict:
    """Register one subject; write out['t2'], ['mask'], ['seg'], ['affine'] (and ['warp'] for SyN).
    `optimiser`: `preprocess.register` settings (iterations, shrink_factors, smoothing_sigmas,
    sampling_rate; missing ones take the schema's defaults).

    Returns {'seconds', 'mask_dice_atlas'}: the Dice of the registered brain mask with the atlas mask.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"preprocess.register.transform: {transform!r} not one of {TRANSFORMS}")
    from pddpm.config import with_defaults

    options = optimiser_options(with_defaults(optimiser or {}, "preprocess", "register"))
    ants = _ants()
    t0 = time.perf_counter()
    fixed, fixed_mask = atlas_reference(atlas_image, atlas_mask, spacing_mm)
    moving_t2 = ants.image_read(str(t2_path))
    moving_mask = ants.image_read(str(mask_path))
    moving_seg = ants.image_read(str(seg_path))
    check_mask(moving_mask.numpy(), str(mask_path))
    moving = moving_t2 * (moving_mask > 0)
    reg = ants.registration(fixed=fixed, moving=moving, type_of_transform=transform,
                            random_seed=seed, verbose=False, **options)
    fwd = reg["fwdtransforms"]
    t2 = ants.apply_transforms(fixed, moving, fwd, interpolator="bSpline")
    # the spline overshoots: clip back into the input's range
    t2 = t2.new_image_like(np.clip(t2.numpy(), 0, float(moving.max())).astype("float32"))
    mask = ants.apply_transforms(fixed, moving_mask, fwd, interpolator="nearestNeighbor")
    seg = ants.apply_transforms(fixed, moving_seg, fwd, interpolator="nearestNeighbor")
    mask_np = mask.numpy() > 0
    check_mask(mask_np, f"{mask_path} after registration")
    t2 = t2.new_image_like(np.where(mask_np, t2.numpy(), 0).astype("float32"))

    _write(t2, out["t2"], "float")
    _write(mask, out["mask"], "unsigned char")
    _write(seg, out["seg"], "unsigned char")
    affine_src = [f for f in fwd if f.endswith(".mat")]
    _copy(affine_src[0], out["affine"])
    if transform == "SyN":
        warp_src = [f for f in fwd if f.endswith("Warp.nii.gz") and "Inverse" not in f]
        _copy(warp_src[0], out["warp"])
    fm = fixed_mask.numpy() > 0
    dice = 2 * np.logical_and(fm, mask_np).sum() / (fm.sum() + mask_np.sum())
    return {"seconds": time.perf_counter() - t0, "mask_dice_atlas": float(dice)}


def _write(img, path, pixeltype: str) -> None:
    with atomic_path(path) as tmp:
        _ants().image_write(img.clone(pixeltype), str(tmp))


def _copy(src, dst) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def transform_list(affine_path, warp_path=None) -> list[str]:
    """The forward transform list (atlas <- subject) in ANTs order: warp first, then affine."""
    return ([str(warp_path)] if warp_path else []) + [str(affine_path)]


def map_to_atlas(moving_img_path, reference_path, transforms: list[str], interpolator="nearestNeighbor"):
    """Apply a saved subject->atlas transform to another image of the subject (e.g. a truth mask).

    An affine alone goes through SimpleITK: it reads ANTs's .mat files and uses the same ITK (LPS)
    convention, so a QC job need not load ANTs at all; a warp goes through ANTs."""
    if len(transforms) > 1:
        ants = _ants()
        ref = ants.image_read(str(reference_path))
        mov = ants.image_read(str(moving_img_path))
        return ants.apply_transforms(ref, mov, transforms, interpolator=interpolator).numpy()
    import SimpleITK as sitk

    interp = {"nearestNeighbor": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear}[interpolator]
    ref = sitk.ReadImage(str(reference_path))
    mov = sitk.ReadImage(str(moving_img_path), sitk.sitkFloat32)
    out = sitk.Resample(mov, ref, sitk.ReadTransform(str(transforms[0])), interp, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)  # SimpleITK's z, y, x -> the file's x, y, z


def transform_error_mm(affine_path, native_to_atlas: np.ndarray, atlas_mask_path, n_points: int = 2000,
                       seed: int = 0) -> float:
    """Mean distance (mm) between where the estimated and the true transform send atlas-brain points
    into the subject's native space. `native_to_atlas`: 4x4, world RAS mm (demo truth)."""
    import SimpleITK as sitk

    mask = sitk.ReadImage(str(atlas_mask_path))
    idx = np.argwhere(sitk.GetArrayFromImage(mask).transpose(2, 1, 0) > 0)
    rng = np.random.default_rng(seed)
    idx = idx[rng.choice(len(idx), size=min(n_points, len(idx)), replace=False)]
    # ITK physical points are LPS; the truth matrix is RAS
    lps = np.array([mask.TransformIndexToPhysicalPoint([int(i) for i in v]) for v in idx])
    # the forward (fixed <- moving) transform maps fixed=atlas points to moving=native points
    affine = sitk.ReadTransform(str(affine_path))
    est = np.array([affine.TransformPoint(p) for p in lps])
    flip = np.array([-1.0, -1.0, 1.0])
    ras_atlas = lps * flip
    true_native = (np.linalg.inv(native_to_atlas) @ np.c_[ras_atlas, np.ones(len(ras_atlas))].T).T[:, :3]
    return float(np.linalg.norm(est * flip - true_native, axis=1).mean())

