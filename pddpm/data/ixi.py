"""IXI: the T2 tarball (`IXI002-Guys-0828-T2.nii.gz`, one per subject) and the demographics sheet."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from pddpm.data.raw import RawSubject, check_ids, is_nifti, reject_unexpected, visible_files
from pddpm.errors import PddpmInputError

log = logging.getLogger(__name__)

T2_RE = re.compile(r"^(?P<subject>IXI\d{3})-(?P<site>[A-Za-z]+)-(?P<scan>\d{4})-T2\.nii(\.gz)?$")
EXPECTED = "IXI T2 files named IXI<nnn>-<site>-<nnnn>-T2.nii.gz (e.g. IXI002-Guys-0828-T2.nii.gz)"
DEMOGRAPHICS_RE = re.compile(r"^IXI.*\.(xls|xlsx|csv)$", re.IGNORECASE)


def scan(folder: str | os.PathLike, demographics_file: str | os.PathLike | None = None) -> list[RawSubject]:
    """Subjects of an unpacked IXI-T2.tar (or a folder holding its files), healthy (label 0), with site
    and, when a demographics sheet is given or lies in the folder, age and sex."""
    folder = Path(folder)
    subjects, unexpected, sheets = [], [], []
    for path in visible_files(folder):
        m = T2_RE.match(path.name)
        if m:
            subjects.append(RawSubject(m["subject"], path, None, 0, {"site": m["site"]}))
        elif DEMOGRAPHICS_RE.match(path.name) and not is_nifti(path.name):
            sheets.append(path)
        else:
            unexpected.append(path)
    reject_unexpected(unexpected, folder, EXPECTED)
    subjects = check_ids(subjects, folder, EXPECTED)
    sheet = demographics_file or (sheets[0] if sheets else None)
    if sheet:
        add_demographics(subjects, read_demographics(sheet))
    return subjects


def read_demographics(path: str | os.PathLike) -> pd.DataFrame:
    """IXI.xls (or a csv with the same columns) -> columns subject (IXInnn), age, sex (M/F).

    The sheet has rows for subjects without any T2 and, for a few ids, several rows; the first row with
    an age wins."""
    path = Path(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    # by content, not name: a server may hand out the sheet as csv under IXI.xls
    # calamine reads both .xls and .xlsx (pandas deprecates xlrd)
    excel = magic in (b"\xd0\xcf\x11\xe0", b"PK\x03\x04")
    try:
        table = pd.read_excel(path, engine="calamine") if excel else pd.read_csv(path)
    except ImportError as exc:
        raise PddpmInputError(f"{path}: reading this sheet needs the package python-calamine ({exc}); "
                              f"pip install python-calamine") from exc
    except Exception as exc:
        raise PddpmInputError(f"{path}: not a readable demographics sheet ({exc}); expected IXI.xls "
                              f"with columns IXI_ID, SEX_ID (1 male, 2 female), AGE") from exc
    cols = {c.upper().strip(): c for c in table.columns}
    missing = [c for c in ("IXI_ID", "SEX_ID", "AGE") if c not in cols]
    if missing:
        raise PddpmInputError(f"{path}: missing columns {missing}; expected IXI_ID, SEX_ID (1 male, "
                              f"2 female), AGE as in IXI.xls")
    out = pd.DataFrame({
        "subject": [f"IXI{int(i):03d}" for i in table[cols["IXI_ID"]]],
        "age": pd.to_numeric(table[cols["AGE"]], errors="coerce"),
        "sex": table[cols["SEX_ID"]].map({1: "M", 2: "F"}),
    })
    out = out.sort_values("age", na_position="last", kind="stable").drop_duplicates("subject")
    return out.sort_values("subject").reset_index(drop=True)


def add_demographics(subjects: list[RawSubject], demo: pd.DataFrame) -> None:
    by_id = demo.set_index("subject")
    have = {s.subject for s in subjects}
    without_t2 = sorted(set(by_id.index) - have)
    if without_t2:
        log.info("IXI demographics: %d subjects have no T2 volume (e.g. %s); left out",
                 len(without_t2), ", ".join(without_t2[:5]))
    for s in subjects:
        row = by_id.loc[s.subject] if s.subject in by_id.index else None
        s.extra["age"] = None if row is None or pd.isna(row["age"]) else round(float(row["age"]), 2)
        s.extra["sex"] = None if row is None or pd.isna(row["sex"]) else row["sex"]
