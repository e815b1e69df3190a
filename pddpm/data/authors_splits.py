"""The pDDPM authors' split sheets on the raw route: downloaded (source `pddpm_splits` of sources.yaml,
pinned commit and sha256; never copied into this project, their repository has no licence) and mapped
onto this workflow's subjects.

Their sheets name the volumes of their preprocessed package, t1-named (their loader read the t2 image):
    IXI      img_name IXI002-Guys-0828_t1.nii.gz   img_path /Train/ixi/t1/IXI002-Guys-0828_t1.nii.gz
    BraTS21  img_name BraTS2021_00000              img_path /Test/Brats21/t1/BraTS2021_00000_t1.nii.gz
    MSLUB    img_name patient01                    img_path /Test/MSLUB/t1/patient01_t1.nii.gz
Our subject ids on the raw route are `IXI002` (IXI-T2.tar), `BraTS2021_00000`, `patient01`; a local
folder in raw naming may use the full `IXI002-Guys-0828`. A row maps to our subject with its full name,
else with the data set's id (`IXInnn`, `BraTS2021_nnnnn`, `patientNN`). Rows that map to nothing are
kept here with an empty `subject`: the split stage reports them (pddpm.splits.build_named_sheets).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from pddpm.data.preprocessed_layout import SHEET_PREFIX, SUFFIX_RE
from pddpm.errors import PddpmInputError

SOURCE = "pddpm_splits"
ID_RE = {"ixi": re.compile(r"^IXI\d{3}"), "brats": re.compile(r"^BraTS2021_\d{5}"),
         "mslub": re.compile(r"^patient\d{2}")}
NAMED_COLUMNS = ["subject", "their_name", "age", "sex"]
# IXI's sheets carry IXI.xls's sex code under this header; MSLUB's have a `sex` column of M/F
IXI_SEX = {"SEX_ID (1=m, 2=f)": {1: "M", 2: "F"}}


def sheet_file(kind: str, split: str) -> str:
    """File name of the authors' sheet of one split, e.g. IXI_train_fold0.csv, MSLUB_val.csv."""
    return f"{SHEET_PREFIX[kind]}_{split}.csv"


def folds_available(kind: str) -> int:
    """How many train/val folds the authors published for a healthy data set (from sources.yaml)."""
    from pddpm.data.download import load_sources  # the workflow's process only: keeps the job env small

    names = load_sources()[SOURCE]["files"]
    return sum(1 for n in names if re.fullmatch(rf"{SHEET_PREFIX[kind]}_train_fold\d+\.csv", n))


def their_name(img_name: str, img_path: str | float) -> str:
    """The volume a row names, without folders and the `_t1.nii.gz`-style suffix."""
    name = img_name if isinstance(img_name, str) and img_name else img_path
    return SUFFIX_RE.sub("", Path(str(name)).name)


def _canonical(kind: str, name: str) -> str:
    m = ID_RE[kind].match(name)
    return m.group(0) if m else name


def match_subjects(kind: str, names: Iterable[str], ours: Iterable[str]) -> dict[str, str]:
    """`{their name: our subject id or ""}`. Two of our subjects with one id is an error (which one the
    sheet means would be a guess)."""
    ours = sorted(set(ours))
    by_id: dict[str, list[str]] = {}
    for o in ours:
        by_id.setdefault(_canonical(kind, o), []).append(o)
    out = {}
    for n in names:
        if n in ours:
            out[n] = n
            continue
        hits = by_id.get(_canonical(kind, n), [])
        if len(hits) > 1:
            raise PddpmInputError(f"the authors' sheets name {n}, which matches several subjects of ours "
                                  f"({', '.join(hits)}); keep one of them in the data set")
        out[n] = hits[0] if hits else ""
    return out


def read_sheet(path: str | os.PathLike, kind: str, ours: Iterable[str]) -> pd.DataFrame:
    """One downloaded sheet -> `NAMED_COLUMNS` (rows in the authors' order, duplicates kept for the
    split stage to report; `subject` empty where no subject of ours matches)."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, FileNotFoundError) as exc:
        raise PddpmInputError(f"{path}: not a readable split sheet of the pDDPM authors ({exc}); delete it to "
                              f"download it again") from exc
    if "img_name" not in table and "img_path" not in table:
        raise PddpmInputError(f"{path}: no img_name or img_path column; expected the authors' sheet layout "
                              f"(img_name, age, label, img_path, mask_path, seg_path, ...)")
    names = [their_name(a, b) for a, b in zip(table.get("img_name", [""] * len(table)),
                                             table.get("img_path", [""] * len(table)), strict=True)]
    mapping = match_subjects(kind, names, ours)
    sex = [""] * len(table)
    if "sex" in table:
        sex = table["sex"].where(table["sex"].isin(["M", "F"]), "").tolist()
    for col, codes in IXI_SEX.items():
        if col in table:
            sex = table[col].map(codes).fillna("").tolist()
    age = pd.to_numeric(table["age"], errors="coerce") if "age" in table else pd.Series([float("nan")] * len(table))
    return pd.DataFrame({"subject": [mapping[n] for n in names], "their_name": names,
                         "age": age.tolist(), "sex": sex}, columns=NAMED_COLUMNS)


def read_sheets(paths: Mapping[str, str | os.PathLike], kind: str, ours: Iterable[str]) -> dict[str, pd.DataFrame]:
    """`{split: path}` of downloaded sheets -> `{split: read_sheet(...)}`."""
    ours = list(ours)
    return {split: read_sheet(p, kind, ours) for split, p in paths.items()}
