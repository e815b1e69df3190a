"""Unpacking downloaded archives (tar, tar.gz, zip) safely and atomically."""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from pddpm.errors import PddpmInputError


def extract(archive: str | os.PathLike, dest: str | os.PathLike, expected: str = "a tar or zip archive") -> Path:
    """Unpack `archive` into the folder `dest` (created; must not exist yet).

    Unpacks into a hidden sibling first and renames it onto `dest` when complete, so a broken archive
    leaves nothing behind. Members that would land outside `dest` (absolute paths, `..`, links out) are
    refused by tarfile's "data" filter and by an explicit check for zips.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise PddpmInputError(f"{archive}: archive not found; expected {expected}")
    tmp = dest.with_name(f".{dest.name}.extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    target = (tmp / name).resolve()
                    if not target.is_relative_to(tmp.resolve()):
                        raise PddpmInputError(f"{archive}: member {name!r} points outside the archive folder")
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")
        else:
            raise PddpmInputError(f"{archive}: not an archive (neither tar nor zip); expected {expected}. "
                                  f"Delete it and download it again")
    except tarfile.FilterError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PddpmInputError(f"{archive}: unsafe member refused ({exc}): it points outside the archive "
                              f"folder; expected {expected}") from exc
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PddpmInputError(f"{archive}: broken or truncated archive ({exc}); expected {expected}. "
                              f"Delete it and download it again") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest
