"""From reconstruction to anomaly map (docs/spec.md section 7, steps 1-3) and the component filter of
the binarised map (step 5), with their sizes converted from millimetres to voxels of the model grid.

The config gives the sizes in mm (`evaluate.erosion_mm`, `median_radius_mm`, `min_component_mm3`), so
that they mean the same on every grid; `voxel_settings` turns them into the voxel counts the functions
take, once, when the workflow builds its jobs. On the paper's 2 mm grid they are the original's 3 erosion
iterations, 5 x 5 x 5 median and components of 7 voxels or fewer.

The median is the time-critical step. `median_filter` gives scipy.ndimage.median_filter's result
exactly, but only works where it can be non-zero: a map that is >= 0 and zero outside the eroded brain
has median 0 wherever fewer than half of the window's voxels are above 0. `anomaly_maps_torch` runs
the same post-processing on a torch device (the GPU right after inference).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pddpm.errors import PddpmInputError

# scipy.ndimage is imported where it is used: the workflow imports this module when it builds its jobs
# (voxel_settings), and that should not cost the half second scipy.ndimage takes to load.

# 2D cross in the (H, W) plane of a (Z, H, W) volume: one call erodes every axial slice on its own,
# as the original did slice by slice (scipy's generate_binary_structure(2, 1)).
_SLICE_CROSS = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], dtype=bool)
# 26-connectivity in 3D (the original: skimage.measure.label(connectivity=3)).
_CONN26 = np.ones((3, 3, 3), dtype=bool)
# windows selected per np.partition call: bounds the gathered copy (8192 x 125 values)
_CHUNK = 8192
# float comparisons of sizes derived from mm: 6 mm / 2 mm must give 3, not 2.9999999999999996
_EPS = 1e-9


def check_same_grid(**arrays: np.ndarray) -> None:
    """Raise PddpmInputError naming the arrays when their shapes differ (maps and labels on other grids)."""
    shapes = {name: tuple(np.shape(a)) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in shapes.items())
        raise PddpmInputError(f"arrays are on different grids: {listed}; they must come from the same "
                              "slices file (rerun the upstream rule)")


def voxel_settings(evaluate: Mapping | None = None, spacing_mm: float | None = None) -> dict[str, int]:
    """The `evaluate` section's post-processing sizes (mm) in voxels of an isotropic grid of `spacing_mm`
    (the model grid, `slices.target_spacing_mm`); None takes the schema's defaults.

    - erosion_iterations = floor(erosion_mm / spacing): each 2D cross erosion drops the voxels one grid
      step (city-block, in-plane) from the outside, so the voxels within `erosion_mm` of it go.
    - median_size = 2 floor(median_radius_mm / spacing) + 1: the window holds the voxels within
      `median_radius_mm` of its centre along each axis.
    - min_component_voxels = floor(min_component_mm3 / spacing^3): components of that volume or less go.

    The defaults (6 mm, 4 mm, 56 mm^3) give 3, 5 and 7 on the paper's 2 mm grid (the original's values),
    and 1, 3 and 0 (nothing removed: one voxel is 64 mm^3) on the demo's 4 mm grid."""
    from pddpm.config import defaults, with_defaults

    cfg = with_defaults(dict(evaluate or {}), "evaluate")
    spacing = float(spacing_mm if spacing_mm is not None else defaults("slices", "target_spacing_mm"))
    if not spacing > 0:
        raise PddpmInputError(f"slices.target_spacing_mm must be > 0, got {spacing_mm}")
    return {
        "erosion_iterations": math.floor(cfg["erosion_mm"] / spacing + _EPS),
        "median_size": 2 * math.floor(cfg["median_radius_mm"] / spacing + _EPS) + 1,
        "min_component_voxels": math.floor(cfg["min_component_mm3"] / spacing ** 3 + _EPS),
    }


def erode_mask_slices(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Erode a (Z, H, W) brain mask slice by slice with a 2D cross, `iterations` times (0: unchanged).

    Voxels outside the grid count as background, so the mask also shrinks from the image border."""
    from scipy import ndimage

    mask = np.asarray(mask) > 0
    if mask.ndim != 3:
        raise PddpmInputError(f"brain mask must be a (Z, H, W) volume, got shape {mask.shape}")
    if iterations <= 0:  # scipy treats iterations=0 as "until nothing changes"
        return mask
    return ndimage.binary_erosion(mask, structure=_SLICE_CROSS, iterations=iterations)


def _window_counts(positive: np.ndarray, size: int) -> np.ndarray:
    """Number of True voxels in the size^3 window of every voxel, the grid extended by reflection."""
    r = size // 2
    dtype = np.int8 if size ** 3 <= np.iinfo(np.int8).max else np.int16
    acc = np.pad(positive, r, mode="symmetric").astype(dtype)
    for axis in range(3):  # a box sum is three 1D sums
        n = acc.shape[axis] - 2 * r
        lead = (slice(None),) * axis
        total = acc[lead + (slice(0, n),)].copy()
        for i in range(1, size):
            total += acc[lead + (slice(i, i + n),)]
        acc = total
    return acc


def median_filter(values: np.ndarray, size: int) -> np.ndarray:
    """scipy.ndimage.median_filter(values, size=size) (mode "reflect"), exactly, on a (Z, H, W) volume.

    For maps >= 0 with odd `size` (the anomaly maps) only voxels whose window holds more than half
    non-zero values are computed: each gathers its window and takes the middle value with np.partition;
    every other voxel's median is 0. float16 maps are selected on their bit patterns, which order
    non-negative float16 numbers as their values. Other input goes to scipy."""
    from scipy import ndimage

    values = np.asarray(values)
    if size <= 1:
        return values.copy()
    r = size // 2
    keys = None
    if values.ndim == 3 and size % 2 == 1 and min(values.shape) > r:
        if values.dtype == np.float16:
            bits = values.view(np.uint16)
            keys = bits & np.uint16(0x7FFF)  # -0 -> +0
            if keys.max(initial=0) > 0x7C00 or (bits > 0x8000).any():  # NaN, or negative values
                keys = None
        elif values.dtype == np.float32 and values.min(initial=0) >= 0:  # False for NaN
            keys = values
    if keys is None:
        if values.dtype == np.float16:  # scipy has no float16; the median commutes with the rounding
            return ndimage.median_filter(values.astype(np.float32), size=size).astype(np.float16)
        return ndimage.median_filter(values, size=size)
    rank = size ** 3 // 2  # scipy's median: the element of rank size^3 // 2
    need = _window_counts(keys > 0, size) > rank
    out = np.zeros(values.shape, keys.dtype)
    z_n, h, w = values.shape
    padded = np.pad(keys, r, mode="symmetric")
    # stage 1: the in-plane size x size patch at every (padded z, y, x) that a window to compute uses
    plane = np.zeros((z_n + 2 * r, h, w), bool)
    for dz in range(size):
        plane[dz:dz + z_n] |= need
    plane_idx = np.flatnonzero(plane)
    pz, py, px = np.unravel_index(plane_idx, plane.shape)
    patches = sliding_window_view(padded, (size, size), axis=(1, 2))[pz, py, px].reshape(len(pz), size * size)
    row_of = np.full(plane.size, -1, np.int32)
    row_of[plane_idx] = np.arange(len(plane_idx), dtype=np.int32)
    # stage 2: a window is `size` patches, at padded z = z .. z + size - 1 (flat index + dz * h * w)
    centres = np.flatnonzero(need)
    plane_step = (np.arange(size) * (h * w))[None]
    medians = np.empty(len(centres), keys.dtype)
    for s0 in range(0, len(centres), _CHUNK):
        rows = row_of[centres[s0:s0 + _CHUNK, None] + plane_step]
        windows = patches[rows].reshape(len(rows), size ** 3)
        windows.partition(rank, axis=1)  # in place: the gathered copy is ours
        medians[s0:s0 + _CHUNK] = windows[:, rank]
    out.ravel()[centres] = medians
    return out.view(np.float16) if values.dtype == np.float16 else out


def anomaly_map(image: np.ndarray, recon: np.ndarray, mask: np.ndarray, *, erosion_iterations: int | None = None,
                median_size: int | None = None, dtype: type = np.float32) -> np.ndarray:
    """Post-processed anomaly map of one (Z, H, W) volume: |x - recon| x eroded mask, then a 3D median.

    For the intensity baseline pass `recon = 0`: the map is then the (masked, filtered) intensity.
    `dtype=np.float16` gives the stored map (the float32 map rounded), faster: the median is selected on
    16-bit keys, and rounding before or after it gives the same values. Sizes None: the schema's
    defaults on its default grid (voxel_settings())."""
    if erosion_iterations is None or median_size is None:
        vox = voxel_settings()
        erosion_iterations = vox["erosion_iterations"] if erosion_iterations is None else erosion_iterations
        median_size = vox["median_size"] if median_size is None else median_size
    if dtype not in (np.float16, np.float32):
        raise ValueError(f"anomaly_map: dtype must be float16 or float32, got {dtype}")
    image = np.asarray(image, dtype=np.float32)
    recon = np.broadcast_to(np.asarray(recon, dtype=np.float32), image.shape)
    check_same_grid(image=image, mask=np.asarray(mask))
    residual = (np.abs(image - recon) * erode_mask_slices(mask, erosion_iterations)).astype(dtype, copy=False)
    return median_filter(residual, median_size) if median_size > 1 else residual


def _symmetric_index(n: int, r: int, device):
    """Indices that extend an axis of length n by r on each side as scipy's mode "reflect" does."""
    import torch

    idx = np.pad(np.arange(n), r, mode="symmetric")
    return torch.as_tensor(idx, device=device)


def anomaly_maps_torch(images, recons, masks, *, erosion_iterations: int, median_size: int,
                       device=None, slab: int = 8) -> np.ndarray:
    """anomaly_map(..., dtype=np.float16) of every volume of a split, computed with torch on `device`
    (default: that of `recons` if a tensor, else CPU). Same values as the numpy path, bit for bit.

    images, masks: (N, Z, H, W) arrays or tensors; recons: same shape (a tensor may already sit on the
    device), or 0 for the intensity baseline. The median runs on `slab` output slices at a time (its
    windows take 125 x 4 bytes per voxel). Returns float16 (N, Z, H, W) numpy, the stored form."""
    import torch
    import torch.nn.functional as F

    if device is None:
        device = recons.device if isinstance(recons, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)

    def volume(a, i):
        v = a[i] if np.ndim(a) == 4 else a
        return (v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).to(device)

    check_same_grid(images=images, masks=masks, **({"reconstructions": recons} if np.ndim(recons) else {}))
    if np.ndim(images) != 4:
        raise PddpmInputError(f"images must be (N, Z, H, W), got shape {tuple(np.shape(images))}")
    n = len(images)
    out = np.empty(tuple(np.shape(images)), np.float16)
    r = median_size // 2
    for i in range(n):
        image = volume(images, i).to(torch.float32)
        recon = torch.broadcast_to(volume(recons, i).to(torch.float32), image.shape)
        mask = volume(masks, i) > 0
        for _ in range(max(0, erosion_iterations)):  # 2D cross, outside the grid is background
            p = F.pad(mask, (1, 1, 1, 1), value=False)
            mask = p[:, 1:-1, 1:-1] & p[:, :-2, 1:-1] & p[:, 2:, 1:-1] & p[:, 1:-1, :-2] & p[:, 1:-1, 2:]
        res = (image - recon).abs() * mask
        if median_size > 1:
            z_n, h, w = res.shape
            res_p = res[_symmetric_index(z_n, r, device)][:, _symmetric_index(h, r, device)]
            res_p = res_p[:, :, _symmetric_index(w, r, device)]
            filtered = torch.empty_like(res)
            for z0 in range(0, z_n, slab):
                z1 = min(z0 + slab, z_n)
                win = res_p[z0:z1 + 2 * r].unfold(0, median_size, 1).unfold(1, median_size, 1)
                win = win.unfold(2, median_size, 1).reshape(z1 - z0, h, w, -1)
                # torch's median of an odd count is the middle element, scipy's rank size^3 // 2
                filtered[z0:z1] = win.median(dim=-1).values
            res = filtered
        out[i] = res.to(torch.float16).cpu().numpy()
    return out


def remove_small_components(binary: np.ndarray, max_voxels: int) -> np.ndarray:
    """Drop 26-connected components of `max_voxels` voxels or fewer from a binary volume."""
    from scipy import ndimage

    binary = np.asarray(binary, dtype=bool)
    if max_voxels <= 0 or not binary.any():
        return binary.copy()
    # label the foreground's bounding box only: the same components, less volume to scan
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(binary))
    crop = binary[box]
    labels, n = ndimage.label(crop, structure=_CONN26 if crop.ndim == 3 else None)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes > max_voxels
    keep[0] = False
    out = np.zeros_like(binary)
    out[box] = keep[labels]
    return out
