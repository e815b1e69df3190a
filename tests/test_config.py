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
    levels = copy.deepcopy(cfg)
    levels["preprocess"]["register"]["iterations"] = [100, 10]
    with pytest.raises(PddpmConfigError, match="preprocess.register: iterations, shrink_factors and smoothing_sigmas"):
        check_config(levels)


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


# ------------------------------------------------------------------ model settings against the slice size
def _problems_of(overrides: dict) -> str:
    cfg = load("config.yaml")  # the demo: 48 x 48 x 25 model grid
    cfg.update(overrides)
    with pytest.raises(PddpmConfigError) as err:
        check_config(cfg)
    return str(err.value)


def test_model_grid_is_the_field_of_view_over_the_spacing():
    from pddpm.models.checks import model_grid

    assert model_grid(check_config(load("config.yaml"))) == (48, 48, 25)
    assert model_grid(check_config(load("configs/paper.yaml"))) == (96, 96, 50)
    assert model_grid({"slices": {"fov_mm": [190, 200, 10], "target_spacing_mm": 4.0}}) == (48, 50, 2)


def test_diffusion_settings_that_do_not_fit_the_slices_stop_the_check():
    msg = _problems_of({"unet": {"channel_mult": [1, 2, 2, 2, 2, 2]}})  # 5 downsamplings: 48 / 32
    assert ("unet.channel_mult: 5 downsamplings (entries - 1) need slice sides divisible by 32, but the 48 x 48 "
            "slices of the model grid (slices.fov_mm / slices.target_spacing_mm) allow at most 4; allowed: at "
            "most 5 entries") in msg
    msg = _problems_of({"patch": {"size": 20, "stride": 20}})
    assert ("patch.size/patch.stride: 20 x 20 patches with stride 20 do not tile the 48 x 48 slices of the model "
            "grid (slices.fov_mm / slices.target_spacing_mm) ((side - size) must divide by the stride); allowed "
            "strides for size 20: 1, 2, 4, 7, 14") in msg
    assert "patch size 60 is larger than the 48 x 48 slices" in _problems_of({"patch": {"size": 60, "stride": 60}})
    assert "infer.stride: 24 x 24 patches with stride 5" in _problems_of({"infer": {"stride": 5}})
    # only the models that run are checked: DDPM has no patch grid
    ok = load("config.yaml")
    ok.update({"models": ["ddpm", "thresh"], "patch": {"size": 20, "stride": 20}})
    check_config(ok)


def test_autoencoder_settings_that_do_not_fit_the_slices_stop_the_check():
    msg = _problems_of({"models": ["ae", "vae", "svae", "thresh"], "ae": {"widths": [8, 8, 8, 8, 8]},
                        "vae": {"widths": [8] * 6}, "svae": {"sequence_length": 30, "heads": 5}})
    assert "ae.widths: 5 stride-2 levels (one per entry) need slice sides divisible by 32" in msg
    assert "vae.widths: 6 stride-2 levels (one per entry) need slice sides divisible by 64" in msg
    assert msg.count("allowed: at most 4 entries") == 2  # 48 = 3 x 2^4
    assert ("svae.sequence_length: windows of 30 slices are longer than the 25 axial slices of a volume on the "
            "model grid (slices.fov_mm[2] / slices.target_spacing_mm); allowed: 2..25") in msg
    assert "svae.heads: 5 attention heads do not divide svae.latent_dim 128; allowed: 1, 2, 4, 8, 16" in msg


def test_a_model_setting_that_does_not_fit_stops_the_dry_run(tmp_path: Path):
    write_config(tmp_path, {"models": ["pddpm", "vae", "thresh"], "vae": {"widths": [4, 4, 4, 4, 4]}})
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "vae.widths: 5 stride-2 levels (one per entry) need slice sides divisible by 32" in out
    assert "allowed: at most 4 entries" in out
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".snakemake") == ["config.yaml"]
