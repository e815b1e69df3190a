"""Converters of the real sources on fixture archives in their real naming, and their bad inputs."""

from __future__ import annotations

import gzip
import io
import logging
import subprocess
import tarfile
import zipfile

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from data_fixtures import (
    MSLUB_ARCHIVES,
    MSLUB_FLAIR_GRID,
    MSLUB_RAW_GRID,
    brats_folder,
    ixi_demographics,
    ixi_tar,
    mslub_archive,
    mslub_patient,
    nifti,
    sri24_spm8_zip,
    tar_of,
    zip_of,
)
from pddpm.data import ixi, local, normalise, sri24
from pddpm.data.archives import extract
from pddpm.errors import PddpmInputError


def _raw_listing(raw):
    return sorted(p.name for p in raw.iterdir()) if raw.exists() else []


def test_ixi_tar_to_raw_with_sites_and_demographics(tmp_path):
    tar = ixi_tar(tmp_path)
    raw = tmp_path / "raw" / "ixi"
    subs = normalise.from_archives("ixi", [tar, ixi_demographics(tmp_path / "IXI.csv")], raw, "healthy")
    assert [s.subject for s in subs] == ["IXI002", "IXI012", "IXI035"]
    assert _raw_listing(raw) == ["IXI002_t2.nii.gz", "IXI012_t2.nii.gz", "IXI035_t2.nii.gz", "subjects.tsv"]
    table = pd.read_csv(raw / "subjects.tsv", sep="\t", keep_default_na=False)
    assert list(table.columns[:4]) == ["subject", "t2", "seg", "label"]
    assert table["t2"].tolist() == ["IXI002_t2.nii.gz", "IXI012_t2.nii.gz", "IXI035_t2.nii.gz"]
    assert table["seg"].tolist() == ["", "", ""] and table["label"].tolist() == [0, 0, 0]
    assert table["site"].tolist() == ["Guys", "HH", "IOP"]
    # the duplicated IXI012 row without an age loses; IXI035 is not in the sheet; IXI013 has no T2
    assert table["age"].tolist() == ["35.8", "38.78", ""]
    assert table["sex"].tolist() == ["F", "M", ""]
    # the volume is the archive's, voxel for voxel, with its affine
    img = nib.load(raw / "IXI012_t2.nii.gz")
    ref = nib.load(tmp_path / "ixi_src" / "IXI012-HH-1211-T2.nii.gz")
    np.testing.assert_array_equal(img.get_fdata(), ref.get_fdata())
    np.testing.assert_allclose(img.affine, ref.affine)


def test_ixi_reconversion_drops_stale_subjects(tmp_path):
    raw = tmp_path / "raw"
    normalise.from_archives("ixi", [ixi_tar(tmp_path)], raw, "healthy")
    (tmp_path / "ixi_src").rename(tmp_path / "old")
    tar = ixi_tar(tmp_path, ["IXI002-Guys-0828-T2.nii.gz"])
    normalise.from_archives("ixi", [tar], raw, "healthy")
    assert _raw_listing(raw) == ["IXI002_t2.nii.gz", "subjects.tsv"]


@pytest.mark.parametrize("bad_name", ["IXI002-Guys-0828-PD.nii.gz", "IXI02-Guys-0828-T2.nii.gz", "notes.txt"])
def test_ixi_unexpected_file_names_it_and_the_pattern(tmp_path, bad_name):
    src = tmp_path / "src"
    nifti(src / "IXI002-Guys-0828-T2.nii.gz")
    (src / bad_name).write_bytes(b"x")
    raw = tmp_path / "raw"
    with pytest.raises(PddpmInputError, match="IXI<nnn>-<site>-<nnnn>-T2.nii.gz") as err:
        normalise.from_archives("ixi", [tar_of(src, tmp_path / "IXI-T2.tar")], raw, "healthy")
    assert bad_name in str(err.value)
    assert _raw_listing(raw) == []  # nothing half-copied, the unpack folder is gone


def test_not_an_archive_and_truncated_archive(tmp_path):
    fake = tmp_path / "IXI-T2.tar"
    fake.write_bytes(b"<html>login required</html>" * 50)
    with pytest.raises(PddpmInputError, match="not an archive") as err:
        normalise.from_archives("ixi", [fake], tmp_path / "raw", "healthy")
    assert str(fake) in str(err.value) and "IXI-T2.tar, the IXI T2 tarball" in str(err.value)
    # a gzipped tar cut off mid-way
    src = tmp_path / "src"
    nifti(src / "IXI002-Guys-0828-T2.nii.gz", shape=(40, 40, 40))
    tar = tar_of(src, tmp_path / "full.tar")
    cut = tmp_path / "IXI-T2.tar.gz"
    cut.write_bytes(gzip.compress(tar.read_bytes())[:3000])
    with pytest.raises(PddpmInputError, match="broken or truncated") as err:
        extract(cut, tmp_path / "out")
    assert str(cut) in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.extracting").exists()


def test_zip_member_outside_is_refused(tmp_path):
    bad = tmp_path / "patient01.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../evil.nii.gz", b"x")
    with pytest.raises(PddpmInputError, match="outside"):
        extract(bad, tmp_path / "out")
    assert not (tmp_path.parent / "evil.nii.gz").exists()


def test_mslub_archives_of_five_patients_to_raw(tmp_path):
    zips = [mslub_archive(tmp_path, name) for name in MSLUB_ARCHIVES[:2]]
    raw = tmp_path / "raw"
    subs = normalise.from_archives("mslub", zips, raw, "anomalous")
    want = [f"patient{n:02d}" for n in range(1, 11)]
    assert [(s.subject, s.label) for s in subs] == [(p, 1) for p in want]
    assert _raw_listing(raw) == sorted([f"{p}_{k}.nii.gz" for p in want for k in ("seg", "t2")] + ["subjects.tsv"])
    # the co-registered T2 (FLAIR grid, like the consensus), never raw/: voxel for voxel, with its affine
    src = tmp_path / f"{MSLUB_ARCHIVES[1]}_src" / "patient07"
    for key, name in (("t2", "patient07_T2W.nii.gz"), ("seg", "patient07_consensus_gt.nii.gz")):
        img, ref = nib.load(raw / f"patient07_{key}.nii.gz"), nib.load(src / name)
        np.testing.assert_array_equal(img.get_fdata(), ref.get_fdata())
        np.testing.assert_allclose(img.affine, ref.affine)
    assert nib.load(raw / "patient07_t2.nii.gz").shape == MSLUB_FLAIR_GRID[0] != MSLUB_RAW_GRID[0]
    table = pd.read_csv(raw / "subjects.tsv", sep="\t")
    assert table["seg"].tolist() == [f"{p}_seg.nii.gz" for p in want]


def test_mslub_t2_off_the_ground_truths_grid_is_refused(tmp_path):
    z = mslub_archive(tmp_path, bad_t2="patient03")
    with pytest.raises(PddpmInputError, match="not on the voxel grid") as err:
        normalise.from_archives("mslub", [z], tmp_path / "raw", "anomalous")
    assert "patient03/patient03_T2W.nii.gz" in str(err.value)
    assert _raw_listing(tmp_path / "raw") == []


def test_mslub_only_raw_t2_is_not_used(tmp_path):
    d = mslub_patient(tmp_path / "src", "patient03")
    (d / "patient03_T2W.nii.gz").unlink()  # left: raw/patient03_T2W.nii.gz, on its own grid
    with pytest.raises(PddpmInputError, match="no co-registered T2 patient03_T2W.nii.gz") as err:
        normalise.from_archives("mslub", [zip_of(tmp_path / "src", tmp_path / "3D-MR-MS_patient01-05.zip")],
                                tmp_path / "raw", "anomalous")
    assert "raw/ lies on another grid" in str(err.value)


def test_mslub_missing_ground_truth(tmp_path):
    d = mslub_patient(tmp_path / "src", "patient03")
    (d / "patient03_consensus_gt.nii.gz").unlink()
    with pytest.raises(PddpmInputError, match="patient03_consensus_gt.nii.gz") as err:
        normalise.from_archives("mslub", [zip_of(tmp_path / "src", tmp_path / "3D-MR-MS_patient01-05.zip")],
                                tmp_path / "raw", "anomalous")
    assert "patient03_T2W.nii.gz" in str(err.value)
    assert _raw_listing(tmp_path / "raw") == []


def test_mslub_local_folder_of_unzipped_archives(tmp_path):
    for name in MSLUB_ARCHIVES[:1]:
        extract(mslub_archive(tmp_path, name), tmp_path / "MSLUB" / name.removesuffix(".zip"))
    subs = local.scan(tmp_path / "MSLUB", "mslub", "anomalous")
    assert [s.subject for s in subs] == [f"patient{n:02d}" for n in range(1, 6)]
    assert all("raw" not in s.t2.parts and s.t2.name == f"{s.subject}_T2W.nii.gz" for s in subs)


def test_brats_local_folder(tmp_path):
    root = brats_folder(tmp_path / "BraTS2021")
    (root / "BraTS2021_Training_Data_name_mapping.csv").write_text("a,b\n")
    subs = local.scan(root, "brats", "anomalous")
    assert [s.subject for s in subs] == ["BraTS2021_00000", "BraTS2021_00002"]
    assert subs[0].t2.name == "BraTS2021_00000_t2.nii.gz" and subs[0].seg.name == "BraTS2021_00000_seg.nii.gz"


def test_brats_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(PddpmInputError, match="Synapse") as err:
        local.scan(tmp_path / "nowhere", "brats", "anomalous")
    assert "BraTS2021_Training_Data.tar" in str(err.value) and str(tmp_path / "nowhere") in str(err.value)


def test_brats_case_without_seg_and_stray_file(tmp_path):
    root = brats_folder(tmp_path / "b", ids=("00000",), seg=False)
    with pytest.raises(PddpmInputError, match="BraTS2021_00000_seg.nii.gz"):
        local.scan(root, "brats", "anomalous")
    root = brats_folder(tmp_path / "c", ids=("00000",))
    nifti(root / "BraTS2021_00000" / "BraTS2021_00000_t2_copy.nii.gz")
    with pytest.raises(PddpmInputError, match="t2_copy.*expected .*BraTS2021_<nnnnn>/"):
        local.scan(root, "brats", "anomalous")


def test_local_raw_naming(tmp_path):
    for s in ("s01", "s02"):
        nifti(tmp_path / "d" / f"{s}_t2.nii.gz")
        nifti(tmp_path / "d" / f"{s}_seg.nii.gz", dtype=np.uint8)
    subs = local.scan(tmp_path / "d", "mslub", "anomalous")
    assert [(s.subject, s.label, s.seg.name) for s in subs] == [("s01", 1, "s01_seg.nii.gz"),
                                                                ("s02", 1, "s02_seg.nii.gz")]
    # the same folder as a healthy set: segmentations are not used
    assert all(s.seg is None and s.label == 0 for s in local.scan(tmp_path / "d", "ixi", "healthy"))


@pytest.mark.parametrize("case", ["extra", "bad_id", "no_seg", "empty", "missing"])
def test_local_bad_folders(tmp_path, case):
    d = tmp_path / "d"
    nifti(d / "s01_t2.nii.gz")
    nifti(d / "s01_seg.nii.gz")
    if case == "extra":
        nifti(d / "s02_flair.nii.gz")
        match = "s02_flair.nii.gz.*<subject>_t2.nii.gz"
    elif case == "bad_id":
        nifti(d / "s 02_t2.nii.gz")
        match = "'s 02'"
    elif case == "no_seg":
        nifti(d / "s03_t2.nii.gz")
        match = r"without segmentation for \['s03'\]"
    elif case == "empty":
        for p in d.iterdir():
            p.unlink()
        match = "no subject files found"
    else:
        d = tmp_path / "nowhere"
        match = "folder not found"
    with pytest.raises(PddpmInputError, match=match) as err:
        local.scan(d, "mslub", "anomalous")
    assert str(d) in str(err.value)


def _git_hash_object(path):
    # git's own implementation, to check ours against
    return subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()


def test_sri24_spm8_archive_to_atlas(tmp_path, caplog):
    archive = sri24_spm8_zip(tmp_path)
    folder = extract(archive, tmp_path / "x")
    src = tmp_path / "sri24_spm8_src" / "templates"
    out = {k: tmp_path / "atlas" / f"{k}.nii.gz" for k in ("t1", "t2", "mask")}
    members = {"templates/T1_brain.nii": {"git_sha1": _git_hash_object(src / "T1_brain.nii")},
               "templates/T2_brain.nii": {"git_sha1": "0" * 40}}
    with caplog.at_level(logging.INFO, logger="pddpm.data.sri24"):
        info = sri24.convert(folder, out, members)
    # the skull-stripped templates, unchanged (not the whole-head T1.nii / T2.nii)
    for key, name in (("t1", "T1_brain.nii"), ("t2", "T2_brain.nii")):
        img, ref = nib.load(out[key]), nib.load(src / name)
        np.testing.assert_array_equal(img.get_fdata(), ref.get_fdata())
        np.testing.assert_allclose(img.affine, ref.affine)
        assert img.get_data_dtype() == np.float32
    # the mask: T1_brain's non-zero region with the dark voxel inside filled; image x mask = T1_brain
    t1 = nib.load(src / "T1_brain.nii").get_fdata()
    mask = nib.load(out["mask"]).get_fdata()
    assert nib.load(out["mask"]).get_data_dtype() == np.uint8
    centre = tuple((np.array(t1.shape) - 1) // 2)  # where the fixture put the dark voxel
    assert t1[centre] == 0 and mask[centre] == 1 and mask.sum() == (t1 != 0).sum() + 1
    np.testing.assert_array_equal(t1 * mask, t1)
    assert info["mask_dice_t2"] == 1.0
    assert info["identical_to_original"] == {"templates/T1_brain.nii": True, "templates/T2_brain.nii": False}
    assert "T2_brain.nii: git blob" in caplog.text and "differs from the original" in caplog.text
    assert sri24.git_blob_sha1(src / "T2_brain.nii") == _git_hash_object(src / "T2_brain.nii")


def test_sri24_templates_that_disagree_are_refused(tmp_path):
    folder = extract(sri24_spm8_zip(tmp_path, t2_mask_shrink=2), tmp_path / "x")
    out = {k: tmp_path / "atlas" / f"{k}.nii.gz" for k in ("t1", "t2", "mask")}
    with pytest.raises(PddpmInputError, match=r"agrees with T2_brain's only at Dice 0\.\d+"):
        sri24.convert(folder, out)
    assert not (tmp_path / "atlas").exists()
    for p in folder.rglob("T2_brain.nii"):
        p.unlink()
    with pytest.raises(PddpmInputError, match=r"no atlas \['t2'\].*templates/T2_brain.nii"):
        sri24.find(folder)


def test_ixi_demographics_from_real_xls(tmp_path):
    xlwt = pytest.importorskip("xlwt")  # test extra: writes the legacy .xls format IXI.xls uses
    book = xlwt.Workbook()
    sheet = book.add_sheet("Table")
    rows = [("IXI_ID", "SEX_ID", "HEIGHT", "AGE"), (2, 2, 164, 35.8), (12, 1, 175, 38.78), (13, 1, 180, 46.7)]
    for r, row in enumerate(rows):
        for c, v in enumerate(row):
            sheet.write(r, c, v)
    book.save(str(tmp_path / "IXI.xls"))
    demo = ixi.read_demographics(tmp_path / "IXI.xls")
    assert demo["subject"].tolist() == ["IXI002", "IXI012", "IXI013"]
    assert demo["sex"].tolist() == ["F", "M", "M"] and demo["age"].tolist() == [35.8, 38.78, 46.7]
    (tmp_path / "bad.xls").write_bytes(b"\xd0\xcf\x11\xe0" + b"\0" * 600)
    with pytest.raises(PddpmInputError, match="bad.xls: not a readable demographics sheet"):
        ixi.read_demographics(tmp_path / "bad.xls")


def test_tar_member_outside_is_refused(tmp_path):
    bad = tmp_path / "IXI-T2.tar"
    with tarfile.open(bad, "w") as tf:
        info = tarfile.TarInfo("../IXI002-Guys-0828-T2.nii.gz")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(PddpmInputError, match="unsafe member refused.*outside"):
        extract(bad, tmp_path / "deep" / "out")
    assert not (tmp_path / "deep" / "IXI002-Guys-0828-T2.nii.gz").exists()
    assert not (tmp_path / "deep" / "out").exists()
