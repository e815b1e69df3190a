"""Evaluation of one split from its files: the threshold of a validation split, the per-volume table
of a test split. Checks that the inference output and the slices file describe the same volumes.

Both read the split one volume at a time (pddpm.evaluate.volumes), so memory does not grow with the
split; `threads` volumes are evaluated in parallel, on as many worker processes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pddpm.errors import PddpmInputError
from pddpm.evaluate.metrics import recon_error, volume_metrics
from pddpm.evaluate.threshold import add_histograms, threshold_of, volume_histogram
from pddpm.evaluate.volumes import NpzVolumes, small_member
from pddpm.io import atomic_path

log = logging.getLogger("pddpm.evaluate")

_RERUN_INFER = "delete it and rerun `infer`"
_RERUN_SLICES = "delete it and rerun `slices`"


def _open_pair(infer_path, slices_path, infer_key: str, slices_key: str) -> tuple[np.ndarray, NpzVolumes,
                                                                                     NpzVolumes]:
    """(subjects, inference volumes, slices volumes) after checking that both files hold the same
    subjects on the same grid; reads only the subject lists and the array headers."""
    subs_i = small_member(infer_path, "subjects", fix="run the `infer` rule for it").astype(str)
    subs_s = small_member(slices_path, "subjects", fix="run the `slices` rule for it").astype(str)
    if subs_i.tolist() != subs_s.tolist():
        raise PddpmInputError(f"{infer_path} holds subjects {subs_i[:5].tolist()}... but {slices_path} holds "
                              f"{subs_s[:5].tolist()}...; the inference is stale, {_RERUN_INFER}")
    inf = NpzVolumes(infer_path, infer_key, fix=_RERUN_INFER)
    sl = NpzVolumes(slices_path, slices_key, fix=_RERUN_SLICES)
    if inf.shape != sl.shape:
        raise PddpmInputError(f"{infer_path}: {infer_key} {inf.shape} and {slices_path}: {slices_key} "
                              f"{sl.shape} are on different grids; delete the inference and rerun")
    return subs_i, inf, sl


def map_volumes(fn: Callable, items: Iterable[tuple], *, threads: int = 1, total: int | None = None,
                progress: bool = True, desc: str = "volumes") -> Iterator:
    """fn(*item) for each item, in order. With `threads` > 1 on that many worker processes (forked: the
    GIL would serialise much of the numpy and scipy work of threads), with at most 2 x threads items in
    flight: the items are read as they are needed, so memory stays bounded. `fn` must pickle (a module
    function or a functools.partial of one)."""
    bar = tqdm(total=total, desc=desc, unit="vol", disable=not progress, mininterval=5)
    try:
        if threads <= 1:
            for item in items:
                yield fn(*item)
                bar.update()
            return
        # fork, not spawn: a spawned worker would re-run the job script that imported this module
        with ProcessPoolExecutor(threads, mp_context=multiprocessing.get_context("fork")) as pool:
            pending: deque = deque()
            for item in items:
                pending.append(pool.submit(fn, *item))
                if len(pending) >= 2 * threads:
                    yield pending.popleft().result()
                    bar.update()
            while pending:
                yield pending.popleft().result()
                bar.update()
    finally:
        bar.close()


def _metrics_row(amap, seg, threshold, min_component_voxels, search, steps) -> dict:
    return volume_metrics(amap, seg, threshold, min_component_voxels=min_component_voxels, search=search,
                          steps=steps)


def _error_row(recon, image) -> dict:
    return {"recon_error": recon_error(image, recon)}


def split_threshold(infer_path: str | os.PathLike, slices_path: str | os.PathLike, method: str = "interval",
                    steps: int = 10, threads: int = 1, progress: bool = True) -> dict:
    """The Dice-optimal threshold over all voxels of a validation split (see threshold.choose_threshold):
    one histogram per volume (in parallel), their sum, the search on it."""
    _, maps, segs = _open_pair(infer_path, slices_path, "anomaly", "seg")
    parts = map_volumes(partial(volume_histogram, source=str(slices_path)), zip(maps, segs, strict=True),
                        threads=threads, total=len(maps), progress=progress, desc="threshold")
    result = threshold_of(*add_histograms(parts), method=method, steps=steps, source=str(slices_path))
    result.update(infer=str(infer_path), slices=str(slices_path))
    log.info("threshold %.6g (%s search), validation Dice %.4f over %d volumes", result["threshold"], method,
             result["val_dice"], result["n_volumes"])
    return result


def per_volume(infer_path: str | os.PathLike, slices_path: str | os.PathLike, *, anomalous: bool,
               threshold: float | None = None, min_component_voxels: int | None = None,
               search: str = "interval", steps: int = 10, progress: bool = True,
               threads: int = 1) -> pd.DataFrame:
    """One row per test volume: subject, dice, auprc, auroc, best_dice (anomalous) or subject, recon_error."""
    if anomalous and threshold is None:
        raise PddpmInputError(f"{slices_path}: an anomalous test split needs the threshold from its val split")
    if anomalous:
        subjects, maps, segs = _open_pair(infer_path, slices_path, "anomaly", "seg")
        row = partial(_metrics_row, threshold=threshold, min_component_voxels=min_component_voxels,
                      search=search, steps=steps)
        items, columns = zip(maps, segs, strict=True), ["dice", "auprc", "auroc", "best_dice"]
    else:
        subjects, recons, images = _open_pair(infer_path, slices_path, "recon", "image")
        row, items, columns = _error_row, zip(recons, images, strict=True), ["recon_error"]
    rows = list(map_volumes(row, items, threads=threads, total=len(subjects), progress=progress,
                            desc="metrics"))
    table = pd.DataFrame(rows, columns=columns)
    table.insert(0, "subject", subjects)
    return table


def write_json(obj: dict, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
    return Path(path)


def read_threshold(path: str | os.PathLike) -> float:
    path = Path(path)
    try:
        return float(json.loads(path.read_text())["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PddpmInputError(f"{path}: no readable `threshold` ({exc}); delete it and rerun `threshold`") from exc


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)
