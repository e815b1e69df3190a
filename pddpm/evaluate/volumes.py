"""Arrays of an .npz file read one volume at a time, so that evaluating a split of any size holds a few
volumes in memory (the paper's BraTS test split: 1151 volumes, 2 GB of maps and reconstructions).

Works for compressed members (the inference file) and stored ones (the slices file) alike: the member is
read as a stream, its .npy header first, then one (Z, H, W) item per step.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pddpm.errors import PddpmInputError


class NpzVolumes:
    """The array `key` of the .npz at `path`: `shape`, `dtype`, and iteration over its first axis."""

    def __init__(self, path: str | os.PathLike, key: str, *, fix: str):
        self.path, self.key, self.fix = Path(path), key, fix
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(f"{key}.npy") as fh:
                self.shape, self.dtype, self._fortran = _header(fh)
        except KeyError as exc:
            raise PddpmInputError(f"{self.path}: lacks `{key}`; {fix}") from exc
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise PddpmInputError(f"{self.path}: not readable ({exc}); {fix}") from exc
        if self._fortran or len(self.shape) < 1:
            raise PddpmInputError(f"{self.path}: `{key}` is not a C-ordered stack of volumes; {fix}")

    def __len__(self) -> int:
        return int(self.shape[0])

    def __iter__(self) -> Iterator[np.ndarray]:
        item_shape = tuple(self.shape[1:])
        nbytes = int(np.prod(item_shape, dtype=np.int64)) * self.dtype.itemsize
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(f"{self.key}.npy") as fh:
                _header(fh)
                for _ in range(len(self)):
                    buf = fh.read(nbytes)
                    if len(buf) != nbytes:
                        raise EOFError(f"`{self.key}` ends early")
                    yield np.frombuffer(buf, dtype=self.dtype).reshape(item_shape)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise PddpmInputError(f"{self.path}: not readable ({exc}); {self.fix}") from exc


def _header(fh) -> tuple[tuple[int, ...], np.dtype, bool]:
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    return tuple(shape), np.dtype(dtype), bool(fortran)


def small_member(path: str | os.PathLike, key: str, *, fix: str) -> np.ndarray:
    """A small array of an .npz (e.g. `subjects`), read without touching the large ones."""
    path = Path(path)
    if not path.exists():
        raise PddpmInputError(f"{path}: not found; {fix}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[key]
    except KeyError as exc:
        raise PddpmInputError(f"{path}: lacks `{key}`; {fix}") from exc
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise PddpmInputError(f"{path}: not readable ({exc}); {fix}") from exc
