"""The scores of a volume (or of a whole split) counted at each distinct value: one pass over the voxels
that serves average precision, ROC AUC and every Dice of a threshold search (docs/evaluation.md).

Anomaly maps are stored as float16, so a volume has at most 63,489 distinct scores: a `np.bincount` of
their bit patterns replaces the sort that scikit-learn's curves and a threshold search would each do.
Other scores are cast to float32 (as the metrics always compared them) and counted after one
`np.unique`. The curves are computed from the counts with scikit-learn's own formulas, so the numbers
are those of `average_precision_score` and `roc_auc_score` on the voxels.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from pddpm.errors import PddpmInputError

_F16_BITS = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
_F16_NAN = np.isnan(_F16_BITS.view(np.float16))
# every non-NaN float16 value once, ascending; -0 counts as +0 (scikit-learn's ties, `>` comparisons)
_F16_VALUES = np.unique(_F16_BITS.view(np.float16)[~_F16_NAN].astype(np.float64)) + 0.0  # -0 -> +0
_F16_RANK = np.searchsorted(_F16_VALUES, _F16_BITS.view(np.float16).astype(np.float64))
_F16_RANK[_F16_NAN] = 0  # never used: NaN counts are refused before the ranks are read


def _as_scores(scores: np.ndarray) -> np.ndarray:
    """float16 as stored, or float32 as the metrics compare scores; float32 that holds float16 values
    (a stored map read back) goes the float16 way."""
    scores = np.asarray(scores)
    if scores.dtype == np.float16:
        return scores
    scores = scores.astype(np.float32, copy=False)
    with np.errstate(over="ignore"):  # beyond float16's range: not float16 values, the np.unique way
        narrow = scores.astype(np.float16)
    return narrow if np.array_equal(narrow, scores) else scores


class ScoreHistogram:
    """Voxel counts at each distinct score value (ascending `values`): `total` voxels, `positive` ones
    inside the ground truth. Bins may be empty. A float16 histogram keeps the counts per bit pattern
    (`raw`, 65,536 bins) until the values are asked for, so that the histograms of a split's volumes add
    up bin by bin."""

    def __init__(self, values: np.ndarray | None, total: np.ndarray, positive: np.ndarray):
        """`values` None: `total` and `positive` count the float16 bit patterns."""
        self._raw = values is None
        if self._raw:
            self.raw_total = np.asarray(total, dtype=np.int64)
            self.raw_positive = np.asarray(positive, dtype=np.int64)
        else:
            self.values = np.asarray(values, dtype=np.float64)
            self.total = np.asarray(total, dtype=np.int64)
            self.positive = np.asarray(positive, dtype=np.int64)

    def _from_bits(self) -> None:
        """values, total, positive of a float16 histogram: its bit patterns in value order, made once."""
        if self.raw_total[_F16_NAN].any():
            raise PddpmInputError("the anomaly map holds NaN values; rerun the `infer` rule for it")
        n = len(_F16_VALUES)
        self.__dict__.update(
            values=_F16_VALUES,
            total=np.bincount(_F16_RANK, weights=self.raw_total, minlength=n).astype(np.int64),
            positive=np.bincount(_F16_RANK, weights=self.raw_positive, minlength=n).astype(np.int64))

    # set by __init__, or made from the bit patterns when first read (the instance's own value wins)
    @functools.cached_property
    def values(self) -> np.ndarray:
        self._from_bits()
        return self.__dict__["values"]

    @functools.cached_property
    def total(self) -> np.ndarray:
        self._from_bits()
        return self.__dict__["total"]

    @functools.cached_property
    def positive(self) -> np.ndarray:
        self._from_bits()
        return self.__dict__["positive"]

    @classmethod
    def of(cls, scores: np.ndarray, gt: np.ndarray) -> ScoreHistogram:
        scores = _as_scores(scores)
        gt = np.asarray(gt).ravel() > 0
        flat = scores.ravel()
        if flat.shape != gt.shape:
            raise PddpmInputError(f"scores {np.shape(scores)} and ground truth of {gt.size} voxels are on "
                                  "different grids; they must come from the same slices file")
        if flat.dtype == np.float16:
            bits = flat.view(np.uint16)
            # most of a map is +0 (outside the eroded brain): count the rest, the zeros by difference
            rest = bits[bits != 0]
            raw = np.bincount(rest, minlength=1 << 16)
            raw[0] += len(bits) - len(rest)
            return cls(None, raw, np.bincount(bits[gt], minlength=1 << 16))
        values, inverse = np.unique(flat, return_inverse=True)
        if len(values) and np.isnan(values[-1]):
            raise PddpmInputError("the anomaly map holds NaN values; rerun the `infer` rule for it")
        return cls(values, np.bincount(inverse, minlength=len(values)),
                   np.bincount(inverse[gt], minlength=len(values)))

    @classmethod
    def sum(cls, histograms: Iterable[ScoreHistogram]) -> ScoreHistogram:
        """The histogram of all voxels of several volumes."""
        hists = list(histograms)
        if not hists:
            raise ValueError("no histograms to add")
        if all(h._raw for h in hists):
            return cls(None, sum(h.raw_total for h in hists), sum(h.raw_positive for h in hists))
        values, inverse = np.unique(np.concatenate([h.values for h in hists]), return_inverse=True)
        total = np.bincount(inverse, weights=np.concatenate([h.total for h in hists]), minlength=len(values))
        pos = np.bincount(inverse, weights=np.concatenate([h.positive for h in hists]), minlength=len(values))
        return cls(values, total, pos)

    def add(self, other: ScoreHistogram) -> ScoreHistogram:
        """self + other; adds in place where both count float16 bit patterns (a split's running sum)."""
        if self._raw and other._raw and "values" not in self.__dict__:
            self.raw_total += other.raw_total
            self.raw_positive += other.raw_positive
            self.__dict__.pop("n_positive", None)
            return self
        return ScoreHistogram.sum([self, other])

    @property
    def n_voxels(self) -> int:
        return int((self.raw_total if self._raw else self.total).sum())

    @functools.cached_property
    def n_positive(self) -> int:
        return int((self.raw_positive if self._raw else self.positive).sum())

    def max_value(self) -> float:
        return float(self.values[np.flatnonzero(self.total)[-1]])

    def above(self, t: float) -> tuple[int, int]:
        """(voxels, positive voxels) with `score > t`, t rounded to float32 as `scores > t` does."""
        k = int(np.searchsorted(self.values, np.float64(np.float32(t)), side="right"))
        above_total, above_positive = self._above
        return int(above_total[k]), int(above_positive[k])

    @functools.cached_property
    def _above(self) -> tuple[np.ndarray, np.ndarray]:
        """Voxels and positive voxels strictly above values[k], at index k + 1 (index 0: all of them)."""
        return (np.concatenate([np.cumsum(self.total[::-1])[::-1], [0]]),
                np.concatenate([np.cumsum(self.positive[::-1])[::-1], [0]]))

    def occupied(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, total, positive) of the bins that hold voxels."""
        keep = self.total > 0
        return self.values[keep], self.total[keep], self.positive[keep]

    @functools.cached_property
    def _descending_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """scikit-learn's `tps`, `fps` at each distinct score, highest first (float64 as it keeps them)."""
        _, total, pos = self.occupied()
        tps = np.cumsum(pos[::-1]).astype(np.float64)
        fps = np.cumsum((total - pos)[::-1]).astype(np.float64)
        return tps, fps

    def average_precision(self) -> float:
        """scikit-learn's average_precision_score of the voxels; NaN without positives (undefined)."""
        if self.n_positive == 0 or self.n_voxels == 0:
            return float("nan")
        tps, fps = self._descending_counts
        ps = tps + fps
        precision = np.where(ps != 0, tps / np.where(ps != 0, ps, 1), 0.0)
        recall = tps / tps[-1]
        precision = np.concatenate([precision[::-1], [1.0]])
        recall = np.concatenate([recall[::-1], [0.0]])
        return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))

    def roc_auc(self) -> float:
        """scikit-learn's roc_auc_score of the voxels; NaN when they hold one class only."""
        if self.n_positive in (0, self.n_voxels):
            return float("nan")
        tps, fps = self._descending_counts
        if len(fps) > 2:  # roc_curve(drop_intermediate=True): same area, the same float sums
            keep = np.concatenate([[True], np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), [True]])
            tps, fps = tps[keep], fps[keep]
        tps = np.concatenate([[0.0], tps])
        fps = np.concatenate([[0.0], fps])
        return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))
