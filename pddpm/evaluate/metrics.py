"""Per-volume metrics (docs/spec.md section 7, step 5). Empty ground truth:

- Dice = 2|P and G| / (|P| + |G|): 0 when the ground truth is empty but something is predicted, and
  undefined (NaN) when both are empty (the original code's rule); per-fold means skip NaN (the original's
  np.nanmean).
- AUPRC (average precision): undefined (NaN) for an empty ground truth, as with the scikit-learn version
  the original pinned (recall 0/0); left out of the means. Newer scikit-learn returns 0 with a warning.
- AUROC: undefined (NaN) when the volume has only one class; best Dice: NaN for an empty ground truth.

AUPRC, AUROC and best Dice of a volume come from one histogram of its scores
(pddpm.evaluate.histogram): the same numbers as scikit-learn's functions on its voxels, without a sort.
"""

from __future__ import annotations

import numpy as np

from pddpm.evaluate.histogram import ScoreHistogram
from pddpm.evaluate.postprocess import check_same_grid, remove_small_components, voxel_settings
from pddpm.evaluate.threshold import exact_search, interval_search


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """The project's Dice of a binary prediction against a ground truth (> 0)."""
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt) > 0
    check_same_grid(prediction=pred, ground_truth=gt)
    denom = np.count_nonzero(pred) + np.count_nonzero(gt)
    if denom == 0:
        return float("nan")
    return float(2 * np.count_nonzero(pred & gt) / denom)


def _histogram(scores: np.ndarray, gt: np.ndarray) -> ScoreHistogram:
    check_same_grid(scores=np.ravel(scores), ground_truth=np.ravel(gt))
    return ScoreHistogram.of(scores, gt)


def auprc(scores: np.ndarray, gt: np.ndarray) -> float:
    """scikit-learn's average precision over all voxels; NaN for an empty ground truth."""
    return _histogram(scores, gt).average_precision()


def auroc(scores: np.ndarray, gt: np.ndarray) -> float:
    """scikit-learn's ROC AUC over all voxels; NaN when the volume holds one class only."""
    return _histogram(scores, gt).roc_auc()


def _best_dice(hist: ScoreHistogram, method: str, steps: int) -> float:
    if hist.n_positive == 0:
        return float("nan")
    if method == "exact":
        return exact_search(hist)[1]
    return interval_search(hist, steps=steps)[1]


def best_dice(scores: np.ndarray, gt: np.ndarray, method: str = "interval", steps: int = 10) -> float:
    """Oracle Dice of the volume at its own best threshold (before component removal, as the original)."""
    hist = _histogram(scores, gt)
    if hist.n_positive and method != "exact":  # the search interval is (0, max) of the scores as given
        return interval_search(hist, steps=steps, val_range=(0.0, float(np.max(scores))))[1]
    return _best_dice(hist, method, steps)


def binarise(anomaly: np.ndarray, threshold: float, min_component_voxels: int) -> np.ndarray:
    """`anomaly > threshold` (compared as float32 maps are), components of `min_component_voxels` voxels
    or fewer removed: the prediction whose Dice is reported."""
    anomaly = np.asarray(anomaly)
    if anomaly.dtype not in (np.float16, np.float32):
        anomaly = anomaly.astype(np.float32)
    # the comparison of a float32 map: a float16 map compares exactly as its float32 copy would
    t = np.asarray(threshold, dtype=np.result_type(np.float32, threshold))
    return remove_small_components(anomaly > t, min_component_voxels)


def volume_metrics(anomaly: np.ndarray, gt: np.ndarray, threshold: float, *,
                   min_component_voxels: int | None = None, search: str = "interval",
                   steps: int = 10) -> dict[str, float]:
    """Dice (binarised at `threshold`, small components removed), AUPRC, AUROC and best Dice of a volume.

    `min_component_voxels` None: the schema's default on its default grid (pddpm.evaluate.postprocess)."""
    if min_component_voxels is None:
        min_component_voxels = voxel_settings()["min_component_voxels"]
    anomaly = np.asarray(anomaly)
    gt = np.asarray(gt) > 0
    check_same_grid(anomaly_map=anomaly, ground_truth=gt)
    hist = ScoreHistogram.of(anomaly, gt)
    return {
        "dice": dice(binarise(anomaly, threshold, min_component_voxels), gt),
        "auprc": hist.average_precision(),
        "auroc": hist.roc_auc(),
        "best_dice": _best_dice(hist, search, steps),
    }


def recon_error(image: np.ndarray, recon: np.ndarray) -> float:
    """Mean absolute reconstruction error over all voxels of the volume (the original's l1recoErrorAll)."""
    image = np.asarray(image, dtype=np.float32)
    recon = np.asarray(recon, dtype=np.float32)
    check_same_grid(image=image, reconstruction=recon)
    return float(np.mean(np.abs(image - recon)))
