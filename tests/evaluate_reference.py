"""The evaluation computed the plain way: scipy.ndimage and scikit-learn on every voxel, as the project
did before the fast path (and as the original code does). Tests pin the fast path to it; bench/bench_eval.py
times it as "before". Only the empty-ground-truth AUPRC follows today's rule (NaN, docs/evaluation.md).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

SLICE_CROSS = ndimage.generate_binary_structure(2, 1)[None]
CONN26 = ndimage.generate_binary_structure(3, 3)


def erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    mask = np.asarray(mask) > 0
    return mask if iterations <= 0 else ndimage.binary_erosion(mask, SLICE_CROSS, iterations=iterations)


def median(values: np.ndarray, size: int) -> np.ndarray:
    return ndimage.median_filter(values, size=size) if size > 1 else values


def anomaly_map(image, recon, mask, erosion_iterations: int, median_size: int) -> np.ndarray:
    """float32 map; the stored map is its float16 rounding."""
    image = np.asarray(image, dtype=np.float32)
    recon = np.broadcast_to(np.asarray(recon, dtype=np.float32), image.shape)
    return median(np.abs(image - recon) * erode(mask, erosion_iterations), median_size)


def remove_small_components(binary: np.ndarray, max_voxels: int) -> np.ndarray:
    binary = np.asarray(binary, dtype=bool)
    if max_voxels <= 0 or not binary.any():
        return binary.copy()
    labels, n = ndimage.label(binary, structure=CONN26)
    keep = np.bincount(labels.ravel(), minlength=n + 1) > max_voxels
    keep[0] = False
    return keep[labels]


def dice(pred, gt) -> float:
    pred, gt = np.asarray(pred, bool), np.asarray(gt) > 0
    denom = int(pred.sum()) + int(gt.sum())
    return float(2 * np.count_nonzero(pred & gt) / denom) if denom else float("nan")


def auprc(scores, gt) -> float:
    gt = np.asarray(gt).ravel() > 0
    if not gt.any():
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(average_precision_score(gt, np.asarray(scores, np.float32).ravel()))


def auroc(scores, gt) -> float:
    gt = np.asarray(gt).ravel() > 0
    if gt.all() or not gt.any():
        return float("nan")
    return float(roc_auc_score(gt, np.asarray(scores, np.float32).ravel()))


def dice_at(scores: np.ndarray, gt: np.ndarray):
    """Dice of `scores > t` for any t, from the float32 voxels (the search's inner loop)."""
    scores = np.asarray(scores, np.float32).ravel()
    gt = np.asarray(gt).ravel() > 0
    pos, gsum = scores[gt], int(gt.sum())

    def at(t: float) -> float:
        denom = np.count_nonzero(scores > t) + gsum
        return float(2 * np.count_nonzero(pos > t) / denom) if denom else float("nan")

    return at


def interval_search(scores, gt, steps: int = 10, val_range=None) -> tuple[float, float]:
    at = dice_at(scores, gt)
    lo, hi = val_range if val_range is not None else (0.0, float(np.max(scores)))
    best_dice, best_t = 0.0, 0.0
    for _ in range(steps):
        if lo == hi:
            hi = 1.0
        q_lo, q_hi, centre = lo + (hi - lo) * 0.25, lo + (hi - lo) * 0.75, lo + (hi - lo) * 0.5
        d_lo, d_hi = at(q_lo), at(q_hi)
        if d_lo >= d_hi:
            if d_lo >= best_dice:
                best_dice, best_t = d_lo, q_lo
            hi = centre
        else:
            if d_hi >= best_dice:
                best_dice, best_t = d_hi, q_hi
            lo = centre
    return float(best_t), float(best_dice)


def exact_search(scores, gt) -> tuple[float, float]:
    scores = np.asarray(scores, np.float32).ravel()
    gt = np.asarray(gt).ravel() > 0
    gsum = int(gt.sum())
    if gsum == 0:
        return float("nan"), float("nan")
    values, inverse = np.unique(scores, return_inverse=True)
    psum = np.cumsum(np.bincount(inverse, minlength=len(values))[::-1])[::-1]
    tp = np.cumsum(np.bincount(inverse[gt], minlength=len(values))[::-1])[::-1]
    d = 2 * tp / (psum + gsum)
    k = int(np.argmax(d))
    below = values[k - 1] if k > 0 else np.nextafter(values[0], np.float32(-np.inf))
    return float(below), float(d[k])


def best_dice(scores, gt, method: str = "interval", steps: int = 10) -> float:
    if not (np.asarray(gt) > 0).any():
        return float("nan")
    return (exact_search(scores, gt) if method == "exact" else interval_search(scores, gt, steps))[1]


def volume_metrics(anomaly, gt, threshold: float, min_component_voxels: int, search: str = "interval",
                   steps: int = 10) -> dict[str, float]:
    anomaly = np.asarray(anomaly, dtype=np.float32)
    gt = np.asarray(gt) > 0
    return {"dice": dice(remove_small_components(anomaly > threshold, min_component_voxels), gt),
            "auprc": auprc(anomaly, gt), "auroc": auroc(anomaly, gt),
            "best_dice": best_dice(anomaly, gt, search, steps)}


def choose_threshold(maps, segs, method: str = "interval", steps: int = 10) -> tuple[float, float]:
    """(threshold, validation Dice) over all voxels of all volumes."""
    maps, segs = np.asarray(maps), np.asarray(segs) > 0
    return exact_search(maps, segs) if method == "exact" else interval_search(maps, segs, steps)
