"""The config is checked before any job runs, and the message names the key and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pddpm.config_checks import check_config, schema_problems
from pddpm.errors import PddpmConfigError
from workflow_utils import REPO, snakemake, write_config

SCHEMA = REPO / "schemas" / "config.schema.yaml"


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "configs/paper.yaml", "tests/configs/tiny.yaml"])
def test_shipped_configs_are_valid(name):
    assert schema_problems(load(name), SCHEMA) == []


def test_typo_is_named_with_a_suggestion():
    cfg = load("config.yaml")
    cfg["sed"] = cfg.pop("seed")
    cfg["preprocess"]["n4"] = {"iteratons": 10}
    problems = schema_problems(cfg, SCHEMA)
    assert any("(top level): unknown key 'sed'; did you mean 'seed'?" in p for p in problems)
    assert any(p.startswith("preprocess.n4: unknown key 'iteratons'; did you mean 'iterations'?")
               for p in problems)


def test_wrong_type_and_enum_are_named():
    cfg = load("config.yaml")
    cfg["preprocess"]["spacing_mm"] = "two"
    cfg["datasets"]["demo_ixi"]["source"] = "web"
    problems = schema_problems(cfg, SCHEMA)
    assert any(p.startswith("preprocess.spacing_mm: 'two' is not of type 'number'") for p in problems)
    assert any(p.startswith("datasets.demo_ixi.source: 'web' is not allowed; choose one of") for p in problems)


def test_cross_key_checks():
    cfg = load("config.yaml")
    bad = copy.deepcopy(cfg)
    bad["train_dataset"] = "ixi"
    bad["folds_to_run"] = [0, 3]
    bad["splits"] = {"folds": 2}
    with pytest.raises(PddpmConfigError) as err:
        check_config(bad)
    msg = str(err.value)
    assert "train_dataset: 'ixi' is not a key of datasets" in msg
    assert "folds_to_run: [3] not below splits.folds = 2" in msg
    anomalous_train = copy.deepcopy(cfg)
    anomalous_train["train_dataset"] = "demo_brats"
    anomalous_train.setdefault("splits", {})["folds"] = 1
    with pytest.raises(PddpmConfigError, match="it must be healthy"):
        check_config({**anomalous_train, "folds_to_run": [0], "patch": {"size": 24, "stride": 24}})


def test_workflow_stops_before_any_job(tmp_path: Path):
    write_config(tmp_path, {"preprocess": {"spacing_mm": -1, "skullstrip": {"backend": "bet"}}})
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "preprocess.spacing_mm: -1 is less than or equal to the minimum of 0" in out
    assert "preprocess.skullstrip.backend: 'bet' is not allowed" in out
    # nothing was run or written
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".snakemake") == ["config.yaml"]
