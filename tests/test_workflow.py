"""The workflow itself: lint-clean, the expected DAG, and a real run of the tiny demo end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from pddpm import artefacts
from pddpm.config_checks import check_config
from pddpm.models import KINDS
from pddpm.report.table import order_models
from workflow_utils import REPO, TINY_CONFIG, merge_configs, planned_jobs, snakemake, write_config

DEMO_ALL_MODELS = REPO / "configs" / "demo_all_models.yaml"
DEMO_LONG = REPO / "configs" / "demo_long.yaml"

PER_SUBJECT_RULES = ["demo_cohort", "resample", "skullstrip", "register", "crop", "n4", "qc_subject"]


def expected_counts(config: dict) -> dict[str, int]:
    """Job counts that follow from the config alone, computed independently of the rules' code."""
    datasets = config["datasets"]
    n_subjects = sum(d["n_subjects"] for d in datasets.values())
    anomalous = [k for k, d in datasets.items() if d["role"] == "anomalous"]
    folds = config["splits"]["folds"]
    runs = len(config["folds_to_run"])
    models = config["models"]
    trained = [m for m in models if m != "thresh"]
    n_splits = sum(2 if d["role"] == "anomalous" else 2 * folds + 1 for d in datasets.values())
    counts = dict.fromkeys(PER_SUBJECT_RULES, n_subjects)
    counts |= {
        "demo_subjects_tsv": len(datasets),
        "qc_dataset": len(datasets),
        "splits": n_splits,
        "slices": n_splits,
        "train": len(trained) * runs,
        # anomalous val + test, and the healthy test set
        "infer": len(models) * runs * (2 * len(anomalous) + 1),
        "threshold": len(models) * runs * len(anomalous),
        "metrics": len(models) * runs * (len(anomalous) + 1),
        "table": 1,
        "all": 1,
    }
    return counts


@pytest.mark.parametrize("config_path", [REPO / "config.yaml", TINY_CONFIG], ids=["demo", "tiny"])
def test_dry_run_plans_the_expected_jobs(tmp_path, config_path):
    write_config(tmp_path, base=config_path)
    counts = planned_jobs(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    for rule, n in expected_counts(config).items():
        assert counts.get(rule) == n, f"{rule}: planned {counts.get(rule)}, expected {n}"
    for figure_rule in ("qualitative", "pr_curves", "dice_distribution", "training_curves"):
        assert counts.get(figure_rule, 0) >= 1


def test_demo_all_models_overlay_is_valid_fits_its_slices_and_plans_all_eight_models(tmp_path):
    """configs/demo_all_models.yaml over config.yaml: every kind, in the paper's row order; the schema and
    every kind's pre-job check pass (check_config raises otherwise); the real two-file command plans
    each model's jobs."""
    config = merge_configs(REPO / "config.yaml", DEMO_ALL_MODELS)
    # the pDDPM paper's Table 1: every kind but the successor paper's cDDPM (docs/cddpm.md)
    table1_kinds = [k for k in order_models(KINDS) if not k.startswith("cddpm")]
    assert config["models"] == table1_kinds and len(config["models"]) == 8
    check_config(config)
    counts = planned_jobs(tmp_path, "--configfile", str(REPO / "config.yaml"), str(DEMO_ALL_MODELS))
    for rule, n in expected_counts(config).items():
        assert counts.get(rule) == n, f"{rule}: planned {counts.get(rule)}, expected {n}"


def test_demo_long_overlay_is_the_demo_with_ten_times_its_training(tmp_path):
    """configs/demo_long.yaml over config.yaml changes the training length (10x the demo's epochs, so 2,040
    full steps) and the run name, nothing else: its table is the demo's with longer training, and each
    model resumes from the demo's checkpoint (epochs may differ in a resumed run). It validates and the
    real two-file command plans the demo's jobs."""
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    config = merge_configs(REPO / "config.yaml", DEMO_LONG)
    assert config["train"]["epochs"] == 10 * demo["train"]["epochs"]
    assert {**config, "train": demo["train"], "run_name": demo["run_name"]} == demo
    assert {**config["train"], "epochs": demo["train"]["epochs"]} == demo["train"]
    check_config(config)
    counts = planned_jobs(tmp_path, "--configfile", str(REPO / "config.yaml"), str(DEMO_LONG))
    for rule, n in expected_counts(config).items():
        assert counts.get(rule) == n, f"{rule}: planned {counts.get(rule)}, expected {n}"


def test_lint_is_clean(tmp_path):
    write_config(tmp_path)
    proc = snakemake(tmp_path, "--lint", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Congratulations, your workflow is in a good condition!" in out, out


@pytest.mark.workflow
def test_tiny_run_end_to_end(tiny_run):
    """The whole chain ran for real: every stage's outputs exist and are consistent with each other."""
    res = tiny_run / "results"
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    table = pd.read_csv(tiny_run / artefacts.path(artefacts.TABLE1, ext="csv"))
    assert not table.empty
    for ext in ("md", "tex"):
        assert (res / "tables" / f"table1.{ext}").stat().st_size > 100
    for model in config["models"]:
        for ds, d in config["datasets"].items():
            per_volume = pd.read_csv(res / "eval" / model / "fold0" / f"{ds}_per_volume.csv")
            test_sheet = pd.read_csv(res / "splits" / f"{ds}_test.csv")
            assert len(per_volume) == len(test_sheet), (model, ds)
            if d["role"] == "anomalous":
                assert per_volume["dice"].between(0, 1).all()
                assert per_volume["auprc"].between(0, 1).all()
                threshold = json.loads((res / "eval" / model / "fold0" / f"{ds}_threshold.json").read_text())
                assert threshold["threshold"] > 0
    pngs = list((res / "figures").rglob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    # every rule wrote its log
    assert len(list((res / "logs").rglob("*.log"))) >= sum(expected_counts(config).values()) - 1


PAPER_ROWS = ["thresh", "ae", "vae", "svae", "dae", "fanogan", "ddpm", "pddpm"]  # Table 1, top to bottom


@pytest.mark.workflow
def test_tiny_run_table1_has_all_eight_models_in_the_papers_order(tiny_run):
    """Every kind trained (or, for Thresh, evaluated) end to end: Table 1 of the run has its eight rows,
    in the paper's order, each followed by the paper's row, with finite numbers of this run."""
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert sorted(config["models"]) == sorted(PAPER_ROWS)
    table = pd.read_csv(tiny_run / artefacts.path(artefacts.TABLE1, ext="csv"))
    assert list(zip(table["model"], table["source"], strict=True)) == [
        (m, s) for m in PAPER_ROWS for s in ("this run", "paper")]
    ours = table[table["source"] == "this run"].set_index("model")
    means = [c for c in table.columns if c.endswith("_mean")]
    assert {m for c in means for m in ("dice", "auprc", "recon_error") if f"_{m}_" in c} == {
        "dice", "auprc", "recon_error"}
    for model, row in ours[means].iterrows():
        for col, value in row.items():
            if model == "thresh" and "recon_error" in col:
                assert np.isnan(value)  # Thresh reconstructs nothing: n/a
            else:
                assert np.isfinite(value), (model, col)
                assert 0 <= value <= (100 if col.endswith(("dice_mean", "auprc_mean")) else 1), (model, col, value)
    # every trained kind wrote a training log with its own terms, drawn in the training-curve figure
    for model in PAPER_ROWS:
        log = tiny_run / artefacts.path(artefacts.TRAIN_LOG, model=model, fold=0)
        assert log.exists() == (model != "thresh"), model


@pytest.mark.workflow
def test_nothing_left_to_do_after_a_run(tiny_run):
    assert planned_jobs(tiny_run) == {}


@pytest.mark.workflow
def test_report_is_built(tiny_run):
    snakemake(tiny_run, "--report", "report.html")
    html = (tiny_run / "report.html").read_text(errors="replace")
    assert len(html) > 100_000 and "table1" in html
