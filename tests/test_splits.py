"""Split sheets: seeded fold scheme, the authors' sheet format, and the defect checks (planted defects)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pddpm.errors import PddpmConfigError, PddpmInputError
from pddpm.splits import (
    SHEET_COLUMNS,
    assign_anomalous,
    assign_healthy,
    build_sheets,
    read_sheet,
    t1_to_modality,
    write_defects,
    write_sheet,
)

SUBJECTS = [f"IXI{i:03d}-Guys-{1000 + i}" for i in range(20)]


def test_healthy_folds_partition_the_non_test_subjects():
    a = assign_healthy(SUBJECTS, folds=5, val_fraction=0.1, test_fraction=0.25, seed=3141, ds="ixi")
    test = set(a["test"])
    assert len(test) == 5  # 0.25 * 20
    rest = set(SUBJECTS) - test
    vals = [set(a[f"val_fold{k}"]) for k in range(5)]
    assert [len(v) for v in vals] == [3, 3, 3, 3, 3]
    assert set().union(*vals) == rest  # each non-test subject validates exactly once
    assert sum(len(v) for v in vals) == len(rest)
    for k in range(5):
        train = set(a[f"train_fold{k}"])
        assert train == rest - vals[k]
        assert not train & test and not vals[k] & test


def test_healthy_split_is_seeded():
    kw = dict(folds=1, val_fraction=0.2, test_fraction=0.25)
    a = assign_healthy(SUBJECTS, seed=1, ds="ixi", **kw)
    assert a == assign_healthy(list(reversed(SUBJECTS)), seed=1, ds="ixi", **kw)  # order of input irrelevant
    assert a != assign_healthy(SUBJECTS, seed=2, ds="ixi", **kw)
    assert len(a["val_fold0"]) == 3 and len(a["train_fold0"]) == 12 and len(a["test"]) == 5  # 0.2 * 15


def test_too_few_subjects_for_the_folds_names_the_key():
    with pytest.raises(PddpmConfigError, match="splits.folds"):
        assign_healthy(SUBJECTS[:4], folds=5, val_fraction=0.1, test_fraction=0.25, seed=0, ds="ixi")


@pytest.mark.parametrize(("n", "fraction", "n_val"), [(2, 0.08, 1), (3, 0.34, 1), (30, 0.34, 10), (5, 0.99, 4)])
def test_anomalous_val_and_test_never_empty(n, fraction, n_val):
    subs = [f"patient{i:02d}" for i in range(n)]
    a = assign_anomalous(subs, val_fraction=fraction, seed=3141, ds="mslub")
    assert len(a["val"]) == n_val and len(a["test"]) == n - n_val
    assert set(a["val"]) | set(a["test"]) == set(subs) and not set(a["val"]) & set(a["test"])


def test_t1_paths_rewritten_as_the_authors_loader_did():
    assert t1_to_modality("Train/ixi/t1/IXI002-Guys-0828_t1.nii.gz") == "Train/ixi/t2/IXI002-Guys-0828_t2.nii.gz"
    assert t1_to_modality("Test/MSLUB/t1/patient01_t1.nii.gz") == "Test/MSLUB/t2/patient01_t2.nii.gz"
    assert t1_to_modality("Test/Brats21/t1/BraTS2021_00000_FLAIR.nii.gz") == \
        "Test/Brats21/t2/BraTS2021_00000_t2.nii.gz"
    # 't1' inside a name is not a path token
    assert t1_to_modality("Train/ixi/t1/subt1x_t1.nii.gz") == "Train/ixi/t2/subt1x_t2.nii.gz"


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def _authors_layout(root, with_defects: bool):
    """A data root in the authors' layout with IXI sheets as they publish them (pandas index column,
    t1-named paths relative to the root, empty seg_path) and, optionally, their defects planted."""
    names = SUBJECTS[:10]
    for n in names:
        _touch(root / f"Train/ixi/t2/{n}_t2.nii.gz")
        _touch(root / f"Train/ixi/mask/{n}_mask.nii.gz")

    def sheet(subs):
        return pd.DataFrame({"img_name": subs, "age": 40.5, "sex": "F", "label": 0,
                             "img_path": [f"Train/ixi/t1/{n}_t1.nii.gz" for n in subs],
                             "mask_path": [f"Train/ixi/mask/{n}_mask.nii.gz" for n in subs],
                             "seg_path": np.nan})

    train, val, test = names[:6], names[6:8], names[8:]
    if with_defects:
        train = train + [train[1], test[0], "IXI999-Gone-0000"]  # duplicate, leakage, missing files
    (root / "splits").mkdir(parents=True)
    paths = {}
    for name, subs in (("train_fold0", train), ("val_fold0", val), ("test", test)):
        paths[name] = root / "splits" / f"IXI_{name}.csv"
        sheet(subs).to_csv(paths[name])  # with the index column, as pandas writes by default
    return paths, (train, val, test)


def _build(root, paths, drop):
    return build_sheets(ds="ixi", anomalous=False, authors_sheets=paths, root=str(root), folds=1,
                        val_fraction=0.1, test_fraction=0.27, anomalous_val_fraction=0.08, seed=0,
                        drop_defects=drop)


def test_authors_sheets_read_unchanged(tmp_path):
    paths, (train, val, test) = _authors_layout(tmp_path, with_defects=False)
    sheets, defects = _build(tmp_path, paths, drop=True)
    assert defects.empty
    assert list(sheets["train_fold0"]["img_name"]) == train and list(sheets["test"]["img_name"]) == test
    row = sheets["val_fold0"].iloc[0]
    assert row["img_path"] == str(tmp_path / f"Train/ixi/t2/{val[0]}_t2.nii.gz")
    assert row["age"] == 40.5 and row["sex"] == "F" and row["seg_path"] == "" and row["label"] == 0
    assert list(sheets["test"].columns) == SHEET_COLUMNS


def test_planted_defects_are_found_reported_and_dropped(tmp_path):
    paths, (train, val, test) = _authors_layout(tmp_path, with_defects=True)
    sheets, defects = _build(tmp_path, paths, drop=True)
    found = {(r.sheet, r.img_name, r.defect) for r in defects.itertuples()}
    assert found == {("train_fold0", train[1], "duplicate"),
                     ("train_fold0", test[0], "leakage"),
                     ("train_fold0", "IXI999-Gone-0000", "missing_file")}
    assert set(defects["action"]) == {"dropped"}
    kept = list(sheets["train_fold0"]["img_name"])
    assert kept == train[:6]  # the first of the duplicates stays, leaked and missing rows go
    assert list(sheets["test"]["img_name"]) == test  # the test set is never changed

    out = write_defects(defects, tmp_path / "ixi_defects.tsv")
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == ["sheet", "img_name", "defect", "detail", "action"]
    assert len(table) == 3 and "also in test" in set(table["detail"])


def test_authors_layout_read_by_the_data_stage_reader(tmp_path):
    """The workflow reads the authors' layout with pddpm.data.preprocessed_layout.split_sheets (issue 8);
    the same defects come out, and volumes are named by the workflow's subject ids."""
    from pddpm.data.preprocessed_layout import split_sheets

    paths, (train, val, test) = _authors_layout(tmp_path, with_defects=True)
    sheets, defects = build_sheets(ds="ixi", anomalous=False, authors_sheets=split_sheets(tmp_path, "ixi"),
                                   folds=1, val_fraction=0.1, test_fraction=0.27, anomalous_val_fraction=0.08,
                                   seed=0, drop_defects=True)
    assert sorted(defects["defect"]) == ["duplicate", "leakage", "missing_file"]
    assert list(sheets["train_fold0"]["img_name"]) == train[:6]
    assert sheets["test"]["img_path"].iloc[0] == str(tmp_path / f"Train/ixi/t2/{test[0]}_t2.nii.gz")


def test_defects_kept_when_not_dropping(tmp_path):
    paths, (train, _, _) = _authors_layout(tmp_path, with_defects=True)
    sheets, defects = _build(tmp_path, paths, drop=False)
    assert list(sheets["train_fold0"]["img_name"]) == train
    assert set(defects["action"]) == {"kept"} and len(defects) == 3


def test_anomalous_leakage_dropped_from_val(tmp_path):
    files = {}
    for n in SUBJECTS[:6]:
        files[n] = {k: str(tmp_path / f"{n}_{k}.nii.gz") for k in ("t2", "mask", "seg")}
        for p in files[n].values():
            _touch(tmp_path / p)
    sheets, defects = build_sheets(ds="brats", anomalous=True, files=files, folds=5, val_fraction=0.1,
                                   test_fraction=0.27, anomalous_val_fraction=0.34, seed=3141,
                                   drop_defects=True)
    assert defects.empty and len(sheets["val"]) == 2 and len(sheets["test"]) == 4
    assert set(sheets["val"]["label"]) == {1}
    # plant leakage into our own sheets and re-check them as a user-supplied set
    for name, df in sheets.items():
        write_sheet(pd.concat([df, sheets["test"].iloc[:1]]) if name == "val" else df,
                    tmp_path / f"MSLUB_{name}.csv")
    sheets2, defects2 = build_sheets(
        ds="brats", anomalous=True, authors_sheets={s: tmp_path / f"MSLUB_{s}.csv" for s in ("val", "test")},
        folds=5, val_fraction=0.1, test_fraction=0.27, anomalous_val_fraction=0.34, seed=3141,
        drop_defects=True)
    assert list(defects2["defect"]) == ["leakage"] and defects2["sheet"].iloc[0] == "val"
    assert sheets2["val"].equals(sheets["val"])


def test_sheet_roundtrip_and_bad_sheets(tmp_path):
    df = pd.DataFrame({"img_name": ["a", "b"], "age": [30.0, np.nan], "sex": ["M", ""], "label": [1, 1],
                       "img_path": ["x/a_t2.nii.gz", "x/b_t2.nii.gz"], "mask_path": ["m/a", "m/b"],
                       "seg_path": ["s/a", ""]})
    back = read_sheet(write_sheet(df, tmp_path / "s.csv"))
    pd.testing.assert_frame_equal(back, df, check_dtype=False)

    (tmp_path / "bad.csv").write_text("img_name,label,img_path\na,0,x.nii.gz\n")
    with pytest.raises(PddpmInputError, match=r"bad\.csv: missing column\(s\) mask_path"):
        read_sheet(tmp_path / "bad.csv")
    (tmp_path / "lab.csv").write_text("img_name,label,img_path,mask_path\na,healthy,x,y\n")
    with pytest.raises(PddpmInputError, match="label must hold integers"):
        read_sheet(tmp_path / "lab.csv")
    with pytest.raises(PddpmInputError, match="not found"):
        read_sheet(tmp_path / "nope.csv")
