"""Shared fixtures: `tiny_run` runs the real workflow once per test session on the tiny demo config; `brains`
is real-anatomy slices for the training tests; `one_thread` keeps torch on one CPU thread."""

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


@pytest.fixture(scope="module")
def brains():
    """(10, 12, 48, 48) float16 slices of real anatomy (ICBM152 T2-like contrast, 4 mm, as the demo's model
    grid), each 'subject' shifted, rescaled and noised differently: 8 for training, 2 for validation."""
    import numpy as np
    from scipy import ndimage as ndi

    from pddpm.demo.anatomy import load_template, t2_contrast

    tpl = load_template()
    t2 = ndi.zoom(t2_contrast(tpl["csf"], tpl["gm"], tpl["wm"]), 0.25, order=1)  # 1 mm -> 4 mm
    t2 = np.moveaxis(t2, 2, 0)  # axial slices first: (Z, X, Y)
    z0 = t2.shape[0] // 2 - 6
    rng = np.random.default_rng(0)
    vols = []
    for _ in range(10):
        v = t2[z0:z0 + 12]
        v = np.pad(v, ((0, 0), (8, 8), (8, 8)))
        v = np.roll(v, rng.integers(-2, 3, 2), axis=(1, 2))
        cy, cx = (v.shape[1] - 48) // 2, (v.shape[2] - 48) // 2
        v = v[:, cy:cy + 48, cx:cx + 48] * rng.uniform(0.9, 1.1) + rng.normal(0, 0.01, (12, 48, 48))
        vols.append(np.clip(v / np.percentile(v, 99), 0, 1))
    data = np.stack(vols).astype(np.float16)
    return data[:8], data[8:]


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
