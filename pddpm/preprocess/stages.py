"""One function per rule, paths in, files out: what the workflow scripts call and the tests exercise.

Each reads and checks all its inputs before writing anything, and writes atomically, so a bad input
leaves no output behind.
"""

from __future__ import annotations

import numpy as np

from pddpm.io import load_nifti, save_nifti
from pddpm.preprocess.crop import crop_subject
from pddpm.preprocess.n4 import n4_subject
from pddpm.preprocess.resample import resample_subject
from pddpm.preprocess.skullstrip import brain_mask


def resample_files(t2_path, seg_path, spacing_mm: float, out_t2, out_seg) -> dict:
    t2 = load_nifti(t2_path)
    seg = load_nifti(seg_path) if seg_path else None
    t2_out, seg_out = resample_subject(t2, seg, spacing_mm, t2_name=str(t2_path), seg_name=str(seg_path))
    save_nifti(np.asarray(seg_out.dataobj), seg_out.affine, out_seg)
    save_nifti(np.asarray(t2_out.dataobj, dtype=np.float32), t2_out.affine, out_t2)
    return {"in_shape": t2.shape, "in_zooms": t2.header.get_zooms()[:3], "out_shape": t2_out.shape}


def skullstrip_files(t2_path, backend: str, out_t2, out_mask, native_path=None, **kw) -> dict:
    """`native_path`: the raw scan, which the networks see at its own resolution (see brain_mask)."""
    img = load_nifti(t2_path)
    native = load_nifti(native_path) if native_path and backend != "none" else None
    mask, seconds = brain_mask(t2_path, img, backend, native=native, native_path=native_path, **kw)
    data = np.asarray(img.dataobj, dtype=np.float32)
    save_nifti(mask.astype(np.uint8), img.affine, out_mask)
    save_nifti(np.where(mask, data, 0).astype(np.float32), img.affine, out_t2)
    return {"seconds": seconds, "brain_ml": float(mask.sum() * np.prod(img.header.get_zooms()[:3]) / 1000)}


def crop_files(t2_path, mask_path, seg_path, margin_vox: int, out: dict) -> dict:
    imgs = {"t2": load_nifti(t2_path), "mask": load_nifti(mask_path), "seg": load_nifti(seg_path)}
    res = crop_subject(imgs["t2"], imgs["mask"], imgs["seg"], margin_vox,
                       names=(str(t2_path), str(mask_path), str(seg_path)))
    for k, dtype in (("seg", np.uint8), ("mask", np.uint8), ("t2", np.float32)):
        save_nifti(np.asarray(res[k].dataobj).astype(dtype), res[k].affine, out[k])
    return {"in_shape": imgs["t2"].shape, "out_shape": res["t2"].shape}


def n4_files(t2_path, mask_path, seg_path, out: dict, **kw) -> dict:
    img, mask, seg = load_nifti(t2_path), load_nifti(mask_path), load_nifti(seg_path)
    res, seconds = n4_subject(img, mask, name=str(mask_path), **kw)
    save_nifti(np.asarray(seg.dataobj).astype(np.uint8), seg.affine, out["seg"])
    save_nifti(np.asarray(mask.dataobj).astype(np.uint8), mask.affine, out["mask"])
    save_nifti(np.asarray(res.dataobj, dtype=np.float32), res.affine, out["t2"])
    return {"seconds": seconds}
