"""The original authors' preprocessed package, read in place; it enters the workflow at slicing.

Layout (below the folder given as `path`, or its `Data/` subfolder), files `<subject>_{t2,mask,seg}.nii.gz`:
    Train/ixi/{t2,mask}/             Test/Brats21/{t2,mask,seg}/        Test/MSLUB/{t2,mask,seg}/
    splits/{IXI_train_fold<k>,IXI_val_fold<k>,IXI_test,Brats21_val,Brats21_test,MSLUB_val,MSLUB_test}.csv
The sheets name t1 images (img_path relative to Data/); as the original loader does, the paths are
rewritten to the t2 images."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from pddpm.artefacts import SHEET_COLUMNS, SPLIT_PATTERN
from pddpm.data.raw import SUBJECT_RE
from pddpm.errors import PddpmInputError
from pddpm.splits import t1_to_modality

KIND_DIR = {"ixi": "Train/ixi", "brats": "Test/Brats21", "mslub": "Test/MSLUB"}
SHEET_PREFIX = {"ixi": "IXI", "brats": "Brats21", "mslub": "MSLUB"}
# IXI001-HH-1234_t2.nii.gz, IXI001-HH-1234_mask.nii.gz, BraTS2021_00000_seg.nii.gz -> the subject id
SUFFIX_RE = re.compile(r"_(t1|t2|mask|seg|flair|FLAIR)\.nii(\.gz)?$|\.nii(\.gz)?$")


def data_root(path: str | os.PathLike) -> Path:
    """The folder holding Train/, Test/ and splits/ (`path` itself or `path/Data`)."""
    path = Path(path).expanduser()
    for cand in (path, path / "Data"):
        if (cand / "splits").is_dir() and ((cand / "Train").is_dir() or (cand / "Test").is_dir()):
            return cand
    raise PddpmInputError(f"{path}: not the authors' preprocessed layout; expected Train/ixi/{{t2,mask}}, "
                          f"Test/{{Brats21,MSLUB}}/{{t2,mask,seg}} and splits/*.csv in it or in {path}/Data")


def _subject(name: str) -> str:
    return SUFFIX_RE.sub("", name)


def _index(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise PddpmInputError(f"{folder}: missing; the preprocessed layout needs {what} images here")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if not re.search(rf"_{what}\.nii(\.gz)?$", p.name):
            raise PddpmInputError(f"{p}: unexpected file; expected only <subject>_{what}.nii.gz in {folder}")
        sub = _subject(p.name)
        if not SUBJECT_RE.match(sub):
            raise PddpmInputError(f"{p}: subject id {sub!r} has characters the workflow cannot use "
                                  f"(letters, digits, '-' and single '_')")
        out[sub] = p
    return out


def files(path: str | os.PathLike, kind: str) -> dict[str, dict[str, Path]]:
    """`{subject: {"t2", "mask"[, "seg"]: path}}`; every subject must have all of them."""
    base = data_root(path) / KIND_DIR[kind]
    keys = ("t2", "mask", "seg") if kind != "ixi" else ("t2", "mask")
    index = {k: _index(base / k, k) for k in keys}
    subjects = sorted(index["t2"])
    if not subjects:
        raise PddpmInputError(f"{base / 't2'}: no T2 images; expected <subject>_t2.nii.gz files")
    for k in keys[1:]:
        missing = sorted(set(subjects) - set(index[k]))
        extra = sorted(set(index[k]) - set(subjects))
        if missing:
            raise PddpmInputError(f"{base / k}: no {k} for {missing[:10]} (expected one per file in {base / 't2'})")
        if extra:
            raise PddpmInputError(f"{base / k}: {[str(index[k][s]) for s in extra[:10]]} have no T2 image in "
                                  f"{base / 't2'}")
    return {s: {k: index[k][s] for k in keys} for s in subjects}


def to_t2(path: str) -> str:
    """The original loader's rewrite of a t1-named image path to its t2 image (pddpm.splits)."""
    return t1_to_modality(str(path), "t2")


def split_sheets(path: str | os.PathLike, kind: str) -> dict[str, pd.DataFrame]:
    """The authors' split sheets of one data set, keyed by our split names (train_fold<k>, val_fold<k>,
    test, val), in the original columns, with img_path rewritten to t2, every path made absolute, and a
    `subject` column matching the workflow's subject ids. Rows stay as the authors wrote them (duplicates
    and train/test overlap included) so the split stage can detect and report them."""
    root = data_root(path)
    prefix = SHEET_PREFIX[kind]
    sheets = {}
    for csv in sorted((root / "splits").glob(f"{prefix}_*.csv")):
        name = csv.stem.removeprefix(prefix + "_")
        if not re.fullmatch(SPLIT_PATTERN, name):
            continue  # e.g. avail_t2.csv
        table = pd.read_csv(csv)
        missing = [c for c in ("img_path", "mask_path") if c not in table]
        if missing:
            raise PddpmInputError(f"{csv}: missing columns {missing}; expected {', '.join(SHEET_COLUMNS)}")
        table["img_path"] = table["img_path"].map(to_t2)
        for col in ("img_path", "mask_path", "seg_path"):
            if col in table:
                table[col] = [str(root / str(p).lstrip("/")) if isinstance(p, str) and p else p
                              for p in table[col]]
        table.insert(0, "subject", [_subject(Path(p).name) for p in table["img_path"]])
        sheets[name] = table
    if not sheets:
        raise PddpmInputError(f"{root / 'splits'}: no split sheets {prefix}_<split>.csv for {kind}")
    return sheets
