"""Choosing the binarisation threshold on a data set's validation volumes (docs/spec.md section 7, step 4).

`interval_search` is the original's search (Zimmerer's iterative interval halving as used by the pDDPM
code): in each of `steps` rounds it evaluates Dice at the 1/4 and 3/4 points of the current interval,
keeps the better one if it beats the best so far, and continues in the half that holds it.
`exact_search` evaluates every distinct value of the map and returns the Dice-optimal cut.

Both read the Dice of `scores > t` off one histogram of the scores (pddpm.evaluate.histogram), built
volume by volume: a split's search costs one pass over its voxels, whatever the number of thresholds.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pddpm.errors import PddpmInputError
from pddpm.evaluate.histogram import ScoreHistogram


class _DiceAt:
    """Pixel Dice of `scores > t` against `gt` for many t: pddpm.evaluate.metrics.dice on the counts of
    a histogram (t rounded to float32, as the comparison with float32 scores does)."""

    def __init__(self, scores: np.ndarray | ScoreHistogram, gt: np.ndarray | None = None):
        self.hist = scores if isinstance(scores, ScoreHistogram) else ScoreHistogram.of(scores, gt)
        self.gsum = self.hist.n_positive

    def __call__(self, t: float) -> float:
        psum, tp = self.hist.above(t)
        denom = psum + self.gsum
        return float(2 * tp / denom) if denom else float("nan")


def interval_search(scores: np.ndarray | ScoreHistogram, gt: np.ndarray | None = None, steps: int = 10,
                    val_range: tuple[float, float] | None = None) -> tuple[float, float]:
    """(threshold, dice) of the original 10-step interval search over (0, max(scores)).

    `scores` and `gt` are arrays, or `scores` is the ScoreHistogram of them (then `gt` is None)."""
    dice_at = _DiceAt(scores, gt)
    if val_range is None:
        top = dice_at.hist.max_value() if isinstance(scores, ScoreHistogram) else float(np.max(scores))
        val_range = (0.0, top)
    lo, hi = val_range
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


def exact_search(scores: np.ndarray | ScoreHistogram, gt: np.ndarray | None = None) -> tuple[float, float]:
    """(threshold, dice) maximising Dice of `scores > threshold` over every distinct score value.

    Exact up to ties; memory: the distinct values of the maps (float32) and their counts."""
    hist = scores if isinstance(scores, ScoreHistogram) else ScoreHistogram.of(scores, gt)
    gsum = hist.n_positive
    if gsum == 0:
        return float("nan"), float("nan")
    values, counts, positives = hist.occupied()
    # predicting {scores >= values[k]}: suffix sums from the top value down
    psum = np.cumsum(counts[::-1])[::-1]
    tp = np.cumsum(positives[::-1])[::-1]
    dice = 2 * tp / (psum + gsum)
    k = int(np.argmax(dice))  # the first maximum: on exact ties the larger prediction
    # the next lower value itself (exact in float32): `scores > t` is then `scores >= values[k]`
    below = np.float32(values[k - 1]) if k > 0 else np.nextafter(np.float32(values[0]), np.float32(-np.inf))
    return float(below), float(dice[k])


def volume_histogram(amap: np.ndarray, seg: np.ndarray,
                     source: str = "validation split") -> tuple[ScoreHistogram, float | None]:
    """(histogram, max) of one validation volume: what the threshold search needs of it. The max is None
    for float16/float32 maps: the top value of the split's histogram is theirs; wider maps are searched
    in their own precision, as np.max(maps) gives it."""
    if np.shape(amap) != np.shape(seg):
        raise PddpmInputError(f"{source}: anomaly maps {np.shape(amap)} and segmentations {np.shape(seg)} "
                              "are on different grids; rerun inference on this slices file")
    wide = np.asarray(amap).dtype not in (np.float16, np.float32)
    return ScoreHistogram.of(amap, seg), float(np.max(amap)) if wide else None


def add_histograms(parts: Iterable[tuple[ScoreHistogram, float | None]]) -> tuple[ScoreHistogram | None, float,
                                                                                   int]:
    """(histogram of all voxels, max of the maps, number of volumes) of per-volume results."""
    hist, tops, n = None, [], 0
    for h, t in parts:
        hist = h if hist is None else hist.add(h)
        if t is not None:
            tops.append(t)
        n += 1
    if hist is None:
        return None, float("nan"), 0
    if len(tops) < n:  # some maps' max is the histogram's
        tops.append(hist.max_value())
    return hist, max(tops), n


def threshold_of(hist: ScoreHistogram | None, top: float, n_volumes: int, method: str = "interval",
                 steps: int = 10, source: str = "validation split") -> dict:
    """The threshold from the histogram of a validation split's voxels (see choose_threshold)."""
    if method not in ("interval", "exact"):
        raise PddpmInputError(f"evaluate.threshold_search: unknown method {method!r}; use interval or exact")
    n_pos = hist.n_positive if hist is not None else 0
    if n_pos == 0:
        raise PddpmInputError(f"{source}: no anomalous voxel in the ground truth of its {n_volumes} "
                              "validation volumes, so no threshold can be chosen; put subjects with "
                              "lesions into the validation split (datasets.<ds>.val_fraction)")
    if method == "interval":
        t, d = interval_search(hist, steps=steps, val_range=(0.0, top))
    else:
        t, d = exact_search(hist)
    return {"threshold": t, "method": method, "val_dice": d, "steps": steps if method == "interval" else None,
            "n_volumes": int(n_volumes), "n_anomalous_voxels": n_pos}


def choose_threshold(maps: Iterable[np.ndarray] | np.ndarray, segs: Iterable[np.ndarray] | np.ndarray,
                     method: str = "interval", steps: int = 10, source: str = "validation split") -> dict:
    """Threshold maximising pixel Dice over all voxels of all validation volumes.

    `maps` and `segs`: (N, Z, H, W) arrays or iterables of volumes (read one at a time).
    Returns {"threshold", "method", "val_dice", "steps", "n_volumes", "n_anomalous_voxels"}."""
    if isinstance(maps, np.ndarray) and isinstance(segs, np.ndarray) and maps.shape != segs.shape:
        raise PddpmInputError(f"{source}: anomaly maps {maps.shape} and segmentations {segs.shape} are on "
                              "different grids; rerun inference on this slices file")
    parts = (volume_histogram(m, s, source) for m, s in zip(maps, segs, strict=True))
    return threshold_of(*add_histograms(parts), method=method, steps=steps, source=source)
