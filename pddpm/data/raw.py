"""The raw contract every source is normalised into: `data/raw/{ds}/{sub}_t2.nii.gz` (+ `_seg.nii.gz`)
and `data/raw/{ds}/subjects.tsv` (subject, t2, seg, label, then source-specific columns); the patterns,
names and the sheet's reader and writer are `pddpm.artefacts`'."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib

from pddpm.artefacts import SUBJECT_PATTERN, raw_name, subjects_row, write_subjects_tsv
from pddpm.errors import PddpmInputError
from pddpm.io import atomic_path

# the workflow's `sub` wildcard
SUBJECT_RE = re.compile(f"^{SUBJECT_PATTERN}$")
NIFTI_RE = re.compile(r"\.nii(\.gz)?$")


@dataclass
class RawSubject:
    subject: str
    t2: Path
    seg: Path | None = None
    label: int = 0
    extra: dict = field(default_factory=dict)  # e.g. site, age, sex

    def files(self) -> dict[str, Path]:
        return {"t2": self.t2, **({"seg": self.seg} if self.seg else {})}


def is_nifti(name: str) -> bool:
    return bool(NIFTI_RE.search(name))


def check_ids(subjects: list[RawSubject], where: str | os.PathLike, expected: str) -> list[RawSubject]:
    """Sorted subjects; an empty list, an id the workflow cannot use or a duplicate is an error."""
    if not subjects:
        raise PddpmInputError(f"{where}: no subject files found; expected {expected}")
    seen: dict[str, RawSubject] = {}
    for s in subjects:
        if not SUBJECT_RE.match(s.subject):
            raise PddpmInputError(f"{s.t2}: subject id {s.subject!r} has characters other than letters, "
                                  f"digits, '-' and single '_'; rename it (expected {expected})")
        if s.subject in seen:
            raise PddpmInputError(f"{where}: subject {s.subject} appears twice ({seen[s.subject].t2} and "
                                  f"{s.t2}); keep one (expected {expected})")
        seen[s.subject] = s
    return [seen[k] for k in sorted(seen)]


def reject_unexpected(paths: list[Path], where: str | os.PathLike, expected: str) -> None:
    if paths:
        shown = ", ".join(str(p) for p in paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        raise PddpmInputError(f"{where}: unexpected files {shown}; expected only {expected}. "
                              f"Move them elsewhere or rename them")


def visible_files(folder: Path) -> list[Path]:
    """All files below `folder`, hidden ones (.DS_Store, ._*) left out."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def place(src: Path, dst: Path, mode: str) -> None:
    """Put `src` at `dst` (a `.nii.gz` name): `link` (symlink, no copy), `move` (rename). An
    uncompressed `.nii` is written compressed instead, because readers pick the decoder from the name."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if not src.name.endswith(".gz"):
        img = nib.load(src)
        with atomic_path(dst) as tmp:
            nib.save(img, tmp)
        if mode == "move":
            src.unlink()
    elif mode == "link":
        os.symlink(src.resolve(), dst)
    elif mode == "move":
        os.replace(src, dst)
    else:
        raise ValueError(f"mode {mode!r}")


def subject_rows(subjects: list[RawSubject]) -> list[dict]:
    """The rows of subjects.tsv for these subjects (source-specific columns such as site and age last)."""
    return [subjects_row(s.subject, has_seg=bool(s.seg), label=s.label, **s.extra) for s in subjects]


def write_raw(subjects: list[RawSubject], raw_dir: str | os.PathLike, mode: str = "move") -> Path:
    """Place every subject's files under `raw_dir` in the raw naming, then write subjects.tsv last, so a
    folder with a subjects.tsv is always complete."""
    raw_dir = Path(raw_dir)
    for s in subjects:
        for key, src in s.files().items():
            place(Path(src), raw_dir / raw_name(s.subject, key), mode)
    return write_subjects_tsv(subject_rows(subjects), raw_dir / "subjects.tsv")
