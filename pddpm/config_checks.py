"""The one check of a run's config: the schema (schemas/config.schema.yaml), then the few checks across
keys that JSON Schema cannot express. Each message names the key and the fix; all are listed at once.

The Snakefile calls `check_config` once, before any rule is defined.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

import jsonschema
import yaml

from pddpm import config as config_lib
from pddpm.errors import PddpmConfigError
from pddpm.models import checks as model_checks
from pddpm.preprocess.register import level_problems as register_level_problems


def _problems(instance, schema: dict, prefix: Sequence[str] = ()) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    lines = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join([*prefix, *map(str, err.absolute_path)]) or "(top level)"
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
        # a rule between keys (an if/then of the schema) says itself what is wrong and what to do
        if desc and {"then", "else"} & set(map(str, err.relative_schema_path)):
            lines.append(f"{where}: {desc}")
            continue
        lines.append(f"{where}: {err.message}" + (f" ({desc})" if desc else ""))
    return lines


def schema_problems(config: dict, schema_path: str | Path | None = None) -> list[str]:
    """Every schema violation as one line `key.path: what is wrong (what is allowed)`.

    Snakemake's own `validate` prints the whole schema for the first error only; users need the key,
    all the errors at once, and a suggestion for a typo.
    """
    schema = yaml.safe_load(Path(schema_path).read_text()) if schema_path else config_lib.schema()
    return _problems(config, schema)


def dataset_problems(datasets: dict) -> list[str]:
    """Problems of a config's `datasets` section alone: its schema, and that a demo data set's role is the
    one its generator (chosen by `kind`) makes."""
    from pddpm.demo import KIND_ROLES

    problems = _problems(datasets, config_lib.subschema("datasets"), ("datasets",))
    if problems:
        return problems
    for ds, cfg in datasets.items():
        role = KIND_ROLES[cfg["kind"]]
        if cfg["source"] == "demo" and cfg["role"] != role:
            problems.append(f"datasets.{ds}: a demo data set of kind '{cfg['kind']}' is {role}; set role: {role}")
        if cfg["source"] == "download" and cfg["kind"] == "brats":
            from pddpm.data.brats import HOW_TO

            problems.append(f"datasets.{ds}: BraTS 2021 cannot be downloaded (registration required); use "
                            f"source: local.\n{HOW_TO}")
    return problems


def cross_key_problems(config: dict) -> list[str]:
    """The checks across sections, on a config whose defaults are filled in."""
    datasets = config["datasets"]
    problems = dataset_problems(datasets)
    train = config["train_dataset"]
    if train not in datasets:
        problems.append(f"train_dataset: '{train}' is not a key of datasets (have: {', '.join(datasets)})")
    elif datasets[train]["role"] != "healthy":
        problems.append(f"train_dataset: '{train}' has role '{datasets[train]['role']}', it must be healthy")
    folds = config["splits"]["folds"]
    bad = [k for k in config["folds_to_run"] if k >= folds]
    if bad:
        problems.append(f"folds_to_run: {bad} not below splits.folds = {folds}; use folds 0..{folds - 1}")
    patch = config["patch"]
    if patch["stride"] > patch["size"]:
        problems.append(f"patch.stride ({patch['stride']}) larger than patch.size ({patch['size']}) leaves gaps")
    problems += register_level_problems(config["preprocess"]["register"])
    # each model kind's settings against the slice size (pddpm/models/checks.py)
    problems += model_checks.problems(config)
    return problems


def _raise(problems: list[str]) -> None:
    if problems:
        raise PddpmConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def check_config(config: dict) -> dict:
    """Check a run's config and fill in the schema's defaults, in place (then also returned).

    Raises PddpmConfigError listing every problem: first the schema's, then, on a config that passes
    it, the checks across keys."""
    _raise(schema_problems(config))
    config.update(config_lib.with_defaults(config))
    _raise(cross_key_problems(config))
    return config
