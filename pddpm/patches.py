"""The patch grid of pDDPM: where the patches of a slice lie, and a boolean mask of one patch."""

from __future__ import annotations

import torch

from pddpm.errors import PddpmInputError


def patch_corners(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left (y, x) corners of a grid of `size` x `size` patches, `stride` apart, covering the slice.

    The grid must tile the slice exactly (the last patch ends at the border), otherwise part of the
    slice would never be reconstructed; an error names the sizes and how to fix them.
    """
    if size > height or size > width:
        raise PddpmInputError(
            f"patch.size {size} is larger than the {height} x {width} slice; lower patch.size in the config")
    if stride < 1:
        raise PddpmInputError(f"patch stride must be >= 1, got {stride}")
    bad = [n for n in (height, width) if (n - size) % stride]
    if bad:
        raise PddpmInputError(
            f"a {height} x {width} slice is not tiled by {size} x {size} patches with stride {stride}: "
            f"(side - size) must be divisible by the stride. Change patch.size/patch.stride (or infer.stride) "
            f"or slices.target_spacing_mm so that the slice side fits the grid")
    ys = range(0, height - size + 1, stride)
    xs = range(0, width - size + 1, stride)
    return [(y, x) for y in ys for x in xs]


def patch_mask(height: int, width: int, corner: tuple[int, int], size: int) -> torch.BoolTensor:
    """(H, W) boolean mask, True inside the `size` x `size` patch whose top-left corner is `corner`."""
    y, x = int(corner[0]), int(corner[1])
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[y:y + size, x:x + size] = True
    return mask


def patch_masks(height: int, width: int, size: int, stride: int) -> torch.BoolTensor:
    """(P, H, W) masks of every patch of the grid, in `patch_corners` order."""
    return torch.stack([patch_mask(height, width, c, size) for c in patch_corners(height, width, size, stride)])
