"""Aggregation of per-volume results: per fold the mean over volumes, across folds mean and std.

For the tables and figures: `collect` reads the `{ds}_per_volume.csv` files it is given, `fold_means`
averages each fold, `across_folds` gives the paper's `mean +- std over folds`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from pddpm.artefacts import PER_VOLUME_METRICS, read_per_volume
from pddpm.errors import PddpmInputError

# every metric column a per-volume file may have (anomalous, then healthy data sets)
METRICS = tuple(m for metrics in PER_VOLUME_METRICS.values() for m in metrics)
KEYS = ("model", "fold", "dataset")


def collect(files: Mapping[tuple[str, int, str], str | os.PathLike],
            metrics: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """The per-volume files `(model, fold, dataset) -> path` in one long table with columns model, fold,
    dataset, subject, <metrics>. `metrics` (data set -> metric columns) names the columns each data
    set's files must have (default: whatever metrics they hold)."""
    frames = []
    for (model, fold, ds), path in files.items():
        df = read_per_volume(path, (metrics or {}).get(ds))
        df.insert(0, "dataset", ds)
        df.insert(0, "fold", int(fold))
        df.insert(0, "model", model)
        frames.append(df)
    if not frames:
        raise PddpmInputError("no per-volume results to aggregate (empty models, folds or datasets)")
    return pd.concat(frames, ignore_index=True)


def fold_means(per_volume: pd.DataFrame, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Mean over volumes per (model, fold, dataset), skipping NaN (undefined Dice/AUROC, as the original).

    Returns one row per group with the metric means and `n_volumes`."""
    keys = [k for k in KEYS if k in per_volume.columns]
    metrics = [m for m in (metrics or METRICS) if m in per_volume.columns]
    if not keys:  # a single per-volume CSV
        out = per_volume[metrics].mean().to_frame().T  # pandas mean skips NaN
        out["n_volumes"] = len(per_volume)
        return out
    grouped = per_volume.groupby(keys, sort=True)
    out = grouped[metrics].mean()
    out["n_volumes"] = grouped.size()
    return out.reset_index()


def across_folds(per_fold: pd.DataFrame, metrics: Iterable[str] | None = None, ddof: int = 1) -> pd.DataFrame:
    """Mean and std over folds per (model, dataset): long table model, dataset, metric, mean, std, n_folds.

    `ddof=1` (sample std) by default: with a single fold the std is NaN rather than a misleading 0."""
    keys = [k for k in ("model", "dataset") if k in per_fold.columns]
    metrics = [m for m in (metrics or METRICS) if m in per_fold.columns]
    long = per_fold.melt(id_vars=keys + (["fold"] if "fold" in per_fold.columns else []), value_vars=metrics,
                         var_name="metric", value_name="value").dropna(subset=["value"])
    grouped = long.groupby(keys + ["metric"], sort=True)["value"]
    out = pd.DataFrame({
        "mean": grouped.mean(),
        "std": grouped.agg(lambda v: float(np.std(v, ddof=ddof)) if len(v) > ddof else float("nan")),
        "n_folds": grouped.size(),
    })
    return out.reset_index()


def summary(files: Mapping[tuple[str, int, str], str | os.PathLike], ddof: int = 1) -> pd.DataFrame:
    """collect -> fold_means -> across_folds in one call."""
    return across_folds(fold_means(collect(files)), ddof=ddof)
