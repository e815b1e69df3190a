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
    """The workflow reads the authors' layout with pddpm.data.preprocessed_layout.split_sheets;
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


# ---------------------------------------------------------------- the authors' sheets on the raw route


def _raw_route_files(root, subjects, anomalous=False):
    """Preprocessed files of subjects on the raw route (results/preprocess/{ds}/5_n4/{sub}_{k}.nii.gz)."""
    files = {}
    for s in subjects:
        files[s] = {k: str(root / f"5_n4/{s}_{k}.nii.gz") for k in ("t2", "mask", "seg")}
        for p in files[s].values():
            _touch(root / p)
    return files


def test_authors_ixi_sheets_mapped_onto_raw_route_subjects(tmp_path):
    from data_fixtures import authors_sheet
    from pddpm.data.authors_splits import read_sheets
    from pddpm.splits import build_named_sheets

    ours = ["IXI002", "IXI012", "IXI035", "IXI040", "IXI050"]  # ids as IXI-T2.tar gives them
    files = _raw_route_files(tmp_path, ours)
    d = tmp_path / "dl"
    paths = {
        # a duplicated row and a test subject also in training, as the published IXI folds have
        "train_fold0": authors_sheet(d / "IXI_train_fold0.csv", "ixi",
                                     ["IXI002-Guys-0828", "IXI012-HH-1211", "IXI012-HH-1211", "IXI035-IOP-0873"],
                                     sexes=["M", "F", "F", "M"], ages=[31.5, 42.0, 42.0, 60.1]),
        "val_fold0": authors_sheet(d / "IXI_val_fold0.csv", "ixi", ["IXI040-HH-1000"]),
        # a volume we do not have; IXI050 is in no sheet
        "test": authors_sheet(d / "IXI_test.csv", "ixi", ["IXI035-IOP-0873", "IXI999-Guys-0000"]),
    }
    named = read_sheets(paths, "ixi", ours)
    assert named["train_fold0"]["subject"].tolist() == ["IXI002", "IXI012", "IXI012", "IXI035"]
    assert named["test"]["subject"].tolist() == ["IXI035", ""]
    sheets, defects = build_named_sheets(ds="ixi", anomalous=False, named=named, files=files, drop_defects=True)
    assert sheets["train_fold0"]["img_name"].tolist() == ["IXI002", "IXI012"]
    assert sheets["val_fold0"]["img_name"].tolist() == ["IXI040"] and sheets["test"]["img_name"].tolist() == ["IXI035"]
    row = sheets["train_fold0"].iloc[0]
    assert (row["age"], row["sex"], row["label"]) == (31.5, "M", 0)
    assert row["img_path"] == files["IXI002"]["t2"] and row["mask_path"] == files["IXI002"]["mask"]
    assert list(sheets["test"].columns) == SHEET_COLUMNS
    found = {(r.sheet, r.img_name, r.defect, r.action) for r in defects.itertuples()}
    assert found == {("train_fold0", "IXI012", "duplicate", "dropped"),
                     ("train_fold0", "IXI035", "leakage", "dropped"),
                     ("test", "IXI999-Guys-0000", "missing_subject", "dropped"),
                     ("-", "IXI050", "not_in_sheets", "unused")}
    # kept instead of dropped: the leaked and duplicated rows stay, a missing volume cannot
    sheets, defects = build_named_sheets(ds="ixi", anomalous=False, named=named, files=files, drop_defects=False)
    assert sheets["train_fold0"]["img_name"].tolist() == ["IXI002", "IXI012", "IXI012", "IXI035"]
    assert sheets["test"]["img_name"].tolist() == ["IXI035"]
    assert dict(zip(defects["defect"], defects["action"], strict=True)) == {
        "duplicate": "kept", "leakage": "kept", "missing_subject": "dropped", "not_in_sheets": "unused"}


def test_authors_mslub_and_brats_sheets(tmp_path):
    from data_fixtures import authors_sheet
    from pddpm.data.authors_splits import read_sheets
    from pddpm.splits import build_named_sheets

    ours = [f"patient{n:02d}" for n in (1, 2, 3, 4)]
    files = _raw_route_files(tmp_path, ours)
    paths = {"val": authors_sheet(tmp_path / "MSLUB_val.csv", "mslub", ["patient01"], sexes=["M"]),
             "test": authors_sheet(tmp_path / "MSLUB_test.csv", "mslub", ["patient02", "patient03", "patient05"])}
    sheets, defects = build_named_sheets(ds="mslub", anomalous=True, named=read_sheets(paths, "mslub", ours),
                                         files=files, drop_defects=True)
    assert sheets["val"]["img_name"].tolist() == ["patient01"] and sheets["val"]["sex"].tolist() == ["M"]
    assert sheets["test"]["img_name"].tolist() == ["patient02", "patient03"]
    assert set(sheets["test"]["label"]) == {1} and sheets["test"]["seg_path"].iloc[0] == files["patient02"]["seg"]
    assert sorted(zip(defects["img_name"], defects["defect"], strict=True)) == [
        ("patient04", "not_in_sheets"), ("patient05", "missing_subject")]

    brats = ["BraTS2021_00000", "BraTS2021_00002"]
    files = _raw_route_files(tmp_path / "b", brats)
    paths = {"val": authors_sheet(tmp_path / "Brats21_val.csv", "brats", brats[:1]),
             "test": authors_sheet(tmp_path / "Brats21_test.csv", "brats", brats[1:])}
    sheets, defects = build_named_sheets(ds="brats21", anomalous=True, named=read_sheets(paths, "brats", brats),
                                         files=files, drop_defects=True)
    assert defects.empty and sheets["test"]["img_name"].tolist() == ["BraTS2021_00002"]
    assert sheets["val"]["img_path"].iloc[0] == files["BraTS2021_00000"]["t2"]


def test_authors_sheet_names_match_full_ids_and_refuse_ambiguity(tmp_path):
    from data_fixtures import authors_sheet
    from pddpm.data.authors_splits import match_subjects, read_sheet
    from pddpm.splits import build_named_sheets

    # a local folder in raw naming may keep the full IXI names
    assert match_subjects("ixi", ["IXI002-Guys-0828"], ["IXI002-Guys-0828", "IXI003-HH-0001"]) == {
        "IXI002-Guys-0828": "IXI002-Guys-0828"}
    with pytest.raises(PddpmInputError, match="IXI002-Guys-0828, which matches several subjects"):
        match_subjects("ixi", ["IXI002-Guys-0828"], ["IXI002", "IXI002-HH-0001"])
    # sheets of another data set: nothing matches, the error says how to split it instead
    sheet = authors_sheet(tmp_path / "MSLUB_val.csv", "mslub", ["patient01", "patient02"])
    files = _raw_route_files(tmp_path, ["case1", "case2"])
    named = {"val": read_sheet(sheet, "mslub", files), "test": read_sheet(sheet, "mslub", files)}
    with pytest.raises(PddpmInputError, match=r"none of the 2 volumes .* datasets.ms.split_source: seeded"):
        build_named_sheets(ds="ms", anomalous=True, named=named, files=files, drop_defects=True)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PddpmInputError, match="bad.csv: no img_name or img_path column"):
        read_sheet(tmp_path / "bad.csv", "mslub", files)
