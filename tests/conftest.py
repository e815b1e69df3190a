"""Shared fixtures. `tiny_run` runs the real workflow once per test session on the tiny demo config."""

from __future__ import annotations

import pytest

from workflow_utils import snakemake, write_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A complete run of the default target on tests/configs/tiny.yaml; treat it as read-only
    (copy it with workflow_utils.copy_run before changing anything)."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    write_config(workdir)
    snakemake(workdir)
    return workdir
