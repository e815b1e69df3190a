"""Split sheets (SPEC section 1): seeded folds for new data, the authors' sheets read unchanged, defect checks.

A sheet is a pandas DataFrame in the original CSV layout (`SHEET_COLUMNS`), one row per volume.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pddpm.errors import PddpmConfigError, PddpmInputError
from pddpm.io import atomic_path

SHEET_COLUMNS = ["img_name", "age", "sex", "label", "img_path", "mask_path", "seg_path"]
REQUIRED_COLUMNS = ["img_name", "label", "img_path", "mask_path"]
DEFECT_COLUMNS = ["sheet", "img_name", "defect", "detail", "action"]
SPLIT_PATTERN = r"train_fold\d+|val_fold\d+|val|test"

log = logging.getLogger("pddpm.splits")


def split_names(anomalous: bool, folds: int) -> list[str]:
    """The sheets of a data set (same as rules/common.smk `split_names`)."""
    if anomalous:
        return ["val", "test"]
    return [f"{s}_fold{k}" for k in range(folds) for s in ("train", "val")] + ["test"]


def _count(fraction: float, n: int, *, lo: int, hi: int) -> int:
    # round half up (Python's round() is banker's rounding), then keep both sides non-empty
    return int(min(max(np.floor(fraction * n + 0.5), lo), hi))


def _rng(seed: int, ds: str) -> np.random.Generator:
    # a data-set-specific stream: two data sets with the same seed do not share one permutation
    return np.random.default_rng([seed, zlib.crc32(ds.encode())])


def assign_healthy(subjects: Sequence[str], *, folds: int, val_fraction: float, test_fraction: float,
                   seed: int, ds: str = "") -> dict[str, list[str]]:
    """Seeded healthy test set; the rest in `folds` folds (k-fold partition of the validation parts).

    With folds == 1 a single validation split of `val_fraction` of the non-test subjects.
    """
    subjects = sorted(subjects)  # the same subjects give the same split whatever order they come in
    n = len(subjects)
    if folds < 1:
        raise PddpmConfigError(f"splits.folds: {folds}, must be >= 1")
    n_test = _count(test_fraction, n, lo=1, hi=n - 1)
    if n - n_test < max(folds, 2):
        raise PddpmConfigError(
            f"datasets.{ds or '?'}: {n} subjects leave {n - n_test} after the healthy test set, too few for "
            f"splits.folds={folds} (each fold needs a train and a validation subject); use fewer folds or "
            "a smaller splits.healthy_test_fraction")
    order = [subjects[i] for i in _rng(seed, ds).permutation(n)]
    test, rest = order[:n_test], order[n_test:]
    out: dict[str, list[str]] = {}
    if folds == 1:
        n_val = _count(val_fraction, len(rest), lo=1, hi=len(rest) - 1)
        out["train_fold0"], out["val_fold0"] = sorted(rest[n_val:]), sorted(rest[:n_val])
    else:
        chunks = np.array_split(np.arange(len(rest)), folds)
        for k, idx in enumerate(chunks):
            val = {rest[i] for i in idx}
            out[f"train_fold{k}"] = sorted(s for s in rest if s not in val)
            out[f"val_fold{k}"] = sorted(val)
    out["test"] = sorted(test)
    return out


def assign_anomalous(subjects: Sequence[str], *, val_fraction: float, seed: int,
                     ds: str = "") -> dict[str, list[str]]:
    """Seeded validation (threshold choice) and test split: at least one subject in each."""
    subjects = sorted(subjects)
    n = len(subjects)
    if n < 2:
        raise PddpmInputError(f"datasets.{ds or '?'}: {n} subject(s); an anomalous data set needs at least 2 "
                              "(one to choose the threshold, one to test)")
    n_val = _count(val_fraction, n, lo=1, hi=n - 1)
    order = [subjects[i] for i in _rng(seed, ds).permutation(n)]
    return {"val": sorted(order[:n_val]), "test": sorted(order[n_val:])}


def sheet_from_subjects(names: Sequence[str], files: Mapping[str, Mapping[str, str | None]],
                        label: int) -> pd.DataFrame:
    """A sheet in the original layout for subjects whose files are `files[name]` ({'t2','mask','seg'})."""
    rows = []
    for name in names:
        f = files[name]
        rows.append({"img_name": name, "age": np.nan, "sex": "", "label": int(label),
                     "img_path": f["t2"], "mask_path": f["mask"], "seg_path": f.get("seg") or ""})
    return pd.DataFrame(rows, columns=SHEET_COLUMNS)


_T1 = re.compile(r"(?<![A-Za-z0-9])t1(?![A-Za-z0-9])")


def t1_to_modality(path: str, modality: str = "t2") -> str:
    """The authors' sheets name T1 files; their loader rewrote them to the modality used. We rewrite only
    't1' as a whole path token (a folder `t1/` or a suffix `_t1.nii.gz`), never inside a subject name,
    and BraTS's `FLAIR.nii.gz` suffix as their loader did."""
    if not isinstance(path, str):
        return path
    return _T1.sub(modality, path).replace("FLAIR.nii.gz", f"{modality}.nii.gz")


def normalise_sheet(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """A sheet reduced to `SHEET_COLUMNS` with checked types; `name` (its file) goes into every error.
    A `subject` column (the workflow's id for the row, e.g. from the authors' layout reader) becomes
    `img_name`, so sheets, split files and results all name a volume the same way."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise PddpmInputError(f"{name}: missing column(s) {', '.join(missing)}; a split sheet needs "
                              f"{', '.join(SHEET_COLUMNS)} (age, sex, seg_path may be empty)")
    df = df.copy()
    if "subject" in df.columns:
        df["img_name"] = df["subject"]
    for col in SHEET_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan if col == "age" else ""
    df = df[SHEET_COLUMNS].copy()
    if df["img_name"].isna().any():
        raise PddpmInputError(f"{name}: rows {list(df.index[df['img_name'].isna()])} have no img_name")
    df["img_name"] = df["img_name"].astype(str)
    for col in ("sex", "img_path", "mask_path", "seg_path"):
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    try:
        df["label"] = df["label"].astype(int)
    except (TypeError, ValueError) as exc:
        raise PddpmInputError(f"{name}: column label must hold integers 0/1 ({exc})") from exc
    return df.reset_index(drop=True)


def read_sheet(path: str | os.PathLike, *, modality: str | None = None, root: str | os.PathLike | None = None
               ) -> pd.DataFrame:
    """Read a split sheet in the original layout (the authors' ones unchanged, or ours).

    `modality` rewrites the t1-named image paths (e.g. 't2'); `root` joins relative paths onto the data
    root the authors' paths are relative to. Extra columns (e.g. a pandas index) are dropped.
    """
    path = Path(path)
    if not path.exists():
        raise PddpmInputError(f"{path}: split sheet not found")
    try:
        df = pd.read_csv(path, dtype={"img_name": str, "img_path": str, "mask_path": str, "seg_path": str,
                                      "sex": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PddpmInputError(f"{path}: not a readable CSV split sheet ({exc})") from exc
    df = normalise_sheet(df, str(path))
    if modality:
        df["img_path"] = df["img_path"].map(lambda p: t1_to_modality(p, modality))
    if root is not None:
        for col in ("img_path", "mask_path", "seg_path"):
            df[col] = df[col].map(lambda p: str(Path(root) / p) if p and not os.path.isabs(p) else p)
    return df.reset_index(drop=True)


def write_sheet(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        df[SHEET_COLUMNS].to_csv(tmp, index=False)
    return Path(path)


def _priority(name: str) -> int:
    # which sheet keeps a subject found in two: the evaluation side, so test sets stay fixed
    return 2 if name == "test" else 1 if name.startswith("val") else 0


def _fold(name: str) -> str | None:
    m = re.search(r"_fold(\d+)$", name)
    return m.group(1) if m else None


def check_sheets(sheets: Mapping[str, pd.DataFrame], *, check_files: bool = True) -> pd.DataFrame:
    """Every defect of a data set's sheets, one row each (`DEFECT_COLUMNS`, action left empty):

    - `duplicate`: an img_name repeated within a sheet (the first row is kept);
    - `leakage`: an img_name in two sheets that must be disjoint (a train/val fold and the test set, or
      a fold's train and val, or anomalous val and test); reported on the training-side sheet;
    - `missing_file`: a row whose image or mask (or a named segmentation) does not exist.
    """
    rows = []
    for name, df in sheets.items():
        dup = df["img_name"].duplicated(keep="first")
        for sub in df.loc[dup, "img_name"]:
            rows.append((name, sub, "duplicate", f"repeated in {name}"))
    names = list(sheets)
    for a in names:
        for b in names:
            if a == b or _priority(a) >= _priority(b):
                continue
            # different folds are independent experiments: only the same fold or the shared test set clash
            if b != "test" and _fold(a) != _fold(b):
                continue
            both = sorted(set(sheets[a]["img_name"]) & set(sheets[b]["img_name"]))
            rows.extend((a, sub, "leakage", f"also in {b}") for sub in both)
    if check_files:
        for name, df in sheets.items():
            for _, r in df.iterrows():
                gone = [r[c] for c in ("img_path", "mask_path", "seg_path")
                        if (r[c] or c != "seg_path") and not os.path.exists(r[c])]
                if gone:
                    rows.append((name, r["img_name"], "missing_file", "; ".join(map(str, gone))))
    out = pd.DataFrame(rows, columns=DEFECT_COLUMNS[:-1])
    out["action"] = ""
    return out.drop_duplicates(["sheet", "img_name", "defect"]).reset_index(drop=True)


def apply_defects(sheets: Mapping[str, pd.DataFrame], defects: pd.DataFrame, *, drop: bool
                  ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Drop the defective rows (duplicates after the first, leaked rows from the training side, rows
    with missing files) when `drop`, else keep them; warn either way. Returns (sheets, defects+action)."""
    defects = defects.copy()
    defects["action"] = "dropped" if drop else "kept"
    out = {}
    for name, df in sheets.items():
        df = df.copy()
        if drop:
            bad = defects[defects["sheet"] == name]
            df = df[~df["img_name"].duplicated(keep="first")]
            gone = set(bad.loc[bad["defect"].isin(["leakage", "missing_file"]), "img_name"])
            df = df[~df["img_name"].isin(gone)]
        out[name] = df.reset_index(drop=True)
    for (name, defect), grp in defects.groupby(["sheet", "defect"], sort=True):
        log.warning("%s: %d %s row(s) %s: %s", name, len(grp), defect, "dropped" if drop else "KEPT",
                    ", ".join(grp["img_name"].head(10)) + (" ..." if len(grp) > 10 else ""))
    for name, df in out.items():
        if df.empty:
            raise PddpmInputError(f"split sheet {name}: no rows left after dropping defects; fix the sheet")
    return out, defects


def write_defects(defects: pd.DataFrame, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        defects[DEFECT_COLUMNS].to_csv(tmp, sep="\t", index=False)
    return Path(path)


def build_sheets(*, ds: str, anomalous: bool, files: Mapping[str, Mapping[str, str | None]] | None = None,
                 authors_sheets: Mapping[str, str | os.PathLike | pd.DataFrame] | None = None,
                 root: str | None = None,
                 folds: int, val_fraction: float, test_fraction: float, anomalous_val_fraction: float,
                 seed: int, drop_defects: bool, modality: str = "t2"
                 ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """All sheets of one data set and their defect table, checked (and cleaned when `drop_defects`).

    Either `authors_sheets` (split name -> CSV in the original layout with paths relative to `root`, or
    a DataFrame already read, e.g. by `pddpm.data.preprocessed_layout.split_sheets`) or `files`
    (subject -> {'t2','mask','seg'} preprocessed paths) to make seeded splits from.
    """
    wanted = split_names(anomalous, folds)
    if authors_sheets is not None:
        missing = [s for s in wanted if s not in authors_sheets]
        if missing:
            raise PddpmInputError(f"datasets.{ds}: no authors' sheet for {', '.join(missing)}")
        sheets = {s: normalise_sheet(authors_sheets[s], f"authors' sheet {s}")
                  if isinstance(authors_sheets[s], pd.DataFrame)
                  else read_sheet(authors_sheets[s], modality=modality, root=root) for s in wanted}
    else:
        if not files:
            raise PddpmInputError(f"datasets.{ds}: no subjects to split")
        if anomalous:
            assign = assign_anomalous(sorted(files), val_fraction=anomalous_val_fraction, seed=seed, ds=ds)
        else:
            assign = assign_healthy(sorted(files), folds=folds, val_fraction=val_fraction,
                                    test_fraction=test_fraction, seed=seed, ds=ds)
        sheets = {s: sheet_from_subjects(assign[s], files, int(anomalous)) for s in wanted}
    defects = check_sheets(sheets)
    return apply_defects(sheets, defects, drop=drop_defects)


# ---------------------------------------------------------------------------------------------------
# sheets that name subjects (the authors' published sheets on the raw route)

def build_named_sheets(*, ds: str, anomalous: bool, named: Mapping[str, pd.DataFrame],
                       files: Mapping[str, Mapping[str, str | None]], drop_defects: bool,
                       origin: str = "the authors' sheet") -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Sheets from lists of subjects (`named`: split -> DataFrame with `subject`, `their_name`, `age`,
    `sex`, as `pddpm.data.authors_splits.read_sheets` gives them) on this workflow's files, and their
    defect table: the `check_sheets` defects plus the coverage of the data set:

    - `missing_subject`: a row naming a volume that this data set does not have; always dropped (there
      is no file to keep);
    - `not_in_sheets`: a subject of the data set in none of the sheets; action `unused`.
    """
    label = int(anomalous)
    sheets, coverage = {}, []
    for split, df in named.items():
        rows = []
        for r in df.itertuples(index=False):
            if not r.subject or r.subject not in files:
                coverage.append((split, r.their_name, "missing_subject",
                                 f"named by {origin} {split}, not a subject of datasets.{ds}", "dropped"))
                continue
            f = files[r.subject]
            rows.append({"img_name": r.subject, "age": r.age, "sex": r.sex or "", "label": label,
                         "img_path": f["t2"], "mask_path": f["mask"], "seg_path": f.get("seg") or ""})
        if not rows:
            shown = ", ".join(df["their_name"].head(5))
            raise PddpmInputError(
                f"datasets.{ds}: none of the {len(df)} volumes of {origin} {split} ({shown} ...) is a subject "
                f"of this data set; these sheets fit only the real data set they were made for. For other "
                f"data, set datasets.{ds}.split_source: seeded")
        sheets[split] = pd.DataFrame(rows, columns=SHEET_COLUMNS)
    sheets = {s: normalise_sheet(df, f"{origin} {s}") for s, df in sheets.items()}
    sheets, defects = apply_defects(sheets, check_sheets(sheets), drop=drop_defects)
    listed = set().union(*(set(df["subject"]) for df in named.values()))
    coverage += [("-", sub, "not_in_sheets", f"a subject of datasets.{ds} in none of its sheets", "unused")
                 for sub in sorted(set(files) - listed)]
    extra = pd.DataFrame(coverage, columns=DEFECT_COLUMNS)
    for defect, grp in extra.groupby("defect", sort=True):
        log.warning("datasets.%s: %d %s: %s", ds, len(grp), defect,
                    ", ".join(grp["img_name"].head(10)) + (" ..." if len(grp) > 10 else ""))
    parts = [d for d in (defects, extra) if len(d)]
    return sheets, (pd.concat(parts, ignore_index=True) if parts else defects)
