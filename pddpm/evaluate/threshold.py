"""Choosing the binarisation threshold on a data set's validation volumes (SPEC 7.4).

`interval_search` is the original's search (Zimmerer's iterative interval halving as used by the pDDPM
code): in each of `steps` rounds it evaluates Dice at the 1/4 and 3/4 points of the current interval,
keeps the better one if it beats the best so far, and continues in the half that holds it.
`exact_search` evaluates every distinct value of the map and returns the Dice-optimal cut.
"""

from __future__ import annotations

import numpy as np

from pddpm.errors import PddpmInputError


class _DiceAt:
    """Pixel Dice of `scores > t` against `gt` for many t, from the scores inside the ground truth."""

    def __init__(self, scores: np.ndarray, gt: np.ndarray):
        # float32 like the metrics, so that a threshold cuts validation and test maps the same way
        self.scores = np.asarray(scores, dtype=np.float32).ravel()
        gt = np.asarray(gt).ravel() > 0
        self.pos = self.scores[gt]
        self.gsum = int(gt.sum())

    def __call__(self, t: float) -> float:
        psum = np.count_nonzero(self.scores > t)
        tp = np.count_nonzero(self.pos > t)
        denom = psum + self.gsum
        return float(2 * tp / denom) if denom else float("nan")


def interval_search(scores: np.ndarray, gt: np.ndarray, steps: int = 10,
                    val_range: tuple[float, float] | None = None) -> tuple[float, float]:
    """(threshold, dice) of the original 10-step interval search over (0, max(scores))."""
    dice_at = _DiceAt(scores, gt)
    lo, hi = val_range if val_range is not None else (0.0, float(np.max(scores)))
    best_dice, best_t = 0.0, 0.0
    for _ in range(steps):
        if lo == hi:  # the original widens an empty interval to (lo, 1)
            hi = 1.0
        q_lo, q_hi, centre = lo + (hi - lo) * 0.25, lo + (hi - lo) * 0.75, lo + (hi - lo) * 0.5
        d_lo, d_hi = dice_at(q_lo), dice_at(q_hi)
        # comparisons as in the original (ties go to the lower quarter; a NaN never wins)
        if d_lo >= d_hi:
            if d_lo >= best_dice:
                best_dice, best_t = d_lo, q_lo
            hi = centre
        else:
            if d_hi >= best_dice:
                best_dice, best_t = d_hi, q_hi
            lo = centre
    return float(best_t), float(best_dice)


def exact_search(scores: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(threshold, dice) maximising Dice of `scores > threshold` over every distinct score value.

    Exact up to ties; memory: the distinct values of the maps (float32) and their counts."""
    scores = np.asarray(scores, dtype=np.float32).ravel()
    gt = np.asarray(gt).ravel() > 0
    gsum = int(gt.sum())
    if gsum == 0:
        return float("nan"), float("nan")
    values, inverse = np.unique(scores, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(values))
    positives = np.bincount(inverse[gt], minlength=len(values))
    # predicting {scores >= values[k]}: suffix sums from the top value down
    psum = np.cumsum(counts[::-1])[::-1]
    tp = np.cumsum(positives[::-1])[::-1]
    dice = 2 * tp / (psum + gsum)
    k = int(np.argmax(dice))  # the first maximum: on exact ties the larger prediction
    # the next lower value itself (exact in float32): `scores > t` is then `scores >= values[k]`
    below = values[k - 1] if k > 0 else np.nextafter(values[0], np.float32(-np.inf))
    return float(below), float(dice[k])


def choose_threshold(maps: np.ndarray, segs: np.ndarray, method: str = "interval", steps: int = 10,
                     source: str = "validation split") -> dict:
    """Threshold maximising pixel Dice over all voxels of all validation volumes.

    Returns {"threshold", "method", "val_dice", "steps", "n_volumes", "n_anomalous_voxels"}."""
    maps = np.asarray(maps)
    segs = np.asarray(segs) > 0
    if maps.shape != segs.shape:
        raise PddpmInputError(f"{source}: anomaly maps {maps.shape} and segmentations {segs.shape} are on "
                              "different grids; rerun inference on this slices file")
    n_pos = int(segs.sum())
    if n_pos == 0:
        raise PddpmInputError(f"{source}: no anomalous voxel in the ground truth of its {len(segs)} "
                              "validation volumes, so no threshold can be chosen; put subjects with "
                              "lesions into the validation split (datasets.<ds>.val_fraction)")
    if method == "interval":
        t, d = interval_search(maps, segs, steps=steps)
    elif method == "exact":
        t, d = exact_search(maps, segs)
    else:
        raise PddpmInputError(f"evaluate.threshold_search: unknown method {method!r}; use interval or exact")
    return {"threshold": t, "method": method, "val_dice": d, "steps": steps if method == "interval" else None,
            "n_volumes": int(len(segs)), "n_anomalous_voxels": n_pos}
