"""Evaluation: post-processing, threshold search, metrics and aggregation on constructed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

import evaluate_reference
from pddpm.errors import PddpmInputError
from pddpm.evaluate import aggregate
from pddpm.evaluate.metrics import auprc, auroc, best_dice, dice, recon_error, volume_metrics
from pddpm.evaluate.postprocess import (
    anomaly_map,
    anomaly_maps_torch,
    erode_mask_slices,
    median_filter,
    remove_small_components,
    voxel_settings,
)
from pddpm.evaluate.threshold import _DiceAt, choose_threshold, exact_search, interval_search
from workflow_utils import REPO


# ---------------------------------------------------------------- metrics vs hand-computed values
def test_dice_hand_computed():
    pred = np.array([1, 1, 1, 0, 0], bool)
    gt = np.array([0, 1, 0, 1, 0], bool)
    assert dice(pred, gt) == pytest.approx(2 * 1 / (3 + 2))
    assert dice(gt, gt) == 1.0
    assert dice(~gt, gt) == 0.0


def test_dice_empty_ground_truth_as_original():
    gt = np.zeros((3, 4, 4), bool)
    assert math.isnan(dice(np.zeros_like(gt), gt))  # 0/0: undefined, skipped in the fold mean
    pred = gt.copy()
    pred[0, 0, 0] = True
    assert dice(pred, gt) == 0.0


def test_auprc_and_auroc_hand_computed():
    scores = np.array([0.9, 0.8, 0.3, 0.1])
    gt = np.array([1, 0, 1, 0])
    # AP = sum over positives of precision at their rank: 1/1 * 0.5 + 2/3 * 0.5
    assert auprc(scores, gt) == pytest.approx(0.5 + 1 / 3)
    # positive-negative pairs ranked right: (0.9>0.8), (0.9>0.1), (0.3>0.1) of 4
    assert auroc(scores, gt) == pytest.approx(0.75)


def test_metrics_match_scikit_learn_on_volumes():
    rng = np.random.default_rng(0)
    gt = np.zeros((6, 10, 10), bool)
    gt[2:4, 3:7, 3:7] = True
    scores = rng.random(gt.shape).astype(np.float32) + 0.5 * gt
    assert auprc(scores, gt) == pytest.approx(average_precision_score(gt.ravel(), scores.ravel()))
    assert auroc(scores, gt) == pytest.approx(roc_auc_score(gt.ravel(), scores.ravel()))


def test_volume_metrics_components_and_empty_gt():
    gt = np.zeros((8, 12, 12), bool)
    gt[2:6, 2:6, 2:6] = True  # 64 voxels
    amap = gt.astype(np.float32) * 0.9
    amap[7, 10, 10] = 0.9  # one isolated false-positive voxel: removed as a component of <= 7 voxels
    m = volume_metrics(amap, gt, threshold=0.5)
    assert m["dice"] == 1.0
    assert m["best_dice"] == pytest.approx(2 * 64 / (65 + 64))  # oracle: before component removal
    kept = volume_metrics(amap, gt, threshold=0.5, min_component_voxels=0)
    assert kept["dice"] == pytest.approx(2 * 64 / (65 + 64))

    empty = np.zeros_like(gt)
    e = volume_metrics(amap, empty, threshold=0.5)
    assert e["dice"] == 0.0  # something predicted, nothing there
    # undefined, as with the scikit-learn the original pinned: left out of the means
    assert math.isnan(e["auprc"]) and math.isnan(e["auroc"]) and math.isnan(e["best_dice"])
    assert math.isnan(volume_metrics(np.zeros_like(amap), empty, threshold=0.5)["dice"])


def test_maps_and_labels_on_different_grids():
    with pytest.raises(PddpmInputError, match="different grids"):
        volume_metrics(np.zeros((4, 8, 8)), np.zeros((4, 8, 9), bool), threshold=0.1)
    with pytest.raises(PddpmInputError, match="different grids"):
        choose_threshold(np.zeros((2, 4, 8, 8)), np.ones((2, 4, 8, 7)))
    with pytest.raises(PddpmInputError, match="different grids"):
        anomaly_map(np.zeros((4, 8, 8)), 0, np.ones((4, 8, 9)))


def test_recon_error():
    x = np.full((2, 3, 3), 0.5, np.float32)
    r = np.zeros_like(x)
    r[0] = 0.5
    assert recon_error(x, r) == pytest.approx(0.25)


# ---------------------------------------------------------------- post-processing on constructed volumes
def test_erosion_is_per_slice_cross():
    mask = np.zeros((5, 15, 15), bool)
    mask[2, 4:11, 4:11] = True  # a 7x7 square in one slice only
    eroded = erode_mask_slices(mask, 3)
    # 2D cross erosion peels one ring per iteration: 7x7 -> 1x1; a 3D erosion would delete it all
    assert eroded.sum() == 1 and eroded[2, 7, 7]
    assert erode_mask_slices(mask, 1)[2].sum() == 25
    # border voxels count as outside: a full slice loses a 3-voxel frame
    full = np.ones((1, 10, 10), bool)
    assert erode_mask_slices(full, 3).sum() == 4 * 4
    assert (erode_mask_slices(mask, 0) == mask).all()


def test_erosion_cross_not_square():
    mask = np.zeros((1, 9, 9), bool)
    mask[0, 2:7, 2:7] = True
    mask[0, 1, 4] = True  # a bump on the top edge: a cross keeps the voxel below it, a 3x3 square would not
    eroded = erode_mask_slices(mask, 1)
    assert eroded[0, 2, 4] and eroded[0, 3:6, 3:6].all() and eroded.sum() == 10


def test_median_filter_removes_spikes_and_keeps_blocks():
    image = np.zeros((12, 20, 20), np.float32)
    image[2:11, 5:14, 5:14] = 1.0  # 9x9x9 block
    image[0, 0, 19] = 5.0  # isolated spike
    mask = np.ones_like(image, bool)
    amap = anomaly_map(image, 0.0, mask, erosion_iterations=0, median_size=5)
    assert amap[0, 0, 19] == 0.0
    assert (amap[4:9, 7:12, 7:12] == 1.0).all()  # interior: window inside the block
    assert amap[2, 5, 5] == 0.0  # a corner: most of its window is outside


def test_anomaly_map_masks_before_median():
    image = np.ones((9, 16, 16), np.float32)
    recon = np.zeros_like(image)
    mask = np.zeros_like(image, bool)
    mask[:, 2:14, 2:14] = True
    amap = anomaly_map(image, recon, mask, erosion_iterations=3, median_size=1)
    assert amap.sum() == 9 * 6 * 6 and amap[:, 5:11, 5:11].all()
    assert amap.dtype == np.float32


def test_component_removal_26_connectivity():
    vol = np.zeros((10, 10, 10), bool)
    vol[0, 0, 0:7] = True  # 7 voxels: removed
    vol[5, 5, 0:8] = True  # 8 voxels: kept
    for i in range(8):  # 8 voxels touching only at corners: one component with 26-connectivity
        vol[2 + i % 2, 2 + i // 2, 9 - i // 2 - i % 2] = True
    out = remove_small_components(vol, 7)
    assert not out[0, 0].any()
    assert out[5, 5, 0:8].all()
    assert out[2:4].sum() == vol[2:4].sum() == 8
    assert (remove_small_components(vol, 0) == vol).all()


# ---------------------------------------------------------------- threshold search
def _ramp(n=200001, cut=0.7):
    x = np.linspace(0.0, 1.0, n)
    return x, x > cut


def test_interval_search_traced_by_hand():
    x, gt = _ramp()
    # traced by hand on the continuous ramp: step 1 picks 3/4 of (0, 1); steps 2-3 the 3/4 point of
    # (0.5, 0.75) = 0.6875 (Dice 0.98); 10 steps converge to the true cut 0.7
    assert interval_search(x, gt, steps=1)[0] == 0.75
    assert interval_search(x, gt, steps=2)[0] == 0.75
    assert interval_search(x, gt, steps=3)[0] == 0.6875
    t, d = interval_search(x, gt, steps=10)
    assert abs(t - 0.7) < 0.002 and d > 0.99


def test_interval_search_widens_empty_range_like_original():
    x = np.zeros(10)
    gt = np.zeros(10, bool)
    gt[0] = True
    # (0, 0) becomes (0, 1); nothing predicted -> Dice 0 everywhere, ties kept at the first quarter
    assert interval_search(x, gt, steps=1) == (0.25, 0.0)


def test_exact_search_finds_optimum():
    x, gt = _ramp(1001)
    t, d = exact_search(x, gt)
    assert d == 1.0 and ((x > t) == gt).all()
    rng = np.random.default_rng(1)
    scores = rng.random(500)
    labels = rng.random(500) < scores * 0.6
    t, d = exact_search(scores, labels)
    brute = max(dice(scores >= v, labels) for v in np.unique(scores))
    assert d == pytest.approx(brute) and dice(scores > t, labels) == pytest.approx(d)


def test_choose_threshold_methods_and_no_anomalous_voxels():
    x, gt = _ramp(4 * 5 * 10 * 10)
    maps, segs = x.reshape(4, 5, 10, 10), gt.reshape(4, 5, 10, 10)
    res = choose_threshold(maps, segs, method="interval", steps=10)
    assert res["method"] == "interval" and res["n_volumes"] == 4 and abs(res["threshold"] - 0.7) < 0.01
    assert choose_threshold(maps, segs, method="exact")["val_dice"] == 1.0
    with pytest.raises(PddpmInputError, match="no anomalous voxel"):
        choose_threshold(maps, np.zeros_like(segs), source="results/slices/brats_val.npz")


def test_best_dice_per_volume():
    x, gt = _ramp(1001)
    assert best_dice(x, gt, "exact") == 1.0
    assert best_dice(x, gt, "interval", 10) > 0.98


# ---------------------------------------------------------------- aggregation with known numbers
def test_aggregation_known_numbers(tmp_path):
    rows = {0: [("a", 0.2, 0.1), ("b", 0.4, 0.3), ("c", float("nan"), 0.5)],
            1: [("a", 0.5, 0.2), ("b", 0.7, 0.4)]}
    for fold, vols in rows.items():
        path = aggregate.per_volume_path(tmp_path, "pddpm", fold, "brats")
        path.parent.mkdir(parents=True)
        pd.DataFrame(vols, columns=["subject", "dice", "auprc"]).to_csv(path, index=False)
    per_vol = aggregate.collect(tmp_path, ["pddpm"], [0, 1], ["brats"])
    assert len(per_vol) == 5
    folds = aggregate.fold_means(per_vol)
    assert folds["dice"].tolist() == pytest.approx([0.3, 0.6])  # NaN Dice skipped
    assert folds["auprc"].tolist() == pytest.approx([0.3, 0.3])
    assert folds["n_volumes"].tolist() == [3, 2]
    out = aggregate.across_folds(folds).set_index("metric")
    assert out.loc["dice", "mean"] == pytest.approx(0.45)
    assert out.loc["dice", "std"] == pytest.approx(np.std([0.3, 0.6], ddof=1))
    assert out.loc["auprc", "std"] == pytest.approx(0.0)
    assert out.loc["dice", "n_folds"] == 2
    one = aggregate.across_folds(folds[folds.fold == 0])
    assert one["std"].isna().all()
    with pytest.raises(PddpmInputError, match="per-volume results missing"):
        aggregate.collect(tmp_path, ["ddpm"], [0], ["brats"])


# ---------------------------------------------------------------- the fast path against the plain one
# evaluate_reference.py computes everything with scipy.ndimage and scikit-learn on every voxel (the
# implementation before the fast path); the numbers must agree to 1e-6, the maps bit for bit.
PAPER, DEMO = voxel_settings(spacing_mm=2.0), voxel_settings(spacing_mm=4.0)
TOL = 1e-6


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOL


def _demo_volume(anatomy_ref, kind: str, seed: int, spacing: float):
    """A demo subject (pddpm.demo) on a model grid of `spacing` mm (192 x 192 x 100 mm, as the slices),
    scaled like the slices; a smooth healthy-looking reconstruction (lesion filled in, noise added)."""
    from pddpm.demo.cohort import BRAIN_CENTRE, make_subject
    from pddpm.slices import rescale_percentiles

    shape = tuple(int(round(f / spacing)) for f in (192, 192, 100))
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = BRAIN_CENTRE - (np.array(shape) - 1) / 2 * spacing
    sub = make_subject(anatomy_ref, kind, seed, grid=(shape, affine))
    image = rescale_percentiles(sub.t2, sub.mask).transpose(2, 1, 0).astype(np.float16)  # (Z, H, W)
    mask, seg = sub.mask.transpose(2, 1, 0), (sub.seg > 0).transpose(2, 1, 0)
    rng = np.random.default_rng(seed)
    recon = ndimage.gaussian_filter(image.astype(np.float32), 1.0)
    recon[seg] = float(np.median(recon[mask > 0]))
    recon += 0.04 * ndimage.gaussian_filter(rng.standard_normal(recon.shape), 1.5).astype(np.float32)
    return image, recon.astype(np.float32), mask, seg


@pytest.fixture(scope="module")
def demo_volumes():
    """Two demo BraTS-like and two MSLUB-like volumes on the demo's 4 mm and the paper's 2 mm grid."""
    from pddpm.demo.anatomy import build_reference

    anatomy_ref = build_reference()
    return {(kind, spacing, seed): _demo_volume(anatomy_ref, kind, seed, spacing)
            for kind in ("brats", "mslub") for spacing in (4.0, 2.0) for seed in (1, 2)}


def _check_volume_metrics(amap, seg, settings):
    pos = amap[amap > 0].astype(np.float32)
    thresholds = [float(np.quantile(pos, q)) for q in (0.5, 0.99)] if len(pos) else [0.1]
    for t, search in [(t, "interval") for t in [*thresholds, 0.0]] + [(thresholds[0], "exact")]:
        fast = volume_metrics(amap, seg, t, min_component_voxels=settings["min_component_voxels"], search=search)
        ref = evaluate_reference.volume_metrics(amap, seg, t, settings["min_component_voxels"], search)
        assert all(_same(fast[k], ref[k]) for k in ref), (t, search, fast, ref)


def test_fast_path_equals_reference_on_demo_volumes(demo_volumes):
    for (kind, spacing, _), (image, recon, mask, seg) in demo_volumes.items():
        for settings in (PAPER, DEMO):
            kw = {"erosion_iterations": settings["erosion_iterations"], "median_size": settings["median_size"]}
            ref = evaluate_reference.anomaly_map(image, recon, mask, **kw)
            assert np.array_equal(anomaly_map(image, recon, mask, **kw), ref)
            stored = anomaly_map(image, recon, mask, **kw, dtype=np.float16)
            assert stored.dtype == np.float16 and np.array_equal(stored, ref.astype(np.float16))
            # the intensity baseline (recon 0) too
            assert np.array_equal(anomaly_map(image, 0, mask, **kw, dtype=np.float16),
                                  evaluate_reference.anomaly_map(image, 0, mask, **kw).astype(np.float16))
            _check_volume_metrics(stored, seg, settings)
        assert seg.any(), (kind, spacing)


def test_median_filter_equals_scipy_on_constructed_cases():
    rng = np.random.default_rng(3)
    cases = []
    for shape in ((12, 20, 18), (3, 9, 7), (5, 5, 5), (1, 8, 8), (6, 2, 9)):
        dense = rng.random(shape).astype(np.float32)
        sparse = dense * (rng.random(shape) < 0.45)  # windows on both sides of the half-full cut
        blob = np.zeros(shape, np.float32)
        blob[tuple(slice(0, max(1, n // 2)) for n in shape)] = 0.7
        ties = np.round(sparse * 4) / 4  # many equal values
        cases += [dense, sparse, blob, ties, np.zeros(shape, np.float32)]
    signed = rng.standard_normal((8, 10, 10)).astype(np.float32)  # negative values: the scipy path
    with_nan = rng.random((8, 10, 10)).astype(np.float32)
    with_nan[4, 4, 4] = np.nan
    neg_zero = np.where(rng.random((8, 10, 10)) < 0.5, np.float32(-0.0), np.float32(0.3))
    cases += [signed, neg_zero]
    for values in cases:
        for size in (3, 5, 7, 4):
            ref = ndimage.median_filter(values, size=size)
            assert np.array_equal(median_filter(values, size), ref), (values.shape, size)
            if not np.isnan(values).any():
                half = values.astype(np.float16)
                got = median_filter(half, size)
                assert got.dtype == np.float16 and np.array_equal(got, ref.astype(np.float16))
    got = median_filter(with_nan, 5)  # NaN: handed to scipy, whatever it does
    assert np.array_equal(got, ndimage.median_filter(with_nan, size=5), equal_nan=True)
    assert np.array_equal(median_filter(cases[0], 1), cases[0])


def test_metrics_equal_scikit_learn_on_constructed_cases():
    rng = np.random.default_rng(5)
    shape = (6, 10, 10)
    gt = np.zeros(shape, bool)
    gt[2:4, 3:7, 3:7] = True
    cont = (rng.random(shape) + 0.5 * gt).astype(np.float32)  # float32 values that are not float16
    cases = [
        (cont, gt), (cont.astype(np.float16), gt), (cont.astype(np.float64), gt),
        (np.round(cont * 3) / 3, gt),  # heavy ties across classes
        (np.zeros(shape, np.float32), gt),  # one value: a single threshold
        (cont, np.zeros(shape, bool)),  # empty ground truth: AUPRC, AUROC, best Dice undefined
        (cont, np.ones(shape, bool)),  # only positives: AUROC undefined
        (cont, np.eye(10, dtype=bool)[None].repeat(6, 0) & (rng.random(shape) < 0.1)),
        (np.where(gt, np.float16(0.5), np.float16(-0.0)), gt),  # -0 ties with +0
        (-cont, gt),  # negative scores
    ]
    for scores, labels in cases:
        assert _same(auprc(scores, labels), evaluate_reference.auprc(scores, labels))
        assert _same(auroc(scores, labels), evaluate_reference.auroc(scores, labels))
        for method in ("interval", "exact"):
            assert _same(best_dice(scores, labels, method), evaluate_reference.best_dice(scores, labels, method))
        for t in (0.0, 0.3, 0.7, 1.2):
            ref = evaluate_reference.volume_metrics(scores, labels, t, 3)
            fast = volume_metrics(scores, labels, t, min_component_voxels=3)
            assert all(_same(fast[k], ref[k]) for k in ref), (t, fast, ref)
    # the two searches on their own
    for scores, labels in cases[:4]:
        assert interval_search(scores, labels, 10) == evaluate_reference.interval_search(scores, labels, 10)
        assert exact_search(scores, labels) == evaluate_reference.exact_search(scores, labels)


def test_auprc_empty_ground_truth_is_undefined():
    scores = np.linspace(0, 1, 50).astype(np.float32)
    assert math.isnan(auprc(scores, np.zeros(50, bool)))
    # and left out of the per-fold mean, like an undefined Dice
    frame = pd.DataFrame({"subject": ["a", "b"], "auprc": [auprc(scores, scores > 0.5), float("nan")]})
    assert aggregate.fold_means(frame)["auprc"].iloc[0] == pytest.approx(auprc(scores, scores > 0.5))


def test_dice_at_agrees_with_dice():
    rng = np.random.default_rng(7)
    scores = (np.round(rng.random((4, 9, 9)) * 20) / 20).astype(np.float32)
    for labels in (scores > 0.6, np.zeros(scores.shape, bool), rng.random(scores.shape) < 0.2):
        at = _DiceAt(scores, labels)
        for t in [-1.0, 0.0, 0.05, 0.33, 0.6, 0.61, 0.999, 1.0, 2.0, *np.unique(scores).tolist()]:
            assert _same(at(t), dice(scores > np.float32(t), labels)), t
    # both empty: undefined in both
    assert math.isnan(_DiceAt(np.zeros(5), np.zeros(5, bool))(0.5))


def test_threshold_of_a_split_equals_reference():
    rng = np.random.default_rng(11)
    segs = np.zeros((5, 8, 16, 16), bool)
    for i in range(5):
        segs[i, 2:5, 3 + i:8 + i, 4:9] = True
    maps = (ndimage.gaussian_filter(rng.random(segs.shape), (0, 1, 1, 1)) + 0.3 * segs).astype(np.float16)
    for method in ("interval", "exact"):
        res = choose_threshold(maps, segs, method=method)
        assert (res["threshold"], res["val_dice"]) == evaluate_reference.choose_threshold(maps, segs, method)
        # volumes one at a time (an iterator) give the same
        again = choose_threshold(iter(list(maps)), iter(list(segs)), method=method)
        assert again["threshold"] == res["threshold"] and again["n_volumes"] == 5


# ---------------------------------------------------------------- sizes in mm
def test_mm_sizes_reproduce_the_original_at_2mm():
    assert voxel_settings(spacing_mm=2.0) == {"erosion_iterations": 3, "median_size": 5, "min_component_voxels": 7}
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    assert voxel_settings(paper["evaluate"], paper["slices"]["target_spacing_mm"]) == voxel_settings(spacing_mm=2.0)
    # and the behaviour: the original's 3 iterations, 5^3 median, components of <= 7 voxels removed
    rng = np.random.default_rng(2)
    image = rng.random((10, 24, 24)).astype(np.float16)
    mask = np.zeros(image.shape, np.uint8)
    mask[:, 3:21, 2:22] = 1
    vox = voxel_settings(spacing_mm=2.0)
    ours = anomaly_map(image, 0, mask, erosion_iterations=vox["erosion_iterations"], median_size=vox["median_size"])
    assert np.array_equal(ours, evaluate_reference.anomaly_map(image, 0, mask, 3, 5))
    binary = np.zeros((10, 10, 10), bool)
    binary[0, 0, :7] = True  # 7 voxels = 56 mm^3: removed
    binary[5, 5, :8] = True  # 8 voxels: kept
    kept = remove_small_components(binary, vox["min_component_voxels"])
    assert not kept[0].any() and kept[5, 5, :8].all()


def test_mm_sizes_on_the_demo_grid():
    # 4 mm: 6 mm of erosion is one grid step (the original's H // 25 gives 48 // 25 = 1 too), the
    # 4 mm median radius a 3 x 3 x 3 window, and no component is removed: one voxel is 64 mm^3 > 56 mm^3
    assert voxel_settings(spacing_mm=4.0) == {"erosion_iterations": 1, "median_size": 3, "min_component_voxels": 0}
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    assert voxel_settings(demo["evaluate"], demo["slices"]["target_spacing_mm"]) == voxel_settings(spacing_mm=4.0)
    # a 2-voxel lesion on the 4 mm grid (2 x 64 mm^3) survives; the voxel setting 7 removed it
    lesion = np.zeros((6, 8, 8), bool)
    lesion[3, 4, 4:6] = True
    assert remove_small_components(lesion, voxel_settings(spacing_mm=4.0)["min_component_voxels"]).sum() == 2
    assert remove_small_components(lesion, 7).sum() == 0
    # a 3-voxel-wide cube (12 mm) keeps its centre through the 4 mm grid's 3^3 median, not through 5^3
    blob = np.zeros((9, 12, 12), np.float32)
    blob[3:6, 4:7, 4:7] = 1.0
    assert median_filter(blob, 3)[4, 5, 5] == 1.0 and median_filter(blob, 5)[4, 5, 5] == 0.0
    # other grids: floor, so no size grows beyond its mm
    assert voxel_settings(spacing_mm=1.0) == {"erosion_iterations": 6, "median_size": 9, "min_component_voxels": 56}
    assert voxel_settings({"median_radius_mm": 0}, 2.0)["median_size"] == 1
    with pytest.raises(PddpmInputError, match="target_spacing_mm"):
        voxel_settings(spacing_mm=0)


# ---------------------------------------------------------------- the torch path (GPU after inference)
def test_torch_post_processing_equals_numpy(demo_volumes):
    torch = pytest.importorskip("torch")
    vols = [v for (kind, spacing, seed), v in demo_volumes.items() if spacing == 4.0 and seed == 1]
    images = np.stack([v[0] for v in vols])
    recons = np.stack([v[1] for v in vols])
    masks = np.stack([v[2] for v in vols])
    for settings in (PAPER, DEMO, {"erosion_iterations": 0, "median_size": 1}):
        kw = {"erosion_iterations": settings["erosion_iterations"], "median_size": settings["median_size"]}
        numpy_maps = np.stack([anomaly_map(i, r, m, **kw, dtype=np.float16)
                               for i, r, m in zip(images, recons, masks, strict=True)])
        got = anomaly_maps_torch(images, torch.from_numpy(recons), masks, **kw, device="cpu", slab=3)
        assert got.dtype == np.float16 and np.array_equal(got, numpy_maps), settings
        base = anomaly_maps_torch(images, 0, masks, **kw, device="cpu")
        assert np.array_equal(base, np.stack([anomaly_map(i, 0, m, **kw, dtype=np.float16)
                                              for i, m in zip(images, masks, strict=True)]))
    with pytest.raises(PddpmInputError, match="different grids"):
        anomaly_maps_torch(images, recons, masks[:, :, :-1], **kw)
