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


def test_rules_between_a_data_sets_keys_are_in_the_schema():
    cfg = load("config.yaml")
    cfg["datasets"]["demo_ixi"].pop("n_subjects")
    cfg["datasets"]["ixi"] = {"source": "local", "kind": "ixi", "role": "healthy", "n_subjects": 4}
    problems = schema_problems(cfg, SCHEMA)
    assert "datasets.demo_ixi: source demo needs n_subjects (how many subjects to synthesise, e.g. n_subjects 8)" \
        in problems
    assert "datasets.ixi: n_subjects is only for source demo; remove it" in problems
    assert any(p.startswith("datasets.ixi: source local and preprocessed need path") for p in problems)


def test_demo_role_and_brats_download_are_checked_with_the_rest():
    cfg = load("config.yaml")
    cfg["datasets"]["demo_mslub"]["role"] = "healthy"
    cfg["datasets"]["brats"] = {"source": "download", "kind": "brats", "role": "anomalous"}
    with pytest.raises(PddpmConfigError) as err:
        check_config(cfg)
    msg = str(err.value)
    assert "datasets.demo_mslub: a demo data set of kind 'mslub' is anomalous; set role: anomalous" in msg
    assert "datasets.brats: BraTS 2021 cannot be downloaded" in msg and "source: local" in msg


@pytest.mark.parametrize("name", ["config.yaml", "configs/paper.yaml", "tests/configs/tiny.yaml"])
def test_defaults_filled_as_snakemake_validate_fills_them(name):
    """check_config fills in the schema's defaults exactly as snakemake's own `validate` would."""
    from snakemake.utils import validate

    theirs = load(name)
    validate(theirs, str(SCHEMA))
    ours = check_config(load(name))
    assert ours == theirs


def test_every_key_is_described():
    missing = []

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            if not sub.get("description"):
                missing.append(".".join([*path, key]))
            walk(sub, [*path, key])
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], [*path, "<key>"])

    walk(yaml.safe_load(SCHEMA.read_text()), [])
    assert not missing, f"keys without a description in {SCHEMA.name}: {missing}"


def test_workflow_stops_before_any_job(tmp_path: Path):
    write_config(tmp_path, {"preprocess": {"spacing_mm": -1, "skullstrip": {"backend": "bet"}}})
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "preprocess.spacing_mm: -1 is less than or equal to the minimum of 0" in out
    assert "preprocess.skullstrip.backend: 'bet' is not allowed" in out
    # nothing was run or written
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".snakemake") == ["config.yaml"]
