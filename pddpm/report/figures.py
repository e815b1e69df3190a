"""Figures of the report: qualitative grids, precision-recall curves, Dice distributions, training curves.

Pure functions from arrays / frames to a PNG file (matplotlib's Agg backend, no display needed).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless and fast; figures are only ever written to files
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pddpm.artefacts import load_inference, load_split, read_threshold  # noqa: E402
from pddpm.errors import PddpmInputError  # noqa: E402
from pddpm.evaluate.postprocess import remove_small_components  # noqa: E402
from pddpm.io import atomic_path  # noqa: E402
from pddpm.models import loss_label  # noqa: E402 (the registry, torch-free)
from pddpm.report.table import model_label, order_models  # noqa: E402

DPI = 110


# A fixed colour per known model (tab10), so that a model looks the same in every figure and every run:
# the paper's method red, its DDPM baseline blue, the intensity baseline grey. Other models take the
# unused tab20 colours, in run order.
MODEL_COLOURS = {"pddpm": 3, "ddpm": 0, "thresh": 7, "ae": 1, "vae": 2, "svae": 8, "dae": 4, "fanogan": 5,
                 "cddpm": 6, "cddpm_nopretrain": 9}


def model_colours(models: Sequence[str]) -> dict[str, tuple]:
    tab10, tab20 = plt.get_cmap("tab10").colors, plt.get_cmap("tab20").colors
    spare = [c for c in tab20 if c not in tab10]  # tab20's light shades
    out, others = {}, 0
    for m in order_models(models):
        if m in MODEL_COLOURS:
            out[m] = tab10[MODEL_COLOURS[m]]
        else:
            out[m] = spare[others % len(spare)]
            others += 1
    return out


def model_styles(models: Sequence[str]) -> dict[str, str]:
    """Line styles beside the colours: solid for a few models; with many, neighbours alternate solid and
    dashed so that similar colours still part."""
    ordered = order_models(models)
    return {m: "-" if len(ordered) <= 5 or i % 2 == 0 else "--" for i, m in enumerate(ordered)}


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Write a PNG atomically and free the figure."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight")
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------------------------------------------
# qualitative grid

def pick_volumes(seg: np.ndarray, n: int) -> list[int]:
    """`n` volumes spread over the range of lesion sizes (largest, ..., smallest), not just the easiest.

    seg: (N, Z, H, W). Volumes without lesion are used only when too few have one."""
    load = seg.reshape(len(seg), -1).sum(axis=1)
    order = [int(i) for i in np.argsort(-load, kind="stable")]
    with_lesion = [i for i in order if load[i] > 0]
    pool = with_lesion if len(with_lesion) >= n else order
    if len(pool) <= n:
        return pool[:n]
    picks = np.linspace(0, len(pool) - 1, n).round().astype(int)
    return [pool[i] for i in picks]


def lesion_slice(seg_volume: np.ndarray) -> int:
    """Axial slice (axis 0 of (Z, H, W)) with the most lesion; the middle one when there is none."""
    per_slice = seg_volume.reshape(len(seg_volume), -1).sum(axis=1)
    return int(per_slice.argmax()) if per_slice.any() else len(seg_volume) // 2


def binarise(anomaly_volume: np.ndarray, threshold: float, min_component_voxels: int) -> np.ndarray:
    """As the metrics do: > threshold, then drop 26-connected components of <= min_component_voxels."""
    return remove_small_components(np.asarray(anomaly_volume, dtype=np.float32) > threshold,
                                   min_component_voxels)


def _overlay(ax, image, binary, colour, title=None):
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    rgba = np.zeros((*binary.shape, 4))
    rgba[binary] = (*colour, 0.75)
    ax.imshow(rgba, interpolation="nearest")
    if title:
        ax.set_title(title, fontsize=8)


def qualitative_grid(image: np.ndarray, seg: np.ndarray, subjects: Sequence[str],
                     outputs: Mapping[str, Mapping], volumes: Sequence[int], title: str,
                     path: str | os.PathLike, min_component_voxels: int = 7) -> Path:
    """Per volume a block of three rows, one column per model (so more models widen the figure, not
    lengthen it): the reconstruction, the anomaly map, the thresholded map (red) with the ground truth's
    outline (green). The first column holds the input and the ground truth.

    image, seg: (N, Z, H, W) of the test split. outputs: model -> {"recon", "anomaly" (N, Z, H, W),
    "threshold": float, "subjects": (N,)}; each model's volumes are matched to `subjects` by id.
    Each volume is shown at its slice with the most lesion.
    """
    subjects = [str(s) for s in subjects]
    models = order_models(outputs)
    if not models:
        raise PddpmInputError(f"{title}: no model outputs given for the qualitative grid")
    index = {}
    for model in models:
        out = outputs[model]
        theirs = [str(s) for s in out["subjects"]]
        missing = [subjects[v] for v in volumes if subjects[v] not in theirs]
        if missing:
            raise PddpmInputError(f"{title}: model `{model}` has no output for subjects {missing}; "
                                  "its inference file and the slices file disagree: rerun `infer`")
        index[model] = {s: i for i, s in enumerate(theirs)}
        for key in ("recon", "anomaly"):
            if out[key].shape[1:] != image.shape[1:]:
                raise PddpmInputError(f"{title}: model `{model}` {key} has volume shape {out[key].shape[1:]}, "
                                      f"the slices {image.shape[1:]}: maps and images are on different grids")
    # one colour scale per model so its maps compare across volumes
    vmax = {}
    for m in models:
        vals = np.concatenate([np.asarray(outputs[m]["anomaly"][index[m][subjects[v]]], np.float32).ravel()
                               for v in volumes])
        vmax[m] = max(float(np.percentile(vals, 99.9)), float(outputs[m]["threshold"]), 1e-6)
    n_rows, n_cols = 3 * len(volumes), 1 + len(models)
    side = 1.45
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(side * n_cols + 0.4, side * n_rows + 0.5), squeeze=False)
    row_names = ("reconstruction", "anomaly map", "thresholded")
    for b, v in enumerate(volumes):
        z = lesion_slice(seg[v])
        img = np.asarray(image[v, z], np.float32)
        truth = seg[v, z] > 0
        block = axes[3 * b:3 * b + 3]
        block[0][0].imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        block[0][0].set_title("input" if b == 0 else "", fontsize=8)
        _overlay(block[1][0], img, truth, (0.1, 0.9, 0.2))
        block[1][0].set_title("ground truth" if b == 0 else "", fontsize=8)
        block[2][0].axis("off")
        block[2][0].text(0.5, 0.5, f"{subjects[v]}\nslice z={z}", fontsize=7, ha="center", va="center",
                         transform=block[2][0].transAxes)
        for c, m in enumerate(models, start=1):
            i = index[m][subjects[v]]
            anomaly_vol = outputs[m]["anomaly"][i]
            thr = float(outputs[m]["threshold"])
            recon = np.asarray(outputs[m]["recon"][i, z], np.float32)
            block[0][c].imshow(recon, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if not recon.any():  # Thresh: no reconstruction, its map is the intensity itself
                block[0][c].text(0.5, 0.5, "none\n(map = intensity)", color="w", fontsize=7, ha="center",
                                 va="center", transform=block[0][c].transAxes)
            block[1][c].imshow(np.asarray(anomaly_vol[z], np.float32), cmap="inferno", vmin=0, vmax=vmax[m],
                               interpolation="nearest")
            _overlay(block[2][c], img, binarise(anomaly_vol, thr, min_component_voxels)[z], (1.0, 0.2, 0.1))
            if truth.any():
                block[2][c].contour(truth, levels=[0.5], colors=[(0.1, 0.9, 0.2)], linewidths=0.7)
            block[2][c].text(0.02, 0.02, f"thr {thr:.3g}", color="w", fontsize=6, transform=block[2][c].transAxes)
            if b == 0:
                block[0][c].set_title(model_label(m), fontsize=9, fontweight="bold")
        for r, name in enumerate(row_names):
            block[r][1].set_ylabel(name, fontsize=7)
        for row in block:
            for a in row:
                a.set_xticks([])
                a.set_yticks([])
    fig.suptitle(f"{title}: reconstruction, anomaly map and thresholded map (red; green: ground truth) per model",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------------
# precision-recall

_N_KEYS = 1 << 16


def _float16_order_keys(values: np.ndarray) -> np.ndarray:
    """uint16 keys that sort like the float16 values (sign-magnitude bits to a monotone integer)."""
    # + 0 turns -0.0 into +0.0: equal scores must share one key, as they share one threshold
    bits = np.ascontiguousarray(np.asarray(values, dtype=np.float16) + np.float16(0)).view(np.uint16)
    negative = (bits & 0x8000) != 0
    return np.where(negative, ~bits, bits | 0x8000).astype(np.uint16)


def _key_values() -> np.ndarray:
    keys = np.arange(_N_KEYS, dtype=np.uint32)
    bits = np.where(keys & 0x8000, keys & 0x7FFF, ~keys & 0xFFFF).astype(np.uint16)
    return bits.view(np.float16).astype(np.float32)


class PRAccumulator:
    """Exact precision-recall over any number of voxels in O(65536) memory.

    The anomaly maps are float16 (docs/contracts.md), so they take at most 65536 distinct values: counting
    positives and negatives per value gives the same curve and average precision as scikit-learn on all
    voxels at once, without holding them (the paper's BraTS test set is ~5e8 voxels per model)."""

    def __init__(self) -> None:
        self.pos = np.zeros(_N_KEYS, np.int64)
        self.neg = np.zeros(_N_KEYS, np.int64)

    def add(self, scores: np.ndarray, labels: np.ndarray) -> None:
        scores = np.asarray(scores)
        labels = np.asarray(labels)
        if scores.shape != labels.shape:
            raise PddpmInputError(f"anomaly map shape {scores.shape} and ground truth shape {labels.shape} "
                                  "differ: maps and labels are on different grids")
        if np.issubdtype(scores.dtype, np.floating) and not np.isfinite(scores).all():
            raise PddpmInputError("anomaly map holds NaN or infinite values; rerun `infer` and check its log")
        keys = _float16_order_keys(scores).ravel()
        positive = labels.ravel() > 0
        self.pos += np.bincount(keys[positive], minlength=_N_KEYS)
        self.neg += np.bincount(keys[~positive], minlength=_N_KEYS)

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """precision, recall, thresholds (descending score) and average precision (sklearn's definition)."""
        if self.pos.sum() == 0:
            raise PddpmInputError("no anomalous voxel in the ground truth: precision-recall is undefined")
        used = np.flatnonzero((self.pos + self.neg) > 0)[::-1]  # distinct scores, high to low
        tp = np.cumsum(self.pos[used])
        fp = np.cumsum(self.neg[used])
        precision = tp / (tp + fp)
        recall = tp / tp[-1]
        ap = float(np.sum(np.diff(recall, prepend=0.0) * precision))
        return precision, recall, _key_values()[used], ap


def pr_curves_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], prevalence: float,
                     title: str, path: str | os.PathLike,
                     operating_points: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> Path:
    """curves: model -> (precision, recall, AP). operating_points: model -> [(recall, precision)] at the
    chosen threshold of each fold, marked beside its curve."""
    colours, styles = model_colours(curves), model_styles(curves)
    many = len(curves) > 4  # the legend then goes beside the axes, where it hides no curve
    fig, ax = plt.subplots(figsize=(6.4 if many else 4.6, 4.0))
    for m in order_models(curves):
        precision, recall, ap = curves[m]
        ax.plot(recall, precision, color=colours[m], ls=styles[m], lw=1.5,
                label=f"{model_label(m)} (AP {100 * ap:.1f}%)")
        for r, p in (operating_points or {}).get(m, []):
            ax.plot([r], [p], "o", color=colours[m], ms=5, mec="k", mew=0.5)
    ax.axhline(prevalence, color="0.5", ls=":", lw=1, label=f"chance ({100 * prevalence:.2g}%)")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    ax.grid(alpha=0.3)
    if many:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path)


def operating_point(acc: PRAccumulator, threshold: float) -> tuple[float, float]:
    """(recall, precision) of `anomaly > threshold` (before component removal) from the counts."""
    above = _key_values() > threshold
    tp, fp = int(acc.pos[above].sum()), int(acc.neg[above].sum())
    recall = tp / max(int(acc.pos.sum()), 1)
    precision = tp / (tp + fp) if tp + fp else 1.0
    return float(recall), float(precision)


# ---------------------------------------------------------------------------------------------------------
# per-volume Dice

def dice_distribution_figure(per_volume: pd.DataFrame, datasets: Sequence[str], path: str | os.PathLike,
                             metric: str = "dice") -> Path:
    """Box plots of per-volume Dice per model, one panel per anomalous data set; dots coloured by fold.

    per_volume: the frame of pddpm.report.table.load_per_volume (model, fold, dataset, subject, metrics)."""
    if metric not in per_volume.columns:
        raise PddpmInputError(f"no per-volume `{metric}` column in the evaluation results; rerun `metrics`")
    data = per_volume.dropna(subset=[metric])
    missing = [d for d in datasets if d not in set(data["dataset"])]
    if missing:
        raise PddpmInputError(f"no per-volume `{metric}` for data sets {missing}; rerun `metrics`")
    models = order_models(data["model"].unique())
    colours = model_colours(models)
    folds = sorted(data["fold"].unique())
    markers = {f: "os^Dv<>ph*"[i % 10] for i, f in enumerate(folds)}
    # one panel per data set, stacked, so that more models widen one axis instead of every panel
    fig, axes = plt.subplots(len(datasets), 1, figsize=(1.6 + 0.8 * len(models), 0.4 + 3.0 * len(datasets)),
                             squeeze=False)
    rng = np.random.default_rng(0)  # jitter only; fixed so reruns give the same picture
    for ax, ds in zip(axes[:, 0], datasets, strict=True):
        sub = data[data["dataset"] == ds]
        values = [100 * sub.loc[sub["model"] == m, metric].to_numpy() for m in models]
        boxes = ax.boxplot(values, widths=0.55, showfliers=False, medianprops={"color": "k"}, patch_artist=True)
        for box, m in zip(boxes["boxes"], models, strict=True):
            box.set(facecolor=(*colours[m][:3], 0.25), edgecolor=colours[m])
        for i, m in enumerate(models, start=1):
            for f in folds:
                ms = sub[(sub["model"] == m) & (sub["fold"] == f)]
                x = i + rng.uniform(-0.18, 0.18, len(ms))
                ax.scatter(x, 100 * ms[metric], s=10, alpha=0.8, color=colours[m], marker=markers[f],
                           edgecolors="none")
        ax.set_xticks(range(1, len(models) + 1), [model_label(m) for m in models], fontsize=8,
                      rotation=30 if len(models) > 6 else 0, ha="right" if len(models) > 6 else "center")
        ax.set_title(ds, fontsize=9)
        ax.set_ylabel(f"per-volume {metric} [%]", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if len(folds) > 1:
        handles = [plt.Line2D([], [], ls="", marker=markers[f], color="0.3", label=f"fold {f}") for f in folds]
        axes[0][0].legend(handles=handles, fontsize=7, loc="upper right")
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------------
# training curves

TRAIN_LOG_COLUMNS = ("step", "train_loss", "val_loss")


def read_train_log(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise PddpmInputError(f"{path}: training log not found; run `train` for this model and fold")
    try:
        log = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise PddpmInputError(f"{path}: not a readable CSV ({exc})") from exc
    missing = [c for c in TRAIN_LOG_COLUMNS if c not in log.columns]
    if missing:
        raise PddpmInputError(f"{path}: columns {missing} missing (has {list(log.columns)}); "
                              f"a training log needs {list(TRAIN_LOG_COLUMNS)}")
    return log


def loss_terms(log: pd.DataFrame) -> list[str]:
    """The loss terms of a training log: `loss` (the total, validated and used to keep the best model),
    then every other `train_<term>` / `val_<term>` column in the order the log has them."""
    terms = ["loss"]
    for col in log.columns:
        for prefix in ("train_", "val_"):
            if col.startswith(prefix) and col[len(prefix):] not in terms:
                terms.append(col[len(prefix):])
    return terms


def axis_label(model: str, term: str, width: int = 34) -> str:
    """The y label of a training-curve panel: what the kind's loss term is (pddpm.models.loss_label),
    wrapped to the panel's height."""
    return "\n".join(textwrap.wrap(loss_label(model, term), width))


def training_curves_figure(logs: Mapping[tuple[str, int], pd.DataFrame], path: str | os.PathLike,
                           columns: int = 4) -> Path:
    """One panel per model and loss term (each model's own terms: `loss_terms`), `columns` panels a row,
    a model's terms side by side: the training value per step (faint), its running mean (solid) and the
    validation value (dots) per fold; on each model's `loss` panel the validation minimum, whose weights
    are the model kept, is starred."""
    models = order_models({m for m, _ in logs})
    if not models:
        raise PddpmInputError("no training logs given for the training-curve figure")
    folds = sorted({f for _, f in logs})
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(folds)}
    panels = []
    for m in models:
        terms = list(dict.fromkeys(t for (mm, _), log in logs.items() if mm == m for t in loss_terms(log)))
        panels += [(m, t) for t in terms]
    n_cols = min(columns, len(panels))
    n_rows = -(-len(panels) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.4 * n_cols, 2.7 * n_rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (m, term) in zip(axes.ravel(), panels, strict=False):
        for f in folds:
            log = logs.get((m, f))
            if log is None:
                continue
            train_col, val_col = f"train_{term}", f"val_{term}"
            if train_col in log:
                train = log.dropna(subset=[train_col])
                if len(train):
                    window = max(1, len(train) // 25)
                    smooth = train[train_col].rolling(window, min_periods=1).mean()
                    ax.plot(train["step"], train[train_col], color=colours[f], alpha=0.15, lw=0.8)
                    ax.plot(train["step"], smooth, color=colours[f], lw=1.2, label=f"fold {f} train")
            if val_col in log:
                val = log.dropna(subset=[val_col])
                if len(val):
                    ax.plot(val["step"], val[val_col], "o--", color=colours[f], ms=3, lw=0.8, label=f"fold {f} val")
                    if term == "loss":
                        best = val.loc[val[val_col].idxmin()]
                        ax.plot([best["step"]], [best[val_col]], "*", color=colours[f], ms=10, mec="k", mew=0.5)
        what = "total loss (model kept at the val minimum)" if term == "loss" else term
        ax.set_title(f"{model_label(m)}: {what}", fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel(axis_label(m, term), fontsize=7)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # steps are whole numbers
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------------
# from the workflow's files (docs/contracts.md) to figures: what the rules call

def _load_slices(path) -> dict[str, np.ndarray]:
    """The test split with image and seg memory-mapped: the figures read only a few volumes of them."""
    return load_split(path, mmap=True)


def qualitative_from_files(slices_path, infer_paths: Mapping[str, str], threshold_paths: Mapping[str, str],
                           n_volumes: int, title: str, path, min_component_voxels: int = 7) -> Path:
    """Qualitative grid of one data set's test split; infer_paths / threshold_paths: model -> file.

    Memory: one model's maps at a time, and of them only the volumes shown are kept."""
    split = _load_slices(slices_path)
    subjects = [str(s) for s in split["subjects"]]
    volumes = pick_volumes(split["seg"], n_volumes)
    shown = [subjects[v] for v in volumes]
    outputs = {}
    for model, infer_path in infer_paths.items():
        out = load_inference(infer_path, ("recon", "anomaly", "subjects"))
        theirs = [str(s) for s in out["subjects"]]
        rows = [theirs.index(s) for s in shown if s in theirs]
        if len(rows) < len(shown):
            missing = [s for s in shown if s not in theirs]
            raise PddpmInputError(f"{infer_path}: no output for subjects {missing} of {slices_path}; "
                                  "the inference and slices files disagree: rerun `infer`")
        outputs[model] = {"recon": out["recon"][rows], "anomaly": out["anomaly"][rows],
                          "subjects": np.array(shown), "threshold": read_threshold(threshold_paths[model])}
        del out
    image = np.asarray(split["image"][volumes])
    seg = np.asarray(split["seg"][volumes])
    return qualitative_grid(image, seg, shown, outputs, list(range(len(volumes))), title, path,
                            min_component_voxels)


def pr_curves_from_files(slices_path, infer_paths: Mapping[tuple[str, int], str],
                         threshold_paths: Mapping[tuple[str, int], str], title: str, path) -> Path:
    """Precision-recall over all test voxels of a data set, per model pooled over folds; each fold's
    threshold marked. infer_paths / threshold_paths: (model, fold) -> file."""
    split = _load_slices(slices_path)
    subjects = [str(s) for s in split["subjects"]]
    per_model: dict[str, PRAccumulator] = {}
    points: dict[str, list[tuple[float, float]]] = {}
    for (model, fold), infer_path in infer_paths.items():
        out = load_inference(infer_path, ("anomaly", "subjects"))
        if [str(s) for s in out["subjects"]] != subjects:
            raise PddpmInputError(f"{infer_path}: its subjects differ from {slices_path}'s (order or set); "
                                  "rerun `infer` for it")
        acc = PRAccumulator()
        for v in range(len(subjects)):  # volume by volume: the key arrays stay small
            acc.add(out["anomaly"][v], split["seg"][v])
        del out
        total = per_model.setdefault(model, PRAccumulator())
        total.pos += acc.pos
        total.neg += acc.neg
        points.setdefault(model, []).append(operating_point(acc, read_threshold(threshold_paths[(model, fold)])))
    curves = {}
    for model, acc in per_model.items():
        precision, recall, _, ap = acc.curve()
        curves[model] = (precision, recall, ap)
    any_acc = next(iter(per_model.values()))
    prevalence = float(any_acc.pos.sum() / (any_acc.pos.sum() + any_acc.neg.sum()))
    return pr_curves_figure(curves, prevalence, title, path, operating_points=points)
