"""Evaluation of one split from its files: the threshold of a validation split, the per-volume table
of a test split. Checks that the inference output and the slices file describe the same volumes."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
from tqdm import tqdm

# the files' readers and writers live in pddpm.artefacts; the old names stay importable from here
from pddpm.artefacts import (
    load_inference,
    load_split,
    per_volume_columns,
    read_threshold,  # noqa: F401
)
from pddpm.artefacts import write_per_volume as write_csv  # noqa: F401
from pddpm.artefacts import write_threshold as write_json  # noqa: F401
from pddpm.errors import PddpmInputError
from pddpm.evaluate.metrics import recon_error, volume_metrics
from pddpm.evaluate.threshold import choose_threshold

log = logging.getLogger("pddpm.evaluate")


def _load_pair(infer_path, slices_path) -> tuple[dict, dict]:
    inf = load_inference(infer_path)
    split = load_split(slices_path, mmap=True)
    subs_i = np.asarray(inf["subjects"]).astype(str).tolist()
    subs_s = np.asarray(split["subjects"]).astype(str).tolist()
    if subs_i != subs_s:
        raise PddpmInputError(f"{infer_path} holds subjects {subs_i[:5]}... but {slices_path} holds "
                              f"{subs_s[:5]}...; the inference is stale, delete it and rerun `infer`")
    if inf["anomaly"].shape != split["image"].shape:
        raise PddpmInputError(f"{infer_path}: anomaly maps {inf['anomaly'].shape} and {slices_path}: images "
                              f"{split['image'].shape} are on different grids; delete the inference and rerun")
    return inf, split


def split_threshold(infer_path: str | os.PathLike, slices_path: str | os.PathLike, method: str = "interval",
                    steps: int = 10) -> dict:
    """The Dice-optimal threshold over all voxels of a validation split (see threshold.choose_threshold)."""
    inf, split = _load_pair(infer_path, slices_path)
    result = choose_threshold(inf["anomaly"], split["seg"], method=method, steps=steps, source=str(slices_path))
    result.update(infer=str(infer_path), slices=str(slices_path))
    log.info("threshold %.6g (%s search), validation Dice %.4f over %d volumes", result["threshold"], method,
             result["val_dice"], result["n_volumes"])
    return result


def per_volume(infer_path: str | os.PathLike, slices_path: str | os.PathLike, *, anomalous: bool,
               threshold: float | None = None, min_component_voxels: int = 7, search: str = "interval",
               steps: int = 10, progress: bool = True) -> pd.DataFrame:
    """One row per test volume: subject, dice, auprc, auroc, best_dice (anomalous) or subject, recon_error."""
    inf, split = _load_pair(infer_path, slices_path)
    if anomalous and threshold is None:
        raise PddpmInputError(f"{slices_path}: an anomalous test split needs the threshold from its val split")
    rows = []
    subjects = np.asarray(inf["subjects"]).astype(str)
    for i in tqdm(range(len(subjects)), desc="metrics", unit="vol", disable=not progress, mininterval=5):
        row = {"subject": subjects[i]}
        if anomalous:
            row.update(volume_metrics(inf["anomaly"][i], split["seg"][i], threshold,
                                      min_component_voxels=min_component_voxels, search=search, steps=steps))
        else:
            row["recon_error"] = recon_error(split["image"][i], inf["recon"][i])
        rows.append(row)
    return pd.DataFrame(rows, columns=per_volume_columns(anomalous))
