"""Evaluation from files: inference and slices files that disagree, thresholds and tables written atomically."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pddpm.errors import PddpmInputError
from pddpm.evaluate.inference_file import save_inference
from pddpm.evaluate.split import per_volume, read_threshold, split_threshold, write_csv, write_json
from pddpm.slices import save_split

SHAPE = (2, 6, 12, 12)


def _slices(path, subjects=("a", "b"), lesion=True, shape=SHAPE):
    seg = np.zeros(shape, np.uint8)
    if lesion:
        seg[:, 2:4, 4:8, 4:8] = 1
    image = (0.3 + 0.6 * seg).astype(np.float16)
    save_split({"image": image, "mask": np.ones(shape, np.uint8), "seg": seg, "subjects": np.array(subjects),
                "label": np.ones(len(subjects), int), "spacing_mm": np.float64(4.0),
                "fov_mm": np.array([48.0, 48.0, 24.0])}, path)
    return image, seg


def _inference(path, anomaly, subjects=("a", "b")):
    save_inference(path, np.zeros_like(anomaly), anomaly, list(subjects), {"seed": 1})


def test_threshold_and_table_from_files(tmp_path):
    image, seg = _slices(tmp_path / "val.npz")
    _inference(tmp_path / "inf_val.npz", image)
    res = split_threshold(tmp_path / "inf_val.npz", tmp_path / "val.npz", method="exact")
    assert 0.3 <= res["threshold"] < 0.9 and res["val_dice"] == 1.0 and res["n_volumes"] == 2
    write_json(res, tmp_path / "eval" / "t.json")
    t = read_threshold(tmp_path / "eval" / "t.json")
    table = per_volume(tmp_path / "inf_val.npz", tmp_path / "val.npz", anomalous=True, threshold=t,
                       progress=False)
    assert table.subject.tolist() == ["a", "b"] and (table.dice == 1.0).all() and (table.auprc == 1.0).all()
    healthy = per_volume(tmp_path / "inf_val.npz", tmp_path / "val.npz", anomalous=False, progress=False)
    assert healthy.recon_error.tolist() == pytest.approx([float(image[0].astype(np.float32).mean())] * 2)
    write_csv(table, tmp_path / "eval" / "pv.csv")
    assert pd.read_csv(tmp_path / "eval" / "pv.csv").dice.tolist() == [1.0, 1.0]
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["pv.csv", "t.json"]  # no temp files


def test_validation_split_without_anomalous_voxels(tmp_path):
    image, _ = _slices(tmp_path / "val.npz", lesion=False)
    _inference(tmp_path / "inf.npz", image)
    with pytest.raises(PddpmInputError, match=r"val\.npz: no anomalous voxel"):
        split_threshold(tmp_path / "inf.npz", tmp_path / "val.npz")


def test_stale_inference_is_refused(tmp_path):
    image, _ = _slices(tmp_path / "test.npz")
    _inference(tmp_path / "other_subjects.npz", image, subjects=("a", "c"))
    with pytest.raises(PddpmInputError, match="stale"):
        per_volume(tmp_path / "other_subjects.npz", tmp_path / "test.npz", anomalous=True, threshold=0.5)
    _inference(tmp_path / "other_grid.npz", np.zeros((2, 6, 12, 10), np.float16))
    with pytest.raises(PddpmInputError, match="different grids"):
        split_threshold(tmp_path / "other_grid.npz", tmp_path / "test.npz")
    _inference(tmp_path / "ok.npz", image)
    with pytest.raises(PddpmInputError, match="needs the threshold"):
        per_volume(tmp_path / "ok.npz", tmp_path / "test.npz", anomalous=True)


def test_unreadable_threshold_file(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"method": "interval"}))
    with pytest.raises(PddpmInputError, match="threshold"):
        read_threshold(tmp_path / "t.json")
