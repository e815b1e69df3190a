"""Slicing (docs/spec.md section 3): each step on synthetic volumes with independently computed expectations,
the orientation on an asymmetric volume, the split file format, and the two rules run by snakemake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from pddpm.errors import PddpmInputError
from pddpm.io import save_nifti
from pddpm.slices import (
    assemble_split,
    build_split,
    crop_or_pad,
    curvature_flow,
    load_split,
    load_subject,
    process_subject,
    reorient,
    resample,
    rescale_percentiles,
    save_split,
    save_subject,
)

REPO = Path(__file__).resolve().parents[1]
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # the SRI24 / BraTS voxel order


def _coded(shape):
    """Every voxel holds its own index: i * 10000 + j * 100 + k + 1 (0 is left for padding)."""
    i, j, k = np.indices(shape)
    return (i * 10000 + j * 100 + k + 1).astype(np.float32)


# --- crop / pad ---------------------------------------------------------------------------------------

def test_crop_larger_volume_keeps_the_centre_larger_half_cut_at_the_start():
    vol = _coded((9, 8, 7))
    out = crop_or_pad(vol, (4, 8, 4))
    # 9 -> 4: cut 3 at the start and 2 at the end (torchio's ceil/floor); 7 -> 4: cut 2 and 1
    assert out.shape == (4, 8, 4)
    np.testing.assert_array_equal(out[:, 0, 0], [30003, 40003, 50003, 60003])
    np.testing.assert_array_equal(out[0, 0, :], [30003, 30004, 30005, 30006])


def test_pad_smaller_volume_with_zeros_larger_half_at_the_start():
    vol = _coded((3, 4, 2))
    out = crop_or_pad(vol, (6, 4, 3))
    assert out.shape == (6, 4, 3)
    # 3 -> 6: 2 zero planes before, 1 after; 2 -> 3: 1 before, 0 after
    np.testing.assert_array_equal(out[:, 0, 1], [0, 0, 1, 10001, 20001, 0])
    np.testing.assert_array_equal(out[2, 0, :], [0, 1, 2])
    assert out.sum() == vol.sum()


# --- percentiles --------------------------------------------------------------------------------------

def test_rescale_uses_percentiles_inside_the_mask_only():
    vol = np.zeros((11, 11, 11), np.float32)
    mask = np.zeros(vol.shape, bool)
    mask[:, :, 0] = True  # 121 voxels inside the brain with values 0..120
    vol[mask] = np.arange(121)
    vol[5, 5, 5] = 5000.0  # bright skull remnant outside the mask: must not move the percentiles
    vol[6, 6, 6] = -300.0
    out = rescale_percentiles(vol, mask, (1, 99))
    # percentile p of 0..120 (linear interpolation) is 1.2 * p
    lo, hi = 1.2, 118.8
    np.testing.assert_allclose(out[mask], np.clip((np.arange(121) - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert out[5, 5, 5] == 1.0 and out[6, 6, 6] == 0.0 and out[0, 0, 5] == 0.0
    assert out.min() == 0.0 and out.max() == 1.0


def test_rescale_rejects_empty_mask_and_flat_brain():
    vol = np.ones((4, 4, 4), np.float32)
    with pytest.raises(PddpmInputError, match="mask is empty"):
        rescale_percentiles(vol, np.zeros(vol.shape, bool), name="sub01_t2.nii.gz")
    with pytest.raises(PddpmInputError, match="constant"):
        rescale_percentiles(vol, np.ones(vol.shape, bool))


# --- resampling ---------------------------------------------------------------------------------------

def test_nearest_downsampling_picks_the_voxel_after_each_pair():
    labels = _coded((8, 6, 4))
    out = resample(labels.astype(np.uint8) * 0 + (labels % 7).astype(np.uint8), [2, 2, 2], 4.0, label=True)
    # output voxel n is centred at input index 2n + 0.5; ITK's nearest rounds half up -> 2n + 1
    np.testing.assert_array_equal(out, (labels % 7).astype(np.uint8)[1::2, 1::2, 1::2])


def test_bspline_downsampling_reproduces_a_linear_ramp_in_the_interior():
    i, j, k = np.indices((40, 40, 40)).astype(np.float32)
    ramp = 0.5 * i + 0.25 * j - 0.1 * k
    out = resample(ramp, [1, 1, 1], 2.0, label=False)
    assert out.shape == (20, 20, 20)
    n = np.arange(20) * 2 + 0.5  # input coordinate of each output voxel centre
    expect = 0.5 * n[:, None, None] + 0.25 * n[None, :, None] - 0.1 * n[None, None, :]
    # cubic B-splines reproduce linear functions exactly; the mirrored border's error decays by ~0.27
    # per voxel, so compare 8 input voxels away from it
    np.testing.assert_allclose(out[4:-4, 4:-4, 4:-4], expect[4:-4, 4:-4, 4:-4], atol=1e-4)


# --- curvature flow -----------------------------------------------------------------------------------

def test_curvature_flow_matches_the_original_reader_and_preserves_edges(tmp_path):
    rng = np.random.default_rng(0)
    vol = np.zeros((24, 24, 24), np.float32)
    vol[:, :12] = 100.0
    noisy = vol + rng.normal(0, 5, vol.shape).astype(np.float32)
    save_nifti(noisy, LPS, tmp_path / "t2.nii.gz")
    ours = curvature_flow(reorient(nib.load(tmp_path / "t2.nii.gz"))[0], [1, 1, 1])
    # the original: sitk.ReadImage(float32) -> CurvatureFlow(0.125, 3) -> GetArrayFromImage.transpose(2, 1, 0)
    orig = sitk.CurvatureFlow(sitk.ReadImage(str(tmp_path / "t2.nii.gz"), sitk.sitkFloat32), timeStep=0.125,
                              numberOfIterations=3)
    np.testing.assert_allclose(ours, sitk.GetArrayFromImage(orig).transpose(2, 1, 0), atol=1e-4)
    assert (ours - vol)[:, 2:10].std() < 0.8 * (noisy - vol)[:, 2:10].std()  # smoothed
    assert ours[:, 10].mean() - ours[:, 13].mean() > 90  # the edge stays sharp
    np.testing.assert_array_equal(curvature_flow(noisy, [1, 1, 1], iterations=0), noisy)


# --- orientation --------------------------------------------------------------------------------------

def _asymmetric_head(shape=(40, 44, 30)):
    """A brain box with a bright marker at the patient's left, anterior, superior corner, for voxel axes
    i -> left, j -> anterior, k -> superior (axis codes L, A, S) at 2 mm."""
    vol = np.zeros(shape, np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[4:-4, 4:-4, 3:-3] = 1
    vol[mask > 0] = 50.0 + np.linspace(0, 10, mask.sum())
    vol[-10:-4, -10:-4, -9:-3] = 200.0  # high i = left, high j = anterior, high k = superior
    return vol, mask


@pytest.fixture
def stored_heads(tmp_path):
    """One asymmetric head written in three voxel orders: LPS (as SRI24), RAS, and a permuted PIR."""
    vol, mask = _asymmetric_head()
    base = {"t2": vol, "mask": mask}
    out = {}
    for codes in (("L", "P", "S"), ("R", "A", "S"), ("P", "I", "R")):
        name = "".join(codes)
        paths = {}
        for key, arr in base.items():
            img = nib.Nifti1Image(arr, np.diag([-2.0, 2.0, 2.0, 1.0]))  # L, A, S as _asymmetric_head
            ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(nib.aff2axcodes(img.affine)),
                                                   nib.orientations.axcodes2ornt(codes))
            img = img.as_reoriented(ornt)
            assert nib.aff2axcodes(img.affine) == codes
            paths[key] = save_nifti(np.asanyarray(img.dataobj), img.affine, tmp_path / f"{name}_{key}.nii.gz")
        out[name] = paths
    return out


def test_orientation_is_the_original_voxel_order_whatever_the_storage(stored_heads):
    # percentiles 0..100: only the marker reaches the top of the range
    kw = dict(fov_mm=(96, 96, 64), target_spacing_mm=4.0, percentiles=(0, 100))
    res = {name: process_subject(p["t2"], p["mask"], **kw) for name, p in stored_heads.items()}
    for name in ("RAS", "PIR"):
        np.testing.assert_allclose(res[name]["image"], res["LPS"]["image"], atol=1e-5)
        np.testing.assert_array_equal(res[name]["mask"], res["LPS"]["mask"])
    # where the marker lands, from anatomy alone: H runs right -> left, W anterior -> posterior,
    # Z inferior -> superior, so left/anterior/superior = high H, low W, high Z
    img = res["LPS"]["image"]
    z, h, w = np.argwhere(img > 0.95).mean(axis=0)
    Z, H, W = img.shape
    assert z > Z / 2 and h > H / 2 and w < W / 2


def test_lps_files_give_exactly_the_arrays_the_original_reader_gives(stored_heads):
    p = stored_heads["LPS"]
    out = process_subject(p["t2"], p["mask"], fov_mm=(80, 88, 60), target_spacing_mm=2.0, iterations=0,
                          percentiles=(0, 100))
    # the original: SimpleITK array transposed to (i, j, k); slices along the last axis
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(p["t2"]), sitk.sitkFloat32)).transpose(2, 1, 0)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(p["mask"]))).transpose(2, 1, 0) > 0
    lo, hi = raw[mask].min(), raw[mask].max()
    expect = np.clip((raw - lo) / (hi - lo), 0, 1).transpose(2, 0, 1)
    np.testing.assert_allclose(out["image"], expect, atol=1e-6)


# --- one subject end to end ---------------------------------------------------------------------------

def _write_subject(tmp_path, shape, *, seg=True, spacing=2.0, name="s", seed=1):
    rng = np.random.default_rng(seed)
    vol = rng.random(shape).astype(np.float32) * 100
    mask = np.zeros(shape, np.uint8)
    mask[2:-2, 2:-2, 2:-2] = 1
    aff = LPS @ np.diag([spacing, spacing, spacing, 1.0])
    paths = {"t2": save_nifti(vol * mask, aff, tmp_path / f"{name}_t2.nii.gz"),
             "mask": save_nifti(mask, aff, tmp_path / f"{name}_mask.nii.gz")}
    if seg:
        s = np.zeros(shape, np.int16)
        s[shape[0] // 2 - 3:shape[0] // 2 + 3, 10:16, shape[2] // 2:shape[2] // 2 + 4] = 4  # BraTS label 4
        paths["seg"] = save_nifti(s, aff, tmp_path / f"{name}_seg.nii.gz")
    return paths


@pytest.mark.parametrize("shape", [(110, 120, 70), (40, 36, 30)])  # larger and smaller than the FOV
def test_subject_on_the_model_grid(tmp_path, shape):
    p = _write_subject(tmp_path, shape)
    out = process_subject(p["t2"], p["mask"], p["seg"], fov_mm=(192, 192, 100), target_spacing_mm=4.0,
                          clip_output=True)
    assert out["image"].shape == out["mask"].shape == out["seg"].shape == (25, 48, 48)
    assert out["image"].dtype == np.float32 and out["mask"].dtype == out["seg"].dtype == np.uint8
    assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
    assert set(np.unique(out["seg"])) == {0, 1}  # label 4 binarised
    if shape[0] > 96:  # cropped inside the brain box [2:-2]: the whole field of view is brain
        assert out["mask"].all()
    else:  # padded to 96 x 96 x 50 (28, 30, 10 voxels before), then every 2nd voxel from index 1
        expect = np.zeros((96, 96, 50), np.uint8)
        expect[28 + 2:28 + 38, 30 + 2:30 + 34, 10 + 2:10 + 28] = 1
        np.testing.assert_array_equal(out["mask"], expect[1::2, 1::2, 1::2].transpose(2, 0, 1))
        assert np.abs(out["image"][:, 0, :]).max() < 1e-6  # only the B-spline tail of the brain edge


def test_bspline_overshoot_is_kept_by_default_as_the_original(tmp_path):
    # random voxels in a box with a hard edge: the cubic B-spline over- and undershoots [0, 1]
    p = _write_subject(tmp_path, (60, 60, 40))
    kept = process_subject(p["t2"], p["mask"], p["seg"], fov_mm=(96, 96, 64), target_spacing_mm=4.0)
    clipped = process_subject(p["t2"], p["mask"], p["seg"], fov_mm=(96, 96, 64), target_spacing_mm=4.0,
                              clip_output=True)
    assert kept["image"].min() < -0.01 and kept["image"].max() > 1.01
    np.testing.assert_array_equal(clipped["image"], np.clip(kept["image"], 0, 1))
    np.testing.assert_array_equal(clipped["mask"], kept["mask"])
    from pddpm.config import defaults

    assert defaults("slices", "clip_output") is False


def test_missing_seg_gives_zeros_and_bad_grids_are_named(tmp_path):
    p = _write_subject(tmp_path, (50, 50, 30), seg=False)
    out = process_subject(p["t2"], p["mask"], None, fov_mm=(96, 96, 60), target_spacing_mm=4.0)
    assert out["seg"].sum() == 0
    save_nifti(np.ones((50, 50, 31), np.uint8), np.diag([-2.0, -2, 2, 1]), tmp_path / "wrong_mask.nii.gz")
    with pytest.raises(PddpmInputError, match=r"wrong_mask.nii.gz: shape .* differs from its image"):
        process_subject(p["t2"], tmp_path / "wrong_mask.nii.gz", fov_mm=(96, 96, 60), target_spacing_mm=4.0)


# --- the split file -----------------------------------------------------------------------------------

def test_split_file_roundtrip_and_memory_map(tmp_path):
    p = _write_subject(tmp_path, (60, 60, 40))
    rows = [{"img_name": f"sub{i}", "label": 1, "img_path": p["t2"], "mask_path": p["mask"],
             "seg_path": p["seg"] if i else ""} for i in range(3)]
    arrays = build_split(rows, fov_mm=(96, 96, 64), target_spacing_mm=4.0)
    path = save_split(arrays, tmp_path / "ds_test.npz")
    got = load_split(path)
    assert got["image"].dtype == np.float16 and got["image"].shape == (3, 16, 24, 24)
    assert got["mask"].dtype == np.uint8 and got["seg"].dtype == np.uint8
    assert list(got["subjects"]) == ["sub0", "sub1", "sub2"] and list(got["label"]) == [1, 1, 1]
    assert got["spacing_mm"] == 4.0 and list(got["fov_mm"]) == [96, 96, 64] and got["orientation"] == "LPS"
    assert got["seg"][0].sum() == 0 and got["seg"][1].sum() > 0
    mm = load_split(path, mmap=True)
    assert isinstance(mm["image"], np.memmap)
    for key in ("image", "mask", "seg"):
        np.testing.assert_array_equal(mm[key], got[key])
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary


def _subjects(tmp_path, n=5):
    """Sheet rows of `n` different subjects; the second has no segmentation, shapes differ."""
    rows = []
    for i in range(n):
        p = _write_subject(tmp_path, (56 + 2 * i, 60 - i, 40 + i), seg=i != 1, name=f"sub{i}", seed=i)
        rows.append({"img_name": f"sub{i}", "label": i % 2, "img_path": p["t2"], "mask_path": p["mask"],
                     "seg_path": p.get("seg", "")})
    return rows


@pytest.mark.parametrize("clip", [False, True])
def test_split_assembled_from_subject_files_equals_slicing_per_split(tmp_path, clip):
    """Each subject sliced once, then split files assembled from the subject files: the same arrays, bit
    for bit, as slicing each split's subjects for that split, after writing and reading too."""
    rows = _subjects(tmp_path)
    settings = {"fov_mm": (96, 96, 64), "target_spacing_mm": 4.0, "clip_output": clip}
    files = {}
    for r in rows:
        vol = process_subject(r["img_path"], r["mask_path"], r["seg_path"] or None, **settings)
        files[r["img_name"]] = save_subject(vol, tmp_path / "subjects" / f"{r['img_name']}.npz",
                                            fov_mm=settings["fov_mm"], target_spacing_mm=4.0)
    for name, part in (("train", [rows[0], rows[2], rows[1], rows[4]]), ("val", rows[3:4]), ("test", rows[::-1])):
        want = build_split(part, **settings)
        got = assemble_split(part, files)
        assert list(got) == list(want)  # same keys in the same order
        for key in want:
            assert got[key].dtype == want[key].dtype, key
            np.testing.assert_array_equal(got[key], want[key], strict=True)
        want_file = load_split(save_split(want, tmp_path / f"per_split_{name}.npz"))
        got_file = load_split(save_split(got, tmp_path / f"assembled_{name}.npz"))
        for key in want_file:
            assert np.asarray(got_file[key]).tobytes() == np.asarray(want_file[key]).tobytes(), key
    sub = load_subject(files["sub1"])
    assert sub["image"].dtype == np.float16 and sub["seg"].sum() == 0 and sub["spacing_mm"] == 4.0


def test_assembly_names_missing_subjects_and_mixed_grids(tmp_path):
    rows = _subjects(tmp_path, 2)
    files = {}
    for r, spacing in zip(rows, (4.0, 3.0), strict=True):
        vol = process_subject(r["img_path"], r["mask_path"], r["seg_path"] or None, fov_mm=(96, 96, 64),
                              target_spacing_mm=spacing)
        files[r["img_name"]] = save_subject(vol, tmp_path / f"{r['img_name']}.npz", fov_mm=(96, 96, 64),
                                            target_spacing_mm=spacing)
    with pytest.raises(PddpmInputError, match="without a slice file: ghost"):
        assemble_split([*rows, {"img_name": "ghost", "label": 0}], files)
    with pytest.raises(PddpmInputError, match="sub1.npz: sliced with spacing"):
        assemble_split(rows, files)
    (tmp_path / "broken.npz").write_bytes(b"nope")
    with pytest.raises(PddpmInputError, match="broken.npz: not a readable subject slice file"):
        assemble_split(rows[:1], {"sub0": tmp_path / "broken.npz"})


def test_broken_split_files_name_the_file(tmp_path):
    bad = tmp_path / "x_val.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(PddpmInputError, match="x_val.npz: not a readable split file"):
        load_split(bad)
    np.savez(tmp_path / "y_val.npz", image=np.zeros((1, 2, 2, 2), np.float16))
    with pytest.raises(PddpmInputError, match="lacks mask"):
        load_split(tmp_path / "y_val.npz")
    with pytest.raises(PddpmInputError, match="run the `slices` rule"):
        load_split(tmp_path / "z.npz")


# --- the rules ----------------------------------------------------------------------------------------

@pytest.mark.workflow
def test_splits_and_slices_rules(tmp_path):
    """The two rules on the tiny config, with stand-in preprocessed files (the preprocessing rules are
    someone else's and slow): sheets, defects tables and split files appear as the contract says."""
    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "Snakefile").write_text(
        "from snakemake.utils import validate\n"
        f"validate(config, '{REPO}/schemas/config.schema.yaml')\n"
        # The slicing rules pick a data set's split source with rules/helpers/data.smk's functions.
        f"include: '{REPO}/rules/common.smk'\ninclude: '{REPO}/rules/helpers/data.smk'\n"
        f"include: '{REPO}/rules/slices.smk'\n"
        "rule all:\n    input: TARGETS\n")
    from pddpm.demo import subject_ids
    for ds, c in config["datasets"].items():
        for sub in subject_ids(ds, c["n_subjects"]):
            d = tmp_path / "results/preprocess" / ds / "5_n4"
            d.mkdir(parents=True, exist_ok=True)
            p = _write_subject(d, (50, 56, 40), seg=True)
            for key, path in p.items():
                path.rename(d / f"{sub}_{key}.nii.gz")
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(tmp_path / "Snakefile"), "-d",
           str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    res = tmp_path / "results"
    for ds in config["datasets"]:
        assert (res / f"splits/{ds}_defects.tsv").exists()
    subs = {s: load_split(res / f"slices/demo_ixi_{s}.npz")["subjects"] for s in ("train_fold0", "val_fold0", "test")}
    assert sorted(np.concatenate(list(subs.values()))) == subject_ids("demo_ixi", 6)
    brats = load_split(res / "slices/demo_brats_val.npz")
    assert brats["image"].shape[1:] == (25, 48, 48) and list(brats["label"]) == [1]
    for ds in config["datasets"]:  # one preview figure per data set for the report
        assert (res / f"slices/preview/{ds}_test.png").read_bytes()[:4] == b"\x89PNG"
    # each subject sliced once, into its own file, whatever the splits it is in
    for ds, c in config["datasets"].items():
        assert sorted(p.stem for p in (res / "slices/subjects" / ds).glob("*.npz")) == subject_ids(ds, c["n_subjects"])
    assert (res / "logs/slice_subject/demo_ixi").is_dir()

    # a changed subject is re-sliced alone; only its data set's split files are reassembled
    changed = tmp_path / "results/preprocess/demo_ixi/5_n4" / f"{subject_ids('demo_ixi', 6)[0]}_t2.nii.gz"
    img = nib.load(changed)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj) * 1.5 + 1, img.affine), changed)
    dry = subprocess.run([*cmd, "rules", "-n"], capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr[-3000:]
    planned = {}
    for line in (dry.stdout + dry.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            planned[parts[0]] = int(parts[1])
    assert planned["slice_subject"] == 1 and planned["slices"] == 3, planned  # train, val, test of demo_ixi
    # the sheets of demo_ixi are rechecked too (their job reads the files), cheaply; nothing else runs
    assert set(planned) <= {"slice_subject", "slices", "slices_preview", "splits", "split_defects", "all"}, planned


@pytest.mark.workflow
def test_authors_layout_enters_at_splits(tmp_path):
    """A data set in the authors' preprocessed layout: their sheets (t1-named, with a planted duplicate
    and a train/test leak) are read, cleaned and reported, and sliced from the files in place."""
    root = tmp_path / "Data"
    ixi = [f"IXI{i:03d}-Guys-{1000 + i}" for i in range(6)]
    ms = [f"patient{i:02d}" for i in range(3)]
    for kind_dir, subs, keys in (("Train/ixi", ixi, ("t2", "mask")), ("Test/MSLUB", ms, ("t2", "mask", "seg"))):
        for sub in subs:
            p = _write_subject(tmp_path, (50, 56, 40), seg="seg" in keys)
            for key in keys:
                (root / kind_dir / key).mkdir(parents=True, exist_ok=True)
                p[key].rename(root / kind_dir / key / f"{sub}_{key}.nii.gz")
    (root / "splits").mkdir()

    def sheet(name, subs, kind_dir, label):
        rows = [f"{n},{s},40,F,{label},{kind_dir}/t1/{s}_t1.nii.gz,{kind_dir}/mask/{s}_mask.nii.gz,"
                + (f"{kind_dir}/seg/{s}_seg.nii.gz" if label else "") for n, s in enumerate(subs)]
        (root / "splits" / name).write_text(",img_name,age,sex,label,img_path,mask_path,seg_path\n"
                                            + "\n".join(rows) + "\n")

    sheet("IXI_train_fold0.csv", ixi[:4] + [ixi[1], ixi[5]], "Train/ixi", 0)  # duplicate + leak
    sheet("IXI_val_fold0.csv", ixi[4:5], "Train/ixi", 0)
    sheet("IXI_test.csv", ixi[5:], "Train/ixi", 0)
    sheet("MSLUB_val.csv", ms[:1], "Test/MSLUB", 1)
    sheet("MSLUB_test.csv", ms[1:], "Test/MSLUB", 1)

    config = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    config["datasets"] = {
        "ixi": {"source": "preprocessed", "kind": "ixi", "role": "healthy", "path": str(tmp_path)},
        "mslub": {"source": "preprocessed", "kind": "mslub", "role": "anomalous", "path": str(root)}}
    config["train_dataset"] = "ixi"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "Snakefile").write_text(
        "from snakemake.utils import validate\n"
        f"validate(config, '{REPO}/schemas/config.schema.yaml')\n"
        f"include: '{REPO}/rules/common.smk'\ninclude: '{REPO}/rules/data.smk'\n"
        f"include: '{REPO}/rules/slices.smk'\n"
        "rule all:\n    input: TARGETS\n")
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(tmp_path / "Snakefile"), "-d",
           str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    res = tmp_path / "results"
    defects = (res / "splits/ixi_defects.tsv").read_text().splitlines()
    assert len(defects) == 3 and {d.split("\t")[2] for d in defects[1:]} == {"duplicate", "leakage"}
    train = load_split(res / "slices/ixi_train_fold0.npz")
    assert list(train["subjects"]) == ixi[:4] and train["seg"].sum() == 0  # IXI has no segmentation
    sheet_text = (res / "splits/ixi_test.csv").read_text()
    assert f"Train/ixi/t2/{ixi[5]}_t2.nii.gz" in sheet_text and "/t1/" not in sheet_text
    ms_test = load_split(res / "slices/mslub_test.npz")
    assert list(ms_test["subjects"]) == ms[1:] and ms_test["seg"].sum() > 0 and list(ms_test["label"]) == [1, 1]
