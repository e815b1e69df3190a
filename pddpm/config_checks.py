"""Checks across config keys that a JSON schema cannot express; each message names the key and the fix."""

from __future__ import annotations

from pddpm.errors import PddpmConfigError


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
