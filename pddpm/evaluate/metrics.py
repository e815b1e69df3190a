"""Per-volume metrics (SPEC 7.5). Empty ground truth follows the original code:

- Dice = 2|P and G| / (|P| + |G|): 0 when the ground truth is empty but something is predicted, and
  undefined (NaN) when both are empty; per-fold means skip NaN (the original's np.nanmean).
- AUPRC: scikit-learn's average precision, which is 0 for an empty ground truth (with a warning).
- AUROC: undefined (NaN) when the volume has only one class; best Dice: NaN for an empty ground truth.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from pddpm.evaluate.postprocess import check_same_grid, remove_small_components
from pddpm.evaluate.threshold import exact_search, interval_search


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt) > 0
    check_same_grid(prediction=pred, ground_truth=gt)
    denom = int(pred.sum()) + int(gt.sum())
    if denom == 0:
        return float("nan")
    return float(2 * np.count_nonzero(pred & gt) / denom)


def auprc(scores: np.ndarray, gt: np.ndarray) -> float:
    gt = np.asarray(gt).ravel() > 0
    check_same_grid(scores=np.asarray(scores).ravel(), ground_truth=gt)
    with warnings.catch_warnings():  # empty ground truth: documented above, not worth a warning per volume
        warnings.simplefilter("ignore")
        return float(average_precision_score(gt, np.asarray(scores, dtype=np.float32).ravel()))


def auroc(scores: np.ndarray, gt: np.ndarray) -> float:
    gt = np.asarray(gt).ravel() > 0
    check_same_grid(scores=np.asarray(scores).ravel(), ground_truth=gt)
    if gt.all() or not gt.any():
        return float("nan")
    return float(roc_auc_score(gt, np.asarray(scores, dtype=np.float32).ravel()))


def best_dice(scores: np.ndarray, gt: np.ndarray, method: str = "interval", steps: int = 10) -> float:
    """Oracle Dice of the volume at its own best threshold (before component removal, as the original)."""
    gt = np.asarray(gt) > 0
    if not gt.any():
        return float("nan")
    if method == "exact":
        return exact_search(scores, gt)[1]
    return interval_search(scores, gt, steps=steps)[1]


def volume_metrics(anomaly: np.ndarray, gt: np.ndarray, threshold: float, *, min_component_voxels: int = 7,
                   search: str = "interval", steps: int = 10) -> dict[str, float]:
    """Dice (binarised at `threshold`, small components removed), AUPRC, AUROC and best Dice of a volume."""
    anomaly = np.asarray(anomaly, dtype=np.float32)
    gt = np.asarray(gt) > 0
    check_same_grid(anomaly_map=anomaly, ground_truth=gt)
    binary = remove_small_components(anomaly > threshold, min_component_voxels)
    return {
        "dice": dice(binary, gt),
        "auprc": auprc(anomaly, gt),
        "auroc": auroc(anomaly, gt),
        "best_dice": best_dice(anomaly, gt, search, steps),
    }


def recon_error(image: np.ndarray, recon: np.ndarray) -> float:
    """Mean absolute reconstruction error over all voxels of the volume (the original's l1recoErrorAll)."""
    image = np.asarray(image, dtype=np.float32)
    recon = np.asarray(recon, dtype=np.float32)
    check_same_grid(image=image, reconstruction=recon)
    return float(np.mean(np.abs(image - recon)))
