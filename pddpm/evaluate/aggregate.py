"""Aggregation of per-volume results: per fold the mean over volumes, across folds mean and std.

For the tables and figures: `collect` reads every `{ds}_per_volume.csv`, `fold_means` averages each
fold, `across_folds` gives the paper's `mean +- std over folds`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from pddpm.errors import PddpmInputError

ANOMALOUS_METRICS = ("dice", "auprc", "auroc", "best_dice")
HEALTHY_METRICS = ("recon_error",)
KEYS = ("model", "fold", "dataset")


def per_volume_path(eval_dir: str | os.PathLike, model: str, fold: int, dataset: str) -> Path:
    return Path(eval_dir) / model / f"fold{fold}" / f"{dataset}_per_volume.csv"


def collect(eval_dir: str | os.PathLike, models: Iterable[str], folds: Iterable[int],
            datasets: Iterable[str]) -> pd.DataFrame:
    """All per-volume rows in one long table with columns model, fold, dataset, subject, <metrics>."""
    frames = []
    for model in models:
        for fold in folds:
            for ds in datasets:
                path = per_volume_path(eval_dir, model, fold, ds)
                if not path.exists():
                    raise PddpmInputError(f"{path}: per-volume results missing; run the `metrics` rule first")
                df = pd.read_csv(path)
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
    metrics = [m for m in (metrics or ANOMALOUS_METRICS + HEALTHY_METRICS) if m in per_volume.columns]
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
    metrics = [m for m in (metrics or ANOMALOUS_METRICS + HEALTHY_METRICS) if m in per_fold.columns]
    long = per_fold.melt(id_vars=keys + (["fold"] if "fold" in per_fold.columns else []), value_vars=metrics,
                         var_name="metric", value_name="value").dropna(subset=["value"])
    grouped = long.groupby(keys + ["metric"], sort=True)["value"]
    out = pd.DataFrame({
        "mean": grouped.mean(),
        "std": grouped.agg(lambda v: float(np.std(v, ddof=ddof)) if len(v) > ddof else float("nan")),
        "n_folds": grouped.size(),
    })
    return out.reset_index()


def summary(eval_dir: str | os.PathLike, models: Iterable[str], folds: Iterable[int],
            datasets: Iterable[str], ddof: int = 1) -> pd.DataFrame:
    """collect -> fold_means -> across_folds in one call."""
    return across_folds(fold_means(collect(eval_dir, models, folds, datasets)), ddof=ddof)
