"""The infer -> threshold -> metrics rules run for real by snakemake on synthetic slices and models.

Upstream outputs (slice files, trained models) are written here directly in their contract formats and
`--allowed-rules` keeps snakemake from rebuilding them, so this exercises only the inference and evaluation rules."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pddpm.evaluate.inference_file import load_inference
from pddpm.models import build, save_trained
from pddpm.slices import save_split
from workflow_utils import TINY_CONFIG, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.workflow
OURS = ("--allowed-rules", "infer", "threshold", "metrics")
Z, H, W = 25, 48, 48  # the tiny config's model grid


def _split(names, anomalous, seed):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:Z, :H, :W]
    brain = ((yy - 24) ** 2 + (xx - 24) ** 2 < 18 ** 2) & (zz > 2) & (zz < 22)
    n = len(names)
    image = np.zeros((n, Z, H, W), np.float32)
    seg = np.zeros((n, Z, H, W), np.uint8)
    for i in range(n):
        image[i] = brain * (0.4 + 0.05 * rng.standard_normal(brain.shape))
        if anomalous:
            lesion = (zz - 12) ** 2 + (yy - 20 - 3 * i) ** 2 + (xx - 26) ** 2 < 5 ** 2
            image[i][lesion] = 0.9
            seg[i] = lesion
    return {"image": np.clip(image, 0, 1).astype(np.float16), "mask": np.repeat(brain[None], n, 0).astype(np.uint8),
            "seg": seg, "subjects": np.array(names), "label": np.full(n, int(anomalous)),
            "spacing_mm": np.float64(4.0), "fov_mm": np.array([192.0, 192.0, 100.0])}


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("eval_run")
    # pddpm (patches) and thresh (no network) on one anomalous and the healthy set keep it to 12 jobs;
    # the DDPM whole-slice path is covered by tests/test_infer.py
    write_config(work, {"models": ["pddpm", "thresh"]})
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    res = work / "results"
    for ds, anomalous in (("demo_brats", True), ("demo_ixi", False)):
        for k, split in enumerate(["val", "test"] if anomalous else ["test"]):
            names = [f"{ds}_{split}_{i}" for i in range(1 if split == "val" else 2)]
            save_split(_split(names, anomalous, seed=k), res / "slices" / f"{ds}_{split}.npz")
    for kind in ("pddpm",):
        settings = {"kind": kind, "unet": cfg["unet"], "diffusion": {}, "patch": cfg["patch"], "image_size": [H, W]}
        torch.manual_seed(0)
        save_trained(build(kind, settings), res / "models" / kind / "fold0" / "model.pt")
    targets = [f"results/eval/{m}/fold0/{ds}_per_volume.csv" for m in ("pddpm", "thresh")
               for ds in ("demo_brats", "demo_ixi")]
    snakemake(work, *targets, *OURS)
    return work, targets


def test_outputs_follow_the_contract(eval_run):
    work, targets = eval_run
    res = work / "results"
    for model in ("pddpm", "thresh"):
        for ds, split in (("demo_brats", "val"), ("demo_brats", "test"), ("demo_ixi", "test")):
            inf = load_inference(res / "infer" / model / "fold0" / f"{ds}_{split}.npz")
            assert inf["recon"].dtype == np.float16 and inf["anomaly"].dtype == np.float16
            assert inf["anomaly"].shape[1:] == (Z, H, W) and int(inf["seed"]) == 3141
        thr = json.loads((res / "eval" / model / "fold0" / "demo_brats_threshold.json").read_text())
        assert thr["method"] == "interval" and thr["threshold"] > 0 and 0 <= thr["val_dice"] <= 1
        table = pd.read_csv(res / "eval" / model / "fold0" / "demo_brats_per_volume.csv")
        assert list(table.columns) == ["subject", "dice", "auprc", "auroc", "best_dice"] and len(table) == 2
        healthy = pd.read_csv(res / "eval" / model / "fold0" / "demo_ixi_per_volume.csv")
        assert list(healthy.columns) == ["subject", "recon_error"] and (healthy.recon_error > 0).all()
    # the lesions are the brightest voxels: the intensity baseline must find them
    thresh = pd.read_csv(res / "eval" / "thresh" / "fold0" / "demo_brats_per_volume.csv")
    assert (thresh.dice > 0.5).all() and (thresh.auroc > 0.9).all()
    assert (work / "results" / "logs" / "infer" / "pddpm" / "fold0" / "demo_brats_test.log").exists()


def test_reruns_exactly_what_a_setting_changes(eval_run):
    work, targets = eval_run
    assert planned_jobs(work, *targets, *OURS) == {}
    cfg = yaml.safe_load((work / "config.yaml").read_text())

    def plan(section, key, value):
        changed = {**cfg, section: {**cfg.get(section, {}), key: value}}
        (work / "config.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
        try:
            return planned_jobs(work, *targets, *OURS)
        finally:
            (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    assert plan("infer", "batch_size", 7) == {}  # speed only
    assert plan("evaluate", "threads", 2) == {}
    # anomalous-only settings leave the healthy set's metrics alone; on the tiny config's 4 mm grid
    # 200 mm^3 is 3 voxels (the default 56 mm^3: none), 60 mm^3 still none, so it reruns nothing
    assert plan("evaluate", "min_component_mm3", 200) == {"metrics": 2}
    assert plan("evaluate", "min_component_mm3", 60) == {}
    assert plan("evaluate", "threshold_search", "exact") == {"threshold": 2, "metrics": 2}
    # post-processing lives in the inference file (contract): every split of every model
    assert plan("evaluate", "erosion_mm", 8) == {"infer": 6, "threshold": 2, "metrics": 4}
    assert plan("evaluate", "median_radius_mm", 5) == {}  # still a 3 x 3 x 3 window at 4 mm
    # a network setting: only the pddpm jobs, thresh is untouched
    assert plan("infer", "test_timestep", 250) == {"infer": 3, "threshold": 1, "metrics": 2}
