"""Atomic writes and NIfTI reading with errors that name the file."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from pddpm.errors import PddpmInputError
from pddpm.io import atomic_path, load_nifti, save_nifti


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_result_has_the_usual_mode(tmp_path):
    path = save_nifti(np.ones((3, 3, 3), np.float32), np.diag([2, 2, 2, 1]), tmp_path / "a.nii.gz")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    img = load_nifti(path)
    assert img.shape == (3, 3, 3) and np.allclose(img.header.get_zooms(), 2)


def test_load_errors_name_the_file(tmp_path):
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    with pytest.raises(PddpmInputError, match="notes.nii.gz: not a readable NIfTI"):
        load_nifti(text)

    good = save_nifti(np.random.default_rng(0).random((20, 20, 20), dtype=np.float32), np.eye(4),
                      tmp_path / "good.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PddpmInputError, match="truncated.nii.gz"):
        load_nifti(truncated)

    four_d = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), four_d)
    with pytest.raises(PddpmInputError, match=r"four_d.nii.gz: image has 4 dimensions"):
        load_nifti(four_d)

    nan = tmp_path / "nan.nii.gz"
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), nan)
    with pytest.raises(PddpmInputError, match="nan.nii.gz: 1 voxels are NaN"):
        load_nifti(nan)

    with pytest.raises(PddpmInputError, match="missing.nii.gz: file not found"):
        load_nifti(tmp_path / "missing.nii.gz")
