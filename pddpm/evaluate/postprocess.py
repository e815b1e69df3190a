"""From reconstruction to anomaly map (SPEC 7.1-7.3) and the component filter of the binarised map."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pddpm.errors import PddpmInputError

# 2D cross in the (H, W) plane of a (Z, H, W) volume: one call erodes every axial slice on its own,
# as the original did slice by slice.
_SLICE_CROSS = ndimage.generate_binary_structure(2, 1)[None]
# 26-connectivity in 3D (the original: skimage.measure.label(connectivity=3)).
_CONN26 = ndimage.generate_binary_structure(3, 3)


def check_same_grid(**arrays: np.ndarray) -> None:
    """Raise PddpmInputError naming the arrays when their shapes differ (maps and labels on other grids)."""
    shapes = {name: tuple(np.shape(a)) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in shapes.items())
        raise PddpmInputError(f"arrays are on different grids: {listed}; they must come from the same "
                              "slices file (rerun the upstream rule)")


def erode_mask_slices(mask: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Erode a (Z, H, W) brain mask slice by slice with a 2D cross, `iterations` times (0: unchanged).

    Voxels outside the grid count as background, so the mask also shrinks from the image border."""
    mask = np.asarray(mask) > 0
    if mask.ndim != 3:
        raise PddpmInputError(f"brain mask must be a (Z, H, W) volume, got shape {mask.shape}")
    if iterations <= 0:  # scipy treats iterations=0 as "until nothing changes"
        return mask
    return ndimage.binary_erosion(mask, structure=_SLICE_CROSS, iterations=iterations)


def anomaly_map(image: np.ndarray, recon: np.ndarray, mask: np.ndarray, *, erosion_iterations: int = 3,
                median_size: int = 5) -> np.ndarray:
    """Post-processed anomaly map of one (Z, H, W) volume: |x - recon| x eroded mask, then a 3D median.

    For the intensity baseline pass `recon = 0`: the map is then the (masked, filtered) intensity."""
    image = np.asarray(image, dtype=np.float32)
    recon = np.broadcast_to(np.asarray(recon, dtype=np.float32), image.shape)
    check_same_grid(image=image, mask=np.asarray(mask))
    residual = np.abs(image - recon) * erode_mask_slices(mask, erosion_iterations)
    if median_size > 1:
        residual = ndimage.median_filter(residual, size=median_size)
    return residual


def remove_small_components(binary: np.ndarray, max_voxels: int = 7) -> np.ndarray:
    """Drop 26-connected components of `max_voxels` voxels or fewer from a binary volume."""
    binary = np.asarray(binary, dtype=bool)
    if max_voxels <= 0 or not binary.any():
        return binary.copy()
    labels, n = ndimage.label(binary, structure=_CONN26 if binary.ndim == 3 else None)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes > max_voxels
    keep[0] = False
    return keep[labels]
