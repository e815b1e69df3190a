"""The shipped profiles: they parse as snakemake options, comment every key, name only resources the SLURM
plugin knows and only rules the workflow has; the profile checker catches the silent mistakes."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from pddpm.errors import PddpmInputError
from pddpm.profile_check import check_resource_names, check_set_resources_rules
from test_envs import workflow_rules
from workflow_utils import REPO, SNAKEMAKE, write_config

PROFILES = sorted((REPO / "profiles").glob("*/config.yaml"))
SLURM = REPO / "profiles" / "slurm" / "config.yaml"


@pytest.mark.parametrize("profile", PROFILES, ids=[p.parent.name for p in PROFILES])
def test_every_key_is_commented(profile):
    lines = profile.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w-]*):", line)
        if not m:
            continue
        above = lines[i - 1].strip() if i else ""
        assert above.startswith("#") or "#" in line, f"{profile.parent.name}: key `{m.group(2)}` has no comment"


def test_slurm_profile_names_known_resources_and_rules():
    prof = yaml.safe_load(SLURM.read_text())
    check_resource_names(prof["default-resources"], prof["set-resources"])
    rules = workflow_rules()
    check_set_resources_rules(prof["set-resources"], rules)
    assert set(prof["groups"]) <= set(rules), set(prof["groups"]) - set(rules)
    assert set(prof["group-components"]) == set(prof["groups"].values())
    for rule in ("train", "infer"):
        res = prof["set-resources"][rule]
        assert res["gpu"] == 1 and "attempt" in str(res["runtime"])
    assert prof["retries"] >= 1 and prof["executor"] == "slurm"


def test_slurm_profile_drives_a_dry_run(tmp_path):
    """All keys are options snakemake knows (a typo would stop it), and the jobs carry the profile's
    requests: GPU, scaled runtime and the partition placeholder."""
    write_config(tmp_path)
    proc = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--profile",
                           str(SLURM.parent), "--sdm", "env-modules", "-n"], capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    train = re.search(r"rule train:.*?resources: ([^\n]*)", out, re.S)
    assert train, out[-3000:]
    assert "gpu=1" in train.group(1) and "runtime=1440" in train.group(1), train.group(1)
    assert "slurm_partition=CHANGE_ME" in out
    assert re.search(r"group job preprocess|group: preprocess|preprocess", out)


def test_checker_rejects_unknown_resource_names_with_a_hint():
    with pytest.raises(PddpmInputError, match=r"set-resources: train: unknown resource 'gpus'.*did you mean 'gpu'"):
        check_resource_names({"mem_mb": 1000}, {"train": {"gpus": 1}})
    with pytest.raises(PddpmInputError, match=r"default-resources: unknown resource 'slurm_partiton'"):
        check_resource_names({"slurm_partiton": "gpu"}, {})
    check_resource_names({"slurm_partition": "x", "runtime": 5}, {"train": {"gpu": 1, "cpus_per_gpu": 4}})
    check_resource_names({"my_api_calls": 1}, None, extra_known=["my_api_calls"])


def test_checker_rejects_set_resources_for_unknown_rules():
    with pytest.raises(PddpmInputError, match=r"no rule named 'trian'.*did you mean 'train'"):
        check_set_resources_rules({"trian": {"gpu": 1}}, ["train", "infer"])
    check_set_resources_rules({"train": {"gpu": 1}}, ["train", "infer"])


def test_local_profile_rate_limit_keeps_the_default_rate_with_fewer_scheduler_rounds():
    """profiles/local spreads Snakemake's default 100 jobs/s over a longer timespan (fewer scheduler
    rounds, bench/bench_scheduler.py) but not so long that a finished run waits long for its last timer."""
    from snakemake.settings.types import MaxJobsPerTimespan

    prof = yaml.safe_load((REPO / "profiles" / "local" / "config.yaml").read_text())
    limit = MaxJobsPerTimespan.parse_choice(prof["max-jobs-per-timespan"])
    assert limit.max_jobs / limit.timespan == 100
    assert 1 < limit.timespan <= 5
