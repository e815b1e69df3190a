"""A local folder as a data set, read in place (symlinked into data/raw/{ds}, never copied).

Accepted: the raw naming of this workflow (`{sub}_t2.nii.gz`, `{sub}_seg.nii.gz` for anomalous sets) or
the naming the source ships with (IXI tarball, MSLUB archives, BraTS 2021 folders)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pddpm.data import brats, ixi, mslub
from pddpm.data.raw import RawSubject, check_ids, reject_unexpected, visible_files
from pddpm.errors import PddpmInputError

RAW_RE = re.compile(r"^(?P<subject>.+)_(?P<key>t2|seg)\.nii(\.gz)?$")
RAW_EXPECTED = "files named <subject>_t2.nii.gz (and <subject>_seg.nii.gz for an anomalous data set)"
NATIVE = {"ixi": ixi.scan, "mslub": mslub.scan, "brats": brats.scan}


def scan(folder: str | os.PathLike, kind: str, role: str) -> list[RawSubject]:
    """Subjects of a local folder; the error names the folder and both accepted namings."""
    folder = Path(folder).expanduser()
    if kind == "brats":  # the steps to obtain BraTS come with a missing folder
        if not folder.is_dir() or not any(RAW_RE.match(p.name) for p in folder.iterdir()):
            return apply_role(brats.scan(folder), role, folder)
    if not folder.is_dir():
        raise PddpmInputError(f"{folder}: folder not found; set datasets.<name>.path to the folder holding "
                              f"{RAW_EXPECTED}, or the {kind} files as distributed")
    files = visible_files(folder)
    if any(RAW_RE.match(p.name) for p in files if p.parent == folder):
        return apply_role(scan_raw(folder, role), role, folder)
    return apply_role(NATIVE[kind](folder), role, folder)


def scan_raw(folder: Path, role: str) -> list[RawSubject]:
    found: dict[str, dict[str, Path]] = {}
    unexpected = []
    for path in visible_files(folder):
        m = RAW_RE.match(path.name)
        if m and path.parent == folder:
            found.setdefault(m["subject"], {})[m["key"]] = path
        elif path.name not in ("subjects.tsv", "README", "README.md"):
            unexpected.append(path)
    reject_unexpected(unexpected, folder, RAW_EXPECTED)
    label = int(role == "anomalous")
    subjects = []
    for sub, files in sorted(found.items()):
        if "t2" not in files:
            raise PddpmInputError(f"{files['seg']}: no {sub}_t2.nii.gz beside it; expected {RAW_EXPECTED}")
        subjects.append(RawSubject(sub, files["t2"], files.get("seg"), label))
    return check_ids(subjects, folder, RAW_EXPECTED)


def apply_role(subjects: list[RawSubject], role: str, folder: Path) -> list[RawSubject]:
    if role == "anomalous":
        missing = [s.subject for s in subjects if s.seg is None]
        if missing:
            raise PddpmInputError(f"{folder}: anomalous data set without segmentation for {missing[:10]}; "
                                  f"expected {RAW_EXPECTED}")
    else:
        for s in subjects:  # a healthy set's segmentations are not used
            s.seg, s.label = None, 0
    return subjects
