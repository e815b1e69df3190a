"""File I/O shared by every stage: atomic writes and NIfTI reading with clear errors."""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from pddpm.errors import PddpmInputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A killed or failing job therefore never leaves a half-written output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the suffixes so libraries that dispatch on them (.nii.gz, .npz) still work
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.removesuffix(suffix)}.", suffix=f".tmp{suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates the file 0600; give the result the mode a plain open() would have
        umask = os.umask(0)
        os.umask(umask)
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike,
               header: nib.Nifti1Header | None = None) -> Path:
    """Write a NIfTI file atomically, keeping the affine (orientation and spacing)."""
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=float), header=header)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def load_nifti(path: str | os.PathLike, *, allow_4d: bool = False) -> nib.Nifti1Image:
    """Load a 3D NIfTI image fully, turning every way it can be broken into an error naming the file."""
    path = Path(path)
    if not path.exists():
        raise PddpmInputError(f"{path}: file not found")
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises several types for "not an image"
        raise PddpmInputError(
            f"{path}: not a readable NIfTI image ({exc}); expected a .nii or .nii.gz file") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise PddpmInputError(f"{path}: is a {type(img).__name__}, expected NIfTI (.nii/.nii.gz)")
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise PddpmInputError(f"{path}: truncated or corrupt image data ({exc}); re-download or re-export it") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 and not allow_4d:
        raise PddpmInputError(f"{path}: image has {data.ndim} dimensions {data.shape}, expected a 3D volume")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n = int((~np.isfinite(data)).sum())
        raise PddpmInputError(f"{path}: {n} voxels are NaN or infinite; fix or mask them before running")
    return nib.Nifti1Image(data, img.affine, header=img.header)
