"""Shared fixtures. `tiny_run` runs the real workflow once per test session on the tiny demo config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slurm_cluster import cluster  # noqa: F401 (the one SLURM cluster of a session, for tests/test_slurm*.py)
from workflow_utils import snakemake, write_config

# ANTs registration is reproducible under its fixed seed only on one ITK thread (two threads sum in
# another order, and once gave a 4.9 mm pose error in test_preprocess); the workflow's register rule
# runs on one thread too. Set before any test imports ants.
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"


@pytest.fixture
def one_thread():
    """One torch CPU thread for the test (the machine is shared: two spinning OpenMP threads per process
    slow everything down ~10x); the module's tests use it with `pytestmark = usefixtures("one_thread")`."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A complete run of the default target on tests/configs/tiny.yaml; treat it as read-only
    (copy it with workflow_utils.copy_run before changing anything).

    Where PDDPM_TINY_RUN names a folder (.ci/run sets one for its workflow and SLURM tiers), the run
    lives there, so a second pytest session brings it up to date (snakemake reruns what changed, by
    its rerun triggers) instead of starting over."""
    shared = os.environ.get("PDDPM_TINY_RUN")
    workdir = Path(shared) if shared else tmp_path_factory.mktemp("tiny_run")
    write_config(workdir)
    snakemake(workdir)
    return workdir
