"""Step 1: resample to an isotropic grid in a fixed (RAS+) orientation, keeping world coordinates.

The output grid is axis-aligned in world space (RAS+), so oblique or LPS-stored inputs come out in one
orientation; the resampling goes through world coordinates, so nothing is flipped or shifted.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

from pddpm.preprocess.checks import check_aligned


def ras_grid(img: nib.Nifti1Image, spacing_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the axis-aligned RAS+ grid at `spacing_mm` that covers `img`'s field of view."""
    shape = np.array(img.shape[:3])
    # corners of the voxel volume (voxel centres +- half a voxel) in world mm
    lo, hi = -0.5, shape - 0.5
    corners = np.array([[x, y, z, 1.0] for x in (lo, hi[0]) for y in (lo, hi[1]) for z in (lo, hi[2])])
    world = (img.affine @ corners.T).T[:, :3]
    wmin, wmax = world.min(0), world.max(0)
    out_shape = np.maximum(1, np.ceil((wmax - wmin) / spacing_mm - 1e-6)).astype(int)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    # centre the new grid on the old field of view
    affine[:3, 3] = (wmin + wmax) / 2 - spacing_mm * (out_shape - 1) / 2
    return tuple(int(s) for s in out_shape), affine


def resample_to(img: nib.Nifti1Image, shape, affine: np.ndarray, *, order: int,
                antialias: bool = True) -> np.ndarray:
    """Sample `img` on the grid (shape, affine). order 3 = cubic B-spline (images), 0 = nearest (labels).

    Images are low-pass filtered first when the new grid is coarser (no aliasing); the cubic spline's
    overshoot is clipped to the input range, so a non-negative MR image stays non-negative.
    """
    data = np.asarray(img.dataobj)
    vox = np.linalg.inv(img.affine) @ affine  # target voxel -> source voxel
    if order == 0:
        out = ndimage.affine_transform(data, vox[:3, :3], vox[:3, 3], output_shape=tuple(shape),
                                       order=0, mode="constant", cval=0, prefilter=False)
        return out.astype(data.dtype, copy=False)
    src = data.astype(np.float32)
    if antialias:
        # size of a target voxel in source voxels, per source axis
        factor = np.linalg.norm(vox[:3, :3], axis=1)
        sigma = np.maximum(0.0, (factor - 1) / 2)
        if np.any(sigma > 0):
            src = ndimage.gaussian_filter(src, sigma)
    out = ndimage.affine_transform(src, vox[:3, :3], vox[:3, 3], output_shape=tuple(shape),
                                   order=order, mode="constant", cval=0.0, prefilter=order > 1)
    out = np.clip(out, float(data.min()), float(data.max())).astype(np.float32)
    zero = data == 0
    if zero.mean() > 0.01:
        # exact-zero background (already skull-stripped data, e.g. BraTS) stays exactly zero: the
        # smoothing and the spline's ringing would otherwise spread small values into it, and the
        # brain mask of such data is its non-zero region
        support = ndimage.affine_transform((~zero).astype(np.float32), vox[:3, :3], vox[:3, 3],
                                           output_shape=tuple(shape), order=1, mode="constant", cval=0.0)
        out[support < 0.5] = 0
    return out


def resample_subject(t2: nib.Nifti1Image, seg: nib.Nifti1Image | None, spacing_mm: float, *,
                     t2_name: str = "t2", seg_name: str = "seg"):
    """Resample a subject's T2 (B-spline) and segmentation (nearest) onto one isotropic RAS+ grid.

    Returns (t2_img, seg_img); a missing segmentation (healthy data) becomes all zeros on the same grid.
    """
    if seg is not None:
        check_aligned(t2, seg, t2_name, seg_name)
    shape, affine = ras_grid(t2, spacing_mm)
    t2_out = nib.Nifti1Image(resample_to(t2, shape, affine, order=3), affine)
    if seg is None:
        seg_data = np.zeros(shape, np.uint8)
    else:
        seg_data = resample_to(seg, shape, affine, order=0)
        seg_data = seg_data.astype(np.uint8 if seg_data.max() < 256 and seg_data.min() >= 0 else np.int16)
    return t2_out, nib.Nifti1Image(seg_data, affine)
