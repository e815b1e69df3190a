"""Checks across config keys that a JSON schema cannot express; each message names the key and the fix."""

from __future__ import annotations

import difflib
from pathlib import Path

import jsonschema
import yaml

from pddpm.errors import PddpmConfigError


def schema_problems(config: dict, schema_path: str | Path) -> list[str]:
    """Every schema violation as one line `key.path: what is wrong (what is allowed)`.

    Snakemake's own `validate` prints the whole schema for the first error only; users need the key,
    all the errors at once, and a suggestion for a typo.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    lines = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(map(str, err.absolute_path)) or "(top level)"
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = [k for k in err.instance if k not in allowed]
            for key in extra:
                near = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean '{near[0]}'?" if near else ""
                lines.append(f"{where}: unknown key '{key}'{hint} allowed: {', '.join(allowed) or 'none'}")
            continue
        if err.validator == "enum":
            lines.append(f"{where}: {err.instance!r} is not allowed; choose one of {err.validator_value}")
            continue
        desc = err.schema.get("description")
        lines.append(f"{where}: {err.message}" + (f" ({desc})" if desc else ""))
    return lines


def validate_config(config: dict, schema_path: str | Path) -> None:
    problems = schema_problems(config, schema_path)
    if problems:
        raise PddpmConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def check_config(config: dict) -> None:
    datasets = config["datasets"]
    problems = []
    train = config["train_dataset"]
    if train not in datasets:
        problems.append(f"train_dataset: '{train}' is not a key of datasets (have: {', '.join(datasets)})")
    elif datasets[train]["role"] != "healthy":
        problems.append(f"train_dataset: '{train}' has role '{datasets[train]['role']}', it must be healthy")
    for ds, cfg in datasets.items():
        if cfg["source"] == "demo" and "n_subjects" not in cfg:
            problems.append(f"datasets.{ds}.n_subjects: required for source 'demo' (e.g. n_subjects: 8)")
        if cfg["source"] != "demo" and "n_subjects" in cfg:
            problems.append(f"datasets.{ds}.n_subjects: only for source 'demo', remove it")
        if cfg["source"] in ("local", "preprocessed") and not cfg.get("path"):
            problems.append(f"datasets.{ds}.path: required for source '{cfg['source']}' (the folder with the data)")
    folds = config["splits"]["folds"]
    bad = [k for k in config["folds_to_run"] if k >= folds]
    if bad:
        problems.append(f"folds_to_run: {bad} not below splits.folds = {folds}; use folds 0..{folds - 1}")
    patch = config["patch"]
    if patch["stride"] > patch["size"]:
        problems.append(f"patch.stride ({patch['stride']}) larger than patch.size ({patch['size']}) leaves gaps")
    if problems:
        raise PddpmConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
