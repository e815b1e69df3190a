"""The inference file `results/infer/{model}/fold{fold}/{ds}_{split}.npz`, read and written without torch
(evaluation, tables and figures run in an environment without it)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pddpm.errors import PddpmInputError
from pddpm.io import atomic_path


def save_inference(path: str | os.PathLike, recons: np.ndarray, maps: np.ndarray, subjects: Sequence[str],
                   info: dict) -> Path:
    """Write the inference npz atomically (recon, anomaly float16; subjects; seed; info as JSON)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, recon=np.asarray(recons, np.float16), anomaly=np.asarray(maps, np.float16),
                            subjects=np.asarray(subjects).astype(str), seed=np.int64(info.get("seed", -1)),
                            info=np.asarray(json.dumps(info)))
    return path


def load_inference(path: str | os.PathLike) -> dict:
    """Read an inference npz: recon, anomaly (float16 (N, Z, H, W)), subjects, seed, info (dict)."""
    path = Path(path)
    if not path.exists():
        raise PddpmInputError(f"{path}: inference output not found; run the `infer` rule for it")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except Exception as exc:
        raise PddpmInputError(f"{path}: not a readable inference file ({exc}); delete it and rerun `infer`") from exc
    missing = {"recon", "anomaly", "subjects"} - set(out)
    if missing:
        raise PddpmInputError(f"{path}: lacks {sorted(missing)}; delete it and rerun `infer`")
    out["info"] = json.loads(str(out["info"])) if "info" in out else {}
    return out
