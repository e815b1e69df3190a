"""Evaluation from files: inference and slices files that disagree, thresholds and tables written atomically."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest

import evaluate_reference
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


def _big_split(tmp_path, n=60, shape=(16, 48, 48), seed=0):
    rng = np.random.default_rng(seed)
    seg = np.zeros((n, *shape), np.uint8)
    for i in range(n):
        if i % 7:  # every seventh volume without lesion: undefined AUPRC/AUROC/best Dice, Dice 0 or NaN
            seg[i, 4:9, 10 + i % 20:18 + i % 20, 12:20] = 1
    image = np.clip(0.3 + 0.5 * seg + 0.05 * rng.standard_normal(seg.shape), 0, 1).astype(np.float16)
    subjects = [f"s{i:03d}" for i in range(n)]
    save_split({"image": image, "mask": np.ones(seg.shape, np.uint8), "seg": seg, "subjects": np.array(subjects),
                "label": np.ones(n, int), "spacing_mm": np.float64(4.0),
                "fov_mm": np.array([192.0, 192.0, 64.0])}, tmp_path / "test.npz")
    maps = (np.abs(image.astype(np.float32) - 0.3) * (rng.random(seg.shape) < 0.9)).astype(np.float16)
    recon = np.full(seg.shape, 0.3, np.float16)
    save_inference(tmp_path / "inf.npz", recon, maps, subjects, {"seed": 1})
    return image, seg, maps


def test_split_tables_on_threads_equal_the_plain_path(tmp_path):
    image, seg, maps = _big_split(tmp_path)
    one = per_volume(tmp_path / "inf.npz", tmp_path / "test.npz", anomalous=True, threshold=0.3,
                     min_component_voxels=7, progress=False)
    two = per_volume(tmp_path / "inf.npz", tmp_path / "test.npz", anomalous=True, threshold=0.3,
                     min_component_voxels=7, progress=False, threads=2)
    pd.testing.assert_frame_equal(one, two)
    for i in (0, 1, 13):  # volume 0: no lesion
        ref = evaluate_reference.volume_metrics(maps[i], seg[i], 0.3, 7)
        for key, value in ref.items():
            assert one[key][i] == pytest.approx(value, abs=1e-6, nan_ok=True)
    assert np.isnan(one.auprc[0]) and not np.isnan(one.auprc[1])
    healthy = per_volume(tmp_path / "inf.npz", tmp_path / "test.npz", anomalous=False, progress=False, threads=2)
    expected = np.abs(image.astype(np.float32) - np.float32(np.float16(0.3))).mean(axis=(1, 2, 3))
    assert healthy.recon_error.to_numpy() == pytest.approx(expected)
    for method in ("interval", "exact"):
        a = split_threshold(tmp_path / "inf.npz", tmp_path / "test.npz", method=method, progress=False)
        b = split_threshold(tmp_path / "inf.npz", tmp_path / "test.npz", method=method, threads=2, progress=False)
        assert a == b
        assert (a["threshold"], a["val_dice"]) == evaluate_reference.choose_threshold(maps, seg, method)


def test_split_is_read_one_volume_at_a_time(tmp_path):
    """Peak memory of the metrics and the threshold does not grow with the split (4x the volumes); on
    one thread, where tracemalloc sees all of the work (worker processes hold one volume each)."""
    peaks = {}
    for n in (20, 80):
        (tmp_path / str(n)).mkdir()
        _big_split(tmp_path / str(n), n=n, shape=(16, 96, 96))
        for job in ("metrics", "threshold"):
            tracemalloc.start()
            try:
                if job == "metrics":
                    per_volume(tmp_path / str(n) / "inf.npz", tmp_path / str(n) / "test.npz", anomalous=True,
                               threshold=0.3, min_component_voxels=7, progress=False)
                else:
                    split_threshold(tmp_path / str(n) / "inf.npz", tmp_path / str(n) / "test.npz",
                                    progress=False)
                peaks[n, job] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    # 60 more volumes would hold 26 MB more (float16 map and uint8 labels: 442 kB each) if read whole;
    # what varies is the few volumes and histograms (1 MB each) in flight
    for job in ("metrics", "threshold"):
        assert peaks[80, job] < peaks[20, job] + 5e6, (job, peaks)
