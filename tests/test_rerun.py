"""Rerun only what changed, on a complete tiny run (the `tiny_run` fixture, copied before any change).

The expected set of jobs for an edit is what snakemake plans when told to force that rule and its
consumers (`--forcerun RULE`): so "N4 and downstream only" is checked against the workflow's own DAG,
whatever the stages downstream are. Parts whose stage is not in the DAG yet are skipped, with a reason.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from workflow_utils import copy_run, planned_jobs, write_config

pytestmark = pytest.mark.workflow

# The per-subject raw -> preprocessed chain; everything here runs once per subject.
PER_SUBJECT = ("resample", "skullstrip", "register", "crop", "n4", "qc_subject")
PREPROCESSING = (*PER_SUBJECT, "qc_dataset", "atlas_demo", "atlas_grid", "demo_anatomy", "demo_cohort", "demo_seg",
                 "demo_subjects_tsv")


@cache
def _all_rules(workdir: str) -> frozenset[str]:
    return frozenset(planned_jobs(Path(workdir), "--forceall"))


def need(workdir: Path, *rules: str) -> None:
    missing = [r for r in rules if r not in _all_rules(str(workdir))]
    if missing:
        pytest.skip(f"stage not in the workflow yet: rule(s) {', '.join(missing)}")


@pytest.fixture
def run(tiny_run, tmp_path):
    """A private copy of the finished tiny run."""
    return copy_run(tiny_run, tmp_path / "run")


def with_config(workdir: Path, overrides: dict) -> None:
    write_config(workdir, overrides)


def test_nothing_changed_plans_nothing(run):
    assert planned_jobs(run) == {}


def test_training_parameter_reruns_training_and_downstream_only(run):
    need(run, "train")
    expected = planned_jobs(run, "--forcerun", "train")
    with_config(run, {"train": {"lr": 2e-4}})
    got = planned_jobs(run)
    assert got == expected
    assert got.get("train", 0) >= 1
    assert not {r: n for r, n in got.items() if r in PREPROCESSING or r in ("splits", "slices")}


def test_n4_parameter_reruns_n4_and_downstream_only(run):
    need(run, "n4")
    expected = planned_jobs(run, "--forcerun", "n4")
    with_config(run, {"preprocess": {"n4": {"iterations": 21}}})
    got = planned_jobs(run)
    assert got == expected
    n_subjects = sum(1 for _ in (run / "results" / "preprocess").glob("*/5_n4/*_t2.nii.gz"))
    assert got["n4"] == n_subjects
    upstream = ("resample", "skullstrip", "register", "crop", "demo_cohort", "atlas_demo", "atlas_grid")
    assert not {r: got[r] for r in upstream if r in got}


def test_one_raw_scan_replaced_reruns_that_subject_only(run):
    need(run, "resample")
    raw = sorted((run / "data" / "raw").glob("*/*_t2.nii.gz"))
    assert raw, "the tiny run has no raw scans"
    scan = raw[0]
    sub = scan.name.removesuffix("_t2.nii.gz")
    img = nib.load(scan)
    data = np.asarray(img.dataobj, dtype=np.float32) * np.float32(1.01)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), scan)  # a new version of the scan

    got = planned_jobs(run)
    present = [r for r in PER_SUBJECT if r in _all_rules(str(run))]
    # Exactly one job of each per-subject stage (this subject's), nothing for the raw data itself.
    assert {r: got.get(r, 0) for r in present} == dict.fromkeys(present, 1), got
    assert not {r: got[r] for r in ("demo_cohort", "demo_anatomy", "atlas_demo", "atlas_grid") if r in got}
    # ... and they are this subject's: forcing its first preprocessed file plans the same jobs, plus
    # at most the one job that lists the raw files of the data set (subjects.tsv reads them all).
    first = next((run / "results" / "preprocess").glob(f"*/1_resampled/{sub}_t2.nii.gz"))
    expected = planned_jobs(run, "--forcerun", str(first.relative_to(run)))
    extra = {r: got.get(r, 0) - expected.get(r, 0) for r in set(got) | set(expected)}
    extra = {r: n for r, n in extra.items() if n}
    assert extra in ({}, {"demo_subjects_tsv": 1}), (got, expected)
