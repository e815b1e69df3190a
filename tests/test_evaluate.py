"""Evaluation: post-processing, threshold search, metrics and aggregation on constructed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from pddpm.errors import PddpmInputError
from pddpm.evaluate import aggregate
from pddpm.evaluate.metrics import auprc, auroc, best_dice, dice, recon_error, volume_metrics
from pddpm.evaluate.postprocess import anomaly_map, erode_mask_slices, remove_small_components
from pddpm.evaluate.threshold import choose_threshold, exact_search, interval_search


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
    assert e["dice"] == 0.0 and e["auprc"] == 0.0
    assert math.isnan(e["auroc"]) and math.isnan(e["best_dice"])
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
    files = {("pddpm", fold, "brats"): tmp_path / f"fold{fold}_brats_per_volume.csv" for fold in rows}
    for (_, fold, _), path in files.items():
        pd.DataFrame(rows[fold], columns=["subject", "dice", "auprc"]).to_csv(path, index=False)
    per_vol = aggregate.collect(files)
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
    with pytest.raises(PddpmInputError, match="per-volume results not found"):
        aggregate.collect({("ddpm", 0, "brats"): tmp_path / "none_per_volume.csv"})
