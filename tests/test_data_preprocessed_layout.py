"""The authors' preprocessed package on a fixture tree: files read in place, split sheets rewritten."""

from __future__ import annotations

import numpy as np
import pytest

from data_fixtures import nifti
from pddpm.data import preprocessed_layout as pl
from pddpm.errors import PddpmInputError

IXI = ["IXI002-Guys-0828", "IXI012-HH-1211", "IXI035-IOP-0873"]
BRATS = ["BraTS2021_00000", "BraTS2021_00002"]
HEADER = ",img_name,\"SEX_ID (1=m, 2=f)\",age,label,img_path,mask_path,seg_path\n"


def make_tree(root):
    data = root / "Data"
    for s in IXI:
        for k in ("t1", "t2", "mask"):  # the package also holds t1 images; only t2 is read
            nifti(data / "Train/ixi" / k / f"{s}_{k}.nii.gz", dtype=np.uint8 if k == "mask" else np.float32)
    for s in BRATS:
        for k in ("t2", "mask", "seg"):
            nifti(data / "Test/Brats21" / k / f"{s}_{k}.nii.gz")
    splits = data / "splits"
    splits.mkdir()
    ixi_row = "{i},{s}_t1.nii.gz,1,35.8,0,/Train/ixi/t1/{s}_t1.nii.gz,/Train/ixi/mask/{s}_mask.nii.gz,\n"
    # the original's defect: a duplicated row in a train fold
    (splits / "IXI_train_fold0.csv").write_text(
        HEADER + "".join(ixi_row.format(i=i, s=s) for i, s in enumerate([IXI[0], IXI[0]])))
    (splits / "IXI_val_fold0.csv").write_text(HEADER + ixi_row.format(i=0, s=IXI[1]))
    (splits / "IXI_test.csv").write_text(HEADER + ixi_row.format(i=0, s=IXI[2]))
    (splits / "avail_t2.csv").write_text("img_name\n")
    b_row = "{i},{s}_t1.nii.gz,,,1,/Test/Brats21/t1/{s}_t1.nii.gz,/Test/Brats21/mask/{s}_mask.nii.gz,/Test/Brats21/seg/{s}_seg.nii.gz\n"
    (splits / "Brats21_val.csv").write_text(HEADER + b_row.format(i=0, s=BRATS[0]))
    (splits / "Brats21_test.csv").write_text(HEADER + b_row.format(i=0, s=BRATS[1]))
    return data


def test_files_read_in_place(tmp_path):
    data = make_tree(tmp_path)
    files = pl.files(tmp_path, "ixi")  # the parent of Data/ is accepted
    assert list(files) == IXI
    assert files[IXI[0]] == {"t2": data / "Train/ixi/t2" / f"{IXI[0]}_t2.nii.gz",
                             "mask": data / "Train/ixi/mask" / f"{IXI[0]}_mask.nii.gz"}
    brats = pl.files(data, "brats")
    assert list(brats) == BRATS and set(brats[BRATS[0]]) == {"t2", "mask", "seg"}


def test_split_sheets_rewritten_to_t2(tmp_path):
    data = make_tree(tmp_path)
    sheets = pl.split_sheets(tmp_path, "ixi")
    assert sorted(sheets) == ["test", "train_fold0", "val_fold0"]
    train = sheets["train_fold0"]
    assert train["subject"].tolist() == [IXI[0], IXI[0]]  # duplicates kept for the split stage to report
    assert train["img_path"].tolist() == [str(data / f"Train/ixi/t2/{IXI[0]}_t2.nii.gz")] * 2
    assert train["mask_path"].iloc[0] == str(data / f"Train/ixi/mask/{IXI[0]}_mask.nii.gz")
    assert all((data / p).exists() for p in train["img_path"])
    b = pl.split_sheets(data, "brats")
    assert sorted(b) == ["test", "val"]
    assert b["val"]["img_path"].iloc[0] == str(data / f"Test/Brats21/t2/{BRATS[0]}_t2.nii.gz")
    assert b["test"]["subject"].tolist() == [BRATS[1]]


def test_to_t2_like_the_original_loader():
    assert pl.to_t2("/Test/MSLUB/t1/patient01_t1.nii.gz") == "/Test/MSLUB/t2/patient01_t2.nii.gz"
    assert pl.to_t2("/Test/Brats21/t1/BraTS2021_00000_FLAIR.nii.gz") == "/Test/Brats21/t2/BraTS2021_00000_t2.nii.gz"


@pytest.mark.parametrize("case", ["not_layout", "missing_mask", "stray", "no_sheets"])
def test_bad_trees(tmp_path, case):
    data = make_tree(tmp_path)
    if case == "not_layout":
        root, match = tmp_path / "Data" / "Train", "not the authors' preprocessed layout"
    elif case == "missing_mask":
        (data / "Train/ixi/mask" / f"{IXI[1]}_mask.nii.gz").unlink()
        root, match = tmp_path, rf"no mask for \['{IXI[1]}'\]"
    elif case == "stray":
        nifti(data / "Train/ixi/t2" / "IXI099-HH-0000.nii.gz")
        root, match = tmp_path, r"IXI099-HH-0000.nii.gz: unexpected file; expected only <subject>_t2.nii.gz"
    else:
        for p in (data / "splits").glob("IXI_*"):
            p.unlink()
        with pytest.raises(PddpmInputError, match="no split sheets IXI_<split>.csv"):
            pl.split_sheets(tmp_path, "ixi")
        return
    with pytest.raises(PddpmInputError, match=match):
        pl.files(root, "ixi")
