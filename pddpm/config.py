"""The one source of configuration defaults: `schemas/config.schema.yaml`.

The workflow's config check (`pddpm.config_checks.check_config`) fills in every default through
`with_defaults`. Library code that runs without the workflow (tests, benchmarks, a notebook) asks this
module for the same values instead of writing them down again: `defaults("unet")` is the schema's default UNet settings, and
`with_defaults(cfg, "train")` completes a partial `train` section.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


@functools.cache
def schema() -> dict:
    """The config schema (parsed once per process); treat it as read-only."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _filling_validator():
    """A Draft 2020-12 validator that writes each property's `default` into the instance it validates
    (the recipe from the jsonschema FAQ, as snakemake's `validate(set_default=True)` does)."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                if "default" in prop and name not in instance:
                    instance[name] = copy.deepcopy(prop["default"])
        yield from validate_properties(validator, properties, instance, subschema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def subschema(*keys: str) -> dict:
    """The schema of the config section at `keys` (e.g. `subschema("train")`)."""
    node = schema()
    for key in keys:
        props = node.get("properties", {})
        if key in props:
            node = props[key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            raise KeyError(f"the config schema has no key {'.'.join(keys)!r}")
    return node


def with_defaults(config: dict | None = None, *keys: str) -> dict:
    """A copy of `config` (the section at `keys`, or the whole config) with every schema default filled in.

    Does not reject invalid values: the workflow's validation (pddpm.config_checks) does that with
    messages naming the key."""
    instance = copy.deepcopy(config) if config is not None else {}
    node = subschema(*keys)
    validator = _filling_validator()(node)
    for _ in validator.iter_errors(instance):  # validation walks the tree and fills defaults as it goes
        pass
    return instance


def defaults(*keys: str) -> Any:
    """The schema's default of the config key at `keys`: a whole section (`defaults("unet")`) or one
    value (`defaults("train", "lr")`)."""
    if not keys:
        return with_defaults({})
    node = subschema(*keys)
    if node.get("type") == "object" or "properties" in node:
        return with_defaults(copy.deepcopy(node.get("default", {})), *keys)
    if "default" not in node:
        raise KeyError(f"config key {'.'.join(keys)!r} has no default in {SCHEMA_PATH.name}")
    return copy.deepcopy(node["default"])
