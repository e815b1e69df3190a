"""Tiny real NIfTI files and archives in the real sources' naming, for the data tests."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np


def nifti(path: Path, shape=(6, 7, 4), seed=0, affine=None, dtype=np.float32) -> Path:
    rng = np.random.default_rng(seed)
    data = (rng.random(shape) * 100).astype(dtype)
    aff = np.diag([1.2, 1.0, 3.0, 1.0]) if affine is None else affine
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, aff), path)
    return path


def _members(folder: Path):
    """(file, name in the archive) for every file below `folder`, in a stable order."""
    return [(p, str(p.relative_to(folder))) for p in sorted(folder.rglob("*")) if p.is_file()]


def tar_of(folder: Path, archive: Path) -> Path:
    """Tar the files of `folder` at the archive's top level (as IXI-T2.tar ships them)."""
    with tarfile.open(archive, "w") as tf:
        for p, name in _members(folder):
            tf.add(p, arcname=name)
    return archive


def zip_of(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for p, name in _members(folder):
            zf.write(p, arcname=name)
    return archive


IXI_NAMES = ["IXI002-Guys-0828-T2.nii.gz", "IXI012-HH-1211-T2.nii.gz", "IXI035-IOP-0873-T2.nii.gz"]


def ixi_tar(tmp: Path, names=IXI_NAMES, shape=(6, 7, 4)) -> Path:
    src = tmp / "ixi_src"
    for i, n in enumerate(names):
        nifti(src / n, shape, seed=i)
    return tar_of(src, tmp / "IXI-T2.tar")


def ixi_demographics(path: Path) -> Path:
    # IXI.xls's columns; IXI013 has no T2, IXI012 is listed twice (once without an age), IXI035 not at all
    path.write_text("IXI_ID,SEX_ID,HEIGHT,AGE\n2,2,164,35.8\n12,1,175,\n12,1,175,38.78\n13,1,180,46.7\n")
    return path


def mslub_zip(tmp: Path, patient: str, gt_grid_of: str = "raw") -> Path:
    """One MSLUB patient archive: raw and co-registered channels, the ground truth on the grid of
    `gt_grid_of` ('raw' or 'preprocessed')."""
    src = tmp / f"{patient}_src" / patient
    raw_aff = np.diag([0.5, 0.5, 3.0, 1.0])
    pre_aff = np.diag([1.0, 1.0, 1.0, 1.0])
    nifti(src / "raw" / f"{patient}_T2W.nii.gz", (8, 8, 4), 1, raw_aff)
    nifti(src / "raw" / f"{patient}_FLAIR.nii.gz", (8, 8, 4), 2, raw_aff)
    nifti(src / "preprocessed" / f"{patient}_T2W.nii.gz", (6, 6, 6), 3, pre_aff)
    nifti(src / "preprocessed" / f"{patient}_T1W.nii.gz", (6, 6, 6), 4, pre_aff)
    shape, aff = ((8, 8, 4), raw_aff) if gt_grid_of == "raw" else ((6, 6, 6), pre_aff)
    nifti(src / f"{patient}_consensus_gt.nii.gz", shape, 5, aff, dtype=np.uint8)
    return zip_of(src.parent, tmp / f"{patient}.zip")


def brats_folder(root: Path, ids=("00000", "00002"), seg=True) -> Path:
    for i, n in enumerate(ids):
        case = root / f"BraTS2021_{n}"
        for mod in ("t1", "t1ce", "t2", "flair") + (("seg",) if seg else ()):
            nifti(case / f"BraTS2021_{n}_{mod}.nii.gz", (5, 5, 5), i,
                  dtype=np.uint8 if mod == "seg" else np.float32)
    return root
