"""The demo cohort generator: determinism, grids, lesions, stored ground truth, subjects.tsv, rules."""

from __future__ import annotations

import csv

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from pddpm.demo import anatomy, check_datasets, cohort, subject_ids, subject_index
from pddpm.demo.lesions import ENHANCING, NECROTIC, OEDEMA
from pddpm.demo.preview import plot_cohort
from pddpm.errors import PddpmConfigError
from pddpm.io import load_nifti, save_nifti
from workflow_utils import planned_jobs, snakemake, write_config


@pytest.fixture(scope="module")
def template():
    return anatomy.load_template()


@pytest.fixture(scope="module")
def ref(template, tmp_path_factory):
    # through the npz the workflow uses, so its quantisation is what the tests see
    path = tmp_path_factory.mktemp("anatomy") / "anatomy.npz"
    anatomy.save_reference(anatomy.build_reference(template), path)
    return anatomy.load_reference(path)


@pytest.fixture(scope="module")
def atlas(template):
    return anatomy.atlas_images(template)


@pytest.fixture(scope="module")
def subjects(ref):
    """One subject of each kind on its real grid (seed as the workflow derives it)."""
    return {kind: cohort.make_subject(ref, kind, cohort.subject_seed(42, f"demo_{kind}", 1))
            for kind in cohort.KINDS}


def coarse_grid(kind):
    """A 3 mm version of the kind's grid: same orientation and field of view, 1/20 of the voxels."""
    if kind == "brats":
        shape, aff = anatomy.ATLAS_SHAPE, anatomy.ATLAS_AFFINE
    else:
        shape, aff = cohort.native_affine(kind)
    factor = 3.0 / np.abs(np.diag(aff)[:3])
    new_shape = tuple(int(n) for n in np.ceil(np.array(shape) / factor))
    new = aff.copy()
    new[:3, :3] = aff[:3, :3] @ np.diag(factor)
    new[:3, 3] = aff[:3, 3] + aff[:3, :3] @ ((factor - 1) / 2)
    return new_shape, new


def world(affine, ijk):
    return affine[:3, :3] @ ijk.T + affine[:3, 3:4]


def test_subject_ids_and_their_inverse():
    assert subject_ids("demo_ixi", 3) == ["demo_ixi_000", "demo_ixi_001", "demo_ixi_002"]
    assert [subject_index("demo_ixi", s) for s in subject_ids("demo_ixi", 12)] == list(range(12))
    with pytest.raises(ValueError, match="demo_brats_NNN"):
        subject_index("demo_brats", "demo_ixi_001")


def test_demo_data_set_config_is_checked():
    ok = {"a": {"source": "demo", "kind": "ixi", "role": "healthy", "n_subjects": 2},
          "b": {"source": "local", "kind": "ixi", "role": "healthy"}}
    assert check_datasets(ok) == ["a"]
    with pytest.raises(PddpmConfigError, match="datasets.c: .*kind 'mslub' is anomalous; set role: anomalous"):
        check_datasets({**ok, "c": {"source": "demo", "kind": "mslub", "role": "healthy", "n_subjects": 2}})
    with pytest.raises(PddpmConfigError, match="datasets.d: source demo needs n_subjects"):
        check_datasets({"d": {"source": "demo", "kind": "brats", "role": "anomalous"}})


def test_seed_depends_on_cohort_seed_data_set_and_index_only():
    state = cohort.subject_seed(42, "demo_ixi", 3).generate_state(4)
    assert (cohort.subject_seed(42, "demo_ixi", 3).generate_state(4) == state).all()
    for other in [(43, "demo_ixi", 3), (42, "demo_mslub", 3), (42, "demo_ixi", 4)]:
        assert (cohort.subject_seed(*other).generate_state(4) != state).any()


@pytest.mark.parametrize("kind", cohort.KINDS)
def test_same_seed_same_subject_other_seed_differs(ref, kind, tmp_path):
    grid = coarse_grid(kind)
    a = cohort.make_subject(ref, kind, cohort.subject_seed(1, "d", 0), grid)
    b = cohort.make_subject(ref, kind, cohort.subject_seed(1, "d", 0), grid)
    c = cohort.make_subject(ref, kind, cohort.subject_seed(2, "d", 0), grid)
    for key in ("t2", "seg", "mask", "wm", "bias", "native_to_atlas"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    # and the files are byte-identical (gzip without timestamps), so reruns change no checksum
    pa, pb = (cohort.subject_paths(tmp_path / d, "d_000") for d in ("a", "b"))
    cohort.write_subject(a, pa)
    cohort.write_subject(b, pb)
    for key in pa:
        assert pa[key].read_bytes() == pb[key].read_bytes(), key
    assert not np.array_equal(a.t2, c.t2)
    assert not np.array_equal(a.bias, c.bias)
    if kind != "ixi":
        assert not np.array_equal(a.seg, c.seg)


def test_atlas_stand_in_grid_and_centred_brain(atlas, template):
    for key in ("t1", "t2", "mask"):
        assert atlas[key].shape == (240, 240, 155)
    mask = atlas["mask"] > 0
    assert (atlas["t2"][~mask] == 0).all() and (atlas["t2"][mask] > 0).mean() > 0.99
    assert atlas["t1"][mask].mean() > 5 * atlas["t1"][~mask].mean()
    ijk = np.argwhere(mask)
    centre = (ijk.min(0) + ijk.max(0)) / 2
    np.testing.assert_allclose(centre[:2], np.array([239, 239]) / 2, atol=1.5)
    assert ijk[:, 2].min() == 0 and ijk[:, 2].max() == 154   # the whole brain, bottom to top
    # T2-like contrast, CSF > GM > WM, read where the template is sure of the tissue
    tissue = {k: anatomy.place(template[k], template["affine"], anatomy.ATLAS_SHAPE, anatomy.ATLAS_AFFINE)
              for k in ("csf", "gm", "wm")}
    level = {k: np.median(atlas["t2"][v > 0.9]) for k, v in tissue.items()}
    assert level["csf"] > level["gm"] > level["wm"] > 0
    # 1 mm RAS, and world (0, -17, 5) mm (the brain's centre) near the grid's centre
    np.testing.assert_allclose(np.abs(np.diag(anatomy.ATLAS_AFFINE)), [1, 1, 1, 1])
    centre_vox = np.linalg.solve(anatomy.ATLAS_AFFINE, [0, -17, 5, 1])[:3]
    np.testing.assert_allclose(centre_vox, [119.5, 119.5, 77], atol=1.5)


def test_below_the_brain_a_skull_base_and_neck_unlike_brain_tissue(ref):
    """A brain-grey block under the brain made skull-strip networks count it as brain (Dice 0.88):
    the neck must be a dark bone plate along the head envelope, then mostly dark muscle."""
    rng = np.random.default_rng(3)
    w = dict(anatomy.T2_WEIGHTS)
    img = cohort._head_image(ref, rng, w, with_head=True)
    neck = ref.head == anatomy.HEAD_NECK
    assert neck.sum() > 100_000  # a real neck column (about 0.1 l and more), not a sliver
    plate = neck & (ref.neck_dist <= 4 * 4)  # the plate is >= 5 mm thick: all bone within 4 mm
    assert plate.sum() > 10_000 and img[plate].max() <= 0.08
    deep = neck & (ref.neck_dist > 12 * 4)
    assert np.median(img[deep]) < 0.7 * w["wm"]  # muscle, darker than white matter
    # structured (fat planes, air, bone), not one flat value
    assert len(np.unique(ref.neck[deep])) >= 4 and img[deep].std() > 0.1


@pytest.mark.parametrize("kind,zooms,codes", [("ixi", (0.94, 0.94, 1.2), ("L", "A", "S")),
                                              ("mslub", (1.0, 1.0, 1.3), ("L", "P", "S"))])
def test_raw_kinds_are_anisotropic_scanner_grids(subjects, kind, zooms, codes):
    s = subjects[kind]
    assert s.t2.dtype == np.float32 and s.t2.shape == cohort.NATIVE_GRIDS[kind]["shape"]
    assert nib.aff2axcodes(s.affine) == codes
    np.testing.assert_allclose(np.abs(np.diag(s.affine)[:3]), zooms)
    # a head around the brain: signal well outside the brain mask (scalp), Rician background in the air
    assert s.t2[s.mask == 0].max() > 0.4 * np.percentile(s.t2[s.mask > 0], 99)
    corner = s.t2[:8, :8, :8]
    assert corner.min() >= 0 and 0 < corner.mean() < 0.1 * s.t2[s.mask > 0].mean()
    # the pose stays within the stated ranges: rotation <= 15 deg, scale 1 +- 8 %
    lin = s.native_to_atlas[:3, :3]
    scale = 1 / np.linalg.svd(lin, compute_uv=False)
    assert ((scale > 0.919) & (scale < 1.081)).all()
    assert s.info["pose"]["angle_deg"] <= 15
    assert np.linalg.norm(s.info["pose"]["translation"]) <= 10


def test_brats_is_skull_stripped_in_atlas_space_with_a_bright_tumour(subjects):
    s = subjects["brats"]
    assert s.t2.shape == anatomy.ATLAS_SHAPE
    np.testing.assert_array_equal(s.affine, anatomy.ATLAS_AFFINE)
    np.testing.assert_array_equal(s.native_to_atlas, np.eye(4))
    assert (s.t2[s.mask == 0] == 0).all()
    labels = set(np.unique(s.seg).tolist())
    assert labels == {0, NECROTIC, OEDEMA, ENHANCING}
    assert ((s.seg > 0) & (s.mask == 0)).sum() == 0
    flat = s.t2 / s.bias
    healthy_wm = (s.wm > 0) & (s.seg == 0)
    assert np.median(flat[s.seg == OEDEMA]) > 1.8 * np.median(flat[healthy_wm])
    assert np.median(flat[s.seg == NECROTIC]) > 2 * np.median(flat[healthy_wm])


def test_ms_lesions_are_small_white_matter_hyperintensities(subjects):
    s = subjects["mslub"]
    assert 5 <= s.info["n_lesions"] <= 30
    assert set(np.unique(s.seg).tolist()) == {0, 1}
    lesion = s.seg > 0
    assert lesion.sum() > 0 and (lesion & (s.mask == 0)).sum() == 0
    # ovoids of 3-15 mm: typical pieces are smaller than a 15 mm sphere (two may overlap)
    pieces, n = ndi.label(lesion)
    assert 1 <= n <= s.info["n_lesions"]
    vox_mm3 = float(np.prod(np.abs(np.diag(s.affine)[:3])))
    sizes = np.bincount(pieces.ravel())[1:] * vox_mm3
    assert np.median(sizes) < 4 / 3 * np.pi * 7.5**3
    # centred in white matter and clearly brighter than it
    flat = s.t2 / s.bias
    healthy_wm = (s.wm > 0) & ~lesion
    assert (s.wm[lesion] > 0).mean() > 0.5
    assert np.median(flat[lesion]) > 1.6 * np.median(flat[healthy_wm])


@pytest.mark.parametrize("kind", cohort.KINDS)
def test_native_to_atlas_maps_the_truth_mask_into_the_atlas_mask(subjects, atlas, kind):
    s = subjects[kind]
    ijk = np.argwhere(s.mask > 0)[::37]
    atlas_world = world(s.native_to_atlas, world(s.affine, ijk).T)
    vox = np.round(world(np.linalg.inv(anatomy.ATLAS_AFFINE), atlas_world.T)).astype(int)
    inside = np.all((vox >= 0) & (vox < np.array(anatomy.ATLAS_SHAPE)[:, None]), axis=0)
    hit = np.zeros(inside.shape, bool)
    hit[inside] = atlas["mask"][tuple(vox[:, inside])] > 0
    # not 100 %: the per-subject anatomical warp (a few mm) is not part of the pose
    assert hit.mean() > 0.95
    # and the wrong direction (atlas_to_native applied as if it were native_to_atlas) does not fit
    if kind != "brats":
        wrong = world(np.linalg.inv(s.native_to_atlas), world(s.affine, ijk).T)
        wvox = np.round(world(np.linalg.inv(anatomy.ATLAS_AFFINE), wrong.T)).astype(int)
        ok = np.all((wvox >= 0) & (wvox < np.array(anatomy.ATLAS_SHAPE)[:, None]), axis=0)
        miss = np.zeros(ok.shape, bool)
        miss[ok] = atlas["mask"][tuple(wvox[:, ok])] > 0
        assert miss.mean() < hit.mean() - 0.1


def test_pose_is_recoverable_by_affine_registration(ref, atlas, tmp_path):
    """The stored native_to_atlas is what a real ANTs affine registration of the (truth-masked) brain
    to the atlas finds: the pose is recoverable, and the truth has the right convention."""
    ants = pytest.importorskip("ants")
    import pandas as pd

    s = cohort.make_subject(ref, "ixi", cohort.subject_seed(42, "demo_ixi", 2), coarse_grid("ixi"))
    save_nifti(s.t2 * s.mask, s.affine, tmp_path / "brain.nii.gz")
    save_nifti(atlas["t2"], anatomy.ATLAS_AFFINE, tmp_path / "atlas.nii.gz")
    moving = ants.image_read(str(tmp_path / "brain.nii.gz"))
    fixed = ants.resample_image(ants.image_read(str(tmp_path / "atlas.nii.gz")), (3, 3, 3), False, 0)
    reg = ants.registration(fixed=fixed, moving=moving, type_of_transform="Affine", random_seed=1,
                            outprefix=str(tmp_path / "reg_"))
    # atlas brain points (ANTs physical space is LPS) sent to native space by the estimate and the truth
    ijk = np.argwhere(atlas["mask"] > 0)[::997]
    ras = world(anatomy.ATLAS_AFFINE, ijk).T
    lps = ras * [-1, -1, 1]
    est = ants.apply_transforms_to_points(3, pd.DataFrame(lps, columns=["x", "y", "z"]),
                                          reg["fwdtransforms"]).to_numpy() * [-1, -1, 1]
    true = world(np.linalg.inv(s.native_to_atlas), ras).T
    error = np.linalg.norm(est - true, axis=1).mean()
    moved = np.linalg.norm(ras - true, axis=1).mean()  # how far the pose moved them
    assert error < 2.0 and moved > 3 * error, (error, moved)


def _block_medians(image, wm, block=24):
    """Median WM intensity per block: the low-frequency shading a bias field causes."""
    meds = []
    for i in range(0, image.shape[0], block):
        for j in range(0, image.shape[1], block):
            for k in range(0, image.shape[2], block):
                sel = wm[i:i + block, j:j + block, k:k + block] > 0
                if sel.sum() > 200:
                    meds.append(np.median(image[i:i + block, j:j + block, k:k + block][sel]))
    meds = np.array(meds)
    return meds.std() / meds.mean()


@pytest.mark.parametrize("kind", ["ixi", "mslub"])
def test_bias_truth_explains_the_shading(subjects, kind):
    s = subjects[kind]
    brain_bias = s.bias[s.mask > 0]
    assert s.bias.min() >= 0.499 and s.bias.max() <= 2.001 and brain_bias.max() / brain_bias.min() > 1.15
    # pure white matter (eroded, lesion-free) is one tissue: its shading is the bias field's
    wm = ndi.binary_erosion(s.wm > 0) & (s.seg == 0)
    log_bias, raw = np.log(s.bias[wm]), np.log(s.t2[wm])
    corr_raw = np.corrcoef(raw, log_bias)[0, 1]
    corr_flat = np.corrcoef(raw - log_bias, log_bias)[0, 1]
    assert corr_raw > 0.25 and abs(corr_flat) < 0.5 * corr_raw
    assert _block_medians(s.t2 / s.bias, wm) < _block_medians(s.t2, wm)


def test_written_files_and_subjects_tsv(subjects, tmp_path):
    s = subjects["mslub"]
    paths = cohort.subject_paths(tmp_path / "demo_mslub", "demo_mslub_001")
    cohort.write_subject(s, paths)
    t2 = load_nifti(paths["t2"])
    np.testing.assert_allclose(t2.affine, s.affine, atol=1e-5)
    assert t2.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asarray(load_nifti(paths["seg"]).dataobj), s.seg)
    for key in ("mask", "wm", "bias", "lesions"):
        img = load_nifti(paths[key])
        assert img.shape == s.t2.shape and np.allclose(img.affine, s.affine, atol=1e-5)
    np.testing.assert_allclose(np.loadtxt(paths["native_to_atlas"]), s.native_to_atlas, atol=1e-9)
    np.testing.assert_allclose(load_nifti(paths["bias"]).get_fdata(), s.bias, atol=1e-4)
    assert not list(tmp_path.rglob("*.tmp*"))  # atomic writes leave no temporaries

    cohort.write_subjects_tsv(tmp_path / "a.tsv", subject_ids("demo_mslub", 2), anomalous=True)
    cohort.write_subjects_tsv(tmp_path / "h.tsv", subject_ids("demo_ixi", 2), anomalous=False)
    rows = list(csv.DictReader((tmp_path / "a.tsv").open(), delimiter="\t"))
    assert list(rows[0]) == ["subject", "t2", "seg", "label"]
    assert rows[1] == {"subject": "demo_mslub_001", "t2": "demo_mslub_001_t2.nii.gz",
                       "seg": "demo_mslub_001_seg.nii.gz", "label": "1"}
    rows = list(csv.DictReader((tmp_path / "h.tsv").open(), delimiter="\t"))
    assert rows[0] == {"subject": "demo_ixi_000", "t2": "demo_ixi_000_t2.nii.gz", "seg": "", "label": "0"}


def test_preview_figure_of_written_subjects(ref, tmp_path):
    files = {}
    for kind in ("ixi", "brats"):
        s = cohort.make_subject(ref, kind, 3, coarse_grid(kind))
        paths = cohort.subject_paths(tmp_path / kind, f"demo_{kind}_000")
        cohort.write_subject(s, paths)
        files[f"demo_{kind}"] = paths
    out = tmp_path / "fig" / "demo_cohort.png"
    plot_cohort(files, out)
    image = plt.imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 600 and image.std() > 0.05


@pytest.mark.workflow
def test_demo_stage_runs_and_reruns_only_what_changed(tmp_path):
    """The real rules: two subjects + the atlas, then what a seed change and an added subject rerun."""
    write_config(tmp_path, {"demo": {"seed": 5}, "datasets": {"demo_ixi": {"n_subjects": 2}}})
    targets = ["data/raw/demo_ixi/subjects.tsv", "resources/atlas/t2.nii.gz", "resources/atlas/mask.nii.gz"]
    snakemake(tmp_path, *targets)
    # planned_jobs puts its args after `--quiet rules`, which would swallow bare targets: an option first
    targets = ["--cores", "2", *targets]
    raw = tmp_path / "data/raw/demo_ixi"
    assert (raw / "subjects.tsv").read_text().splitlines()[2] == "demo_ixi_001\tdemo_ixi_001_t2.nii.gz\t\t0"
    for f in ("demo_ixi_001_t2.nii.gz", "truth/demo_ixi_001_mask.nii.gz", "truth/demo_ixi_001_wm.nii.gz",
              "truth/demo_ixi_001_bias.nii.gz", "truth/demo_ixi_001_native_to_atlas.txt"):
        assert (raw / f).stat().st_size > 0
    assert not (raw / "demo_ixi_001_seg.nii.gz").exists()  # healthy: no label file, like IXI
    assert load_nifti(tmp_path / "resources/atlas/t2.nii.gz").shape == (240, 240, 155)
    assert planned_jobs(tmp_path, *targets) == {}

    # one more subject: one new job and a new sheet, the existing two untouched
    write_config(tmp_path, {"demo": {"seed": 5}, "datasets": {"demo_ixi": {"n_subjects": 3}}})
    assert planned_jobs(tmp_path, *targets) == {"demo_cohort": 1, "demo_subjects_tsv": 1}
    # another cohort seed: every subject again, the atlas and the shared anatomy not
    write_config(tmp_path, {"demo": {"seed": 6}, "datasets": {"demo_ixi": {"n_subjects": 2}}})
    assert planned_jobs(tmp_path, *targets) == {"demo_cohort": 2, "demo_subjects_tsv": 1}
