"""Step 4: crop image, mask and segmentation to the bounding box of the registered brain mask."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from pddpm.preprocess.checks import check_aligned, check_mask


def bbox_slices(mask: np.ndarray, margin_vox: int = 0) -> tuple[slice, slice, slice]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin_vox, 0)
    hi = np.minimum(idx.max(0) + 1 + margin_vox, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def crop_subject(t2: nib.Nifti1Image, mask: nib.Nifti1Image, seg: nib.Nifti1Image, margin_vox: int = 0,
                 names=("t2", "mask", "seg")) -> dict[str, nib.Nifti1Image]:
    """Crop all three to the mask's bounding box (+ margin); affines shift so world positions stay put."""
    check_aligned(t2, mask, names[0], names[1])
    check_aligned(t2, seg, names[0], names[2])
    m = check_mask(np.asarray(mask.dataobj), names[1])
    sl = bbox_slices(m, margin_vox)
    return {"t2": t2.slicer[sl], "mask": mask.slicer[sl], "seg": seg.slicer[sl]}
