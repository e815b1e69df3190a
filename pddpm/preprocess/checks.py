"""Checks of masks and label images that every stage shares: clear errors instead of silent garbage."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from pddpm.errors import PddpmInputError


def check_mask(mask: np.ndarray, name: str) -> np.ndarray:
    """Return `mask` as bool; an empty or all-ones brain mask is an error naming `name`."""
    mask = np.asarray(mask) > 0
    if not mask.any():
        raise PddpmInputError(f"{name}: brain mask is empty; check the skull stripping of this subject "
                              "(or use skullstrip backend 'none' only for data that are already stripped)")
    if mask.all():
        raise PddpmInputError(f"{name}: brain mask covers the whole volume; the skull stripping failed "
                              "or the image has no background. Check the input or choose another backend")
    return mask


def check_aligned(img: nib.Nifti1Image, other: nib.Nifti1Image, name: str, other_name: str,
                  atol_mm: float = 1e-3) -> None:
    """`other` (a segmentation, a mask) must lie on the voxel grid of the image `img`: the same shape and
    the same affine (position, orientation and spacing in the world), not just the same array shape as
    `pddpm.evaluate.postprocess.check_same_grid` asks of arrays."""
    if img.shape[:3] != other.shape[:3]:
        raise PddpmInputError(f"{other_name}: shape {other.shape[:3]} differs from its image {name} "
                              f"{img.shape[:3]}; it must be on the same voxel grid (re-export or resample it)")
    if not np.allclose(img.affine, other.affine, atol=atol_mm):
        raise PddpmInputError(f"{other_name}: affine differs from its image {name}; the segmentation "
                              f"must be on the same voxel grid.\n{other_name}:\n{other.affine}\n{name}:\n{img.affine}")
