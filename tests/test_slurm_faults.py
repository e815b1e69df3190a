"""The faults a cluster run meets, on the real single-node SLURM (tests/slurm_cluster.py) with the shipped
profile (docs/cluster.md, "Troubleshooting"): a training job killed by SLURM at its time limit, an
unreadable scan among the subjects of one grouped preprocessing job, the snakemake process killed while
its jobs are queued and running, and memory requests that grow with the attempt.

Each test works on a copy of the tiny demo run (the `tiny_run` fixture) and asks for as few targets as
its point needs, so that only the jobs under test run on SLURM.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pddpm import artefacts
from pddpm.artefacts import fill
from slurm_cluster import SHIPPED, megabytes, minutes, run_profile, slurm_profile, snakemake_cmd
from workflow_utils import REPO, SNAKEMAKE, copy_run, snakemake, write_config

pytestmark = pytest.mark.slurm


def rule_jobs(cluster, rule: str, before: set[str]) -> list[dict[str, str]]:
    """The SLURM jobs of `rule` submitted since `before` (job ids), oldest first."""
    return [j for j in cluster.jobs() if j["id"] not in before and j["comment"].startswith(f"rule_{rule}_")]


def tensors(path: Path) -> dict:
    """Every tensor in a saved torch file, by its key path (whatever the file's layout)."""
    import torch

    found = {}

    def walk(obj, key):
        if isinstance(obj, torch.Tensor):
            found[key] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{key}/{k}")
        elif isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                walk(v, f"{key}/{i}")

    walk(torch.load(path, map_location="cpu", weights_only=False), "")
    return found


def wait_until(what: str, ok, timeout: float, poll: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = ok()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# ------------------------------------------------------------------------------------------ time limit
# The smallest time limit SLURM has is one minute; slurmctld checks limits about every 30 s, so a job
# with `--time=1` gets its SIGTERM 60-90 s after it started (measured here: 77-81 s), the SIGKILL
# KillWait (5 s in the test cluster) later. The training is sized by its CPU time, which load does not
# shrink: TRAIN_CPU_S of one core, so that even on an idle machine the first attempt is still training
# when SLURM kills it; the second attempt (two minutes) or, on a busy machine, a later one finishes.
TRAIN_CPU_S = 95
CALIBRATION_STEPS = 100


def test_training_killed_at_slurm_time_limit_resumes_on_retry(cluster, tiny_run, tmp_path):
    """SLURM itself kills a training job at its time limit; the profile's retry resubmits it with the
    limit scaled by the attempt (and more memory); it resumes from the checkpoint written on SIGTERM and
    ends with exactly the weights of an uninterrupted local run (CPU, same seed)."""
    model, fold = "pddpm", "0"
    target = fill(artefacts.MODEL, model=model, fold=fold)
    ckpt_dir = fill(artefacts.CHECKPOINT_DIR, model=model, fold=fold)
    bench = Path(fill(artefacts.BENCHMARK, name=f"train/{model}/fold{fold}"))
    train_log = Path(fill(artefacts.LOG, name=f"train/{model}/fold{fold}"))
    ref = copy_run(tiny_run, tmp_path / "local")
    run = copy_run(tiny_run, tmp_path / "slurm")

    # CPU time of one step here: a short local run of the same rule against the tiny run's four steps
    # (the difference is training alone; start-up is the same).
    t0 = time.monotonic()
    write_config(ref, {"train": {"epochs": CALIBRATION_STEPS, "val_every_steps": CALIBRATION_STEPS}})
    snakemake(ref, target)
    tiny, cal = (pd.read_csv(wd / bench, sep="\t").iloc[0] for wd in (tiny_run, ref))
    tiny_steps = yaml.safe_load((tiny_run / "config.yaml").read_text())["train"]["epochs"]
    step_cpu_s = max(cal["cpu_time"] - tiny["cpu_time"], 1.0) / (CALIBRATION_STEPS - tiny_steps)
    # one step per epoch (3 training volumes, batch 4); validation four times; checkpoints only on
    # SIGTERM and at the end, so a resumed step > 0 proves the SIGTERM checkpoint
    steps = int(TRAIN_CPU_S / step_cpu_s)
    train = {"epochs": steps, "val_every_steps": steps // 4, "checkpoint_every_steps": 10 * steps}
    # On a busy machine the job gets a fraction of a core and needs more attempts (each one minute
    # longer, less ~20 s of start-up): as many retries as that takes, at least the shipped number.
    share = min(max(cal["cpu_time"] / cal["s"], 0.05), 1.0)
    attempts, room = 0, 0.0
    while room < 1.25 * TRAIN_CPU_S / share:
        attempts += 1
        room += 60 * attempts - 20
    retries = max(int(yaml.safe_load(SHIPPED.read_text())["retries"]), attempts - 1)
    print(f"calibration: {step_cpu_s * 1000:.0f} ms CPU/step -> {steps} steps; {share:.0%} of a core -> "
          f"retries {retries} ({time.monotonic() - t0:.0f} s)")
    for wd in (ref, run):
        write_config(wd, {"train": train})
        for f in (wd / ckpt_dir).glob("*"):
            f.unlink()  # the tiny run's checkpoint would be resumed (epochs do not change a run's identity)

    # The shipped runtime is "<minutes> * attempt": the same expression with one minute.
    shipped = str(yaml.safe_load(SHIPPED.read_text())["set-resources"]["train"]["runtime"])
    assert re.fullmatch(r"\d+ \* attempt", shipped), shipped
    profile = slurm_profile(tmp_path / "profile", cluster, retries=retries,
                            set_resources={"train": {"runtime": "1 * attempt"}})
    before = {j["id"] for j in cluster.jobs()}
    # the uninterrupted reference, on the local profile at the same time (one core each)
    local = subprocess.Popen([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(ref), "--profile",
                              str(REPO / "profiles" / "local"), "--cores", "1", target],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        # each attempt: its limit, up to 30 s to the kill, KillWait, start-up and status polling
        limit_s = sum(60 * a + 120 for a in range(1, retries + 2))
        proc = run_profile(run, profile, target, env=cluster.env, timeout=limit_s)
        slurm_s = time.monotonic() - t0
        local_out, _ = local.communicate(timeout=120)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
    out = proc.stdout + proc.stderr
    assert local.returncode == 0, local_out[-4000:]
    assert proc.returncode == 0, out[-6000:] + cluster.logs()
    jobs = rule_jobs(cluster, "train", before)
    print(f"time-limit run on SLURM: {slurm_s:.0f} s, attempts: "
          + ", ".join(f"{j['state']} (limit {j['time_limit']}, {j['memory']})" for j in jobs))

    # Killed by SLURM at the limit (state TIMEOUT, its message in the job's log), resubmitted with the
    # limit and the memory scaled by the attempt, until one attempt completed.
    assert len(jobs) >= 2 and jobs[0]["state"] == "TIMEOUT" and jobs[-1]["state"] == "COMPLETED", jobs
    assert all(j["state"] == "TIMEOUT" for j in jobs[:-1]), jobs
    first_log = next((run / ".snakemake" / "slurm_logs").rglob(f"{jobs[0]['id']}.log"))
    assert "DUE TO TIME LIMIT" in first_log.read_text(errors="replace")
    mem_mb = yaml.safe_load((run / "config.yaml").read_text())["train"]["mem_mb"]
    for attempt, job in enumerate(jobs, start=1):
        assert minutes(job["time_limit"]) == attempt, jobs
        assert megabytes(job["memory"]) == attempt * mem_mb, jobs
    assert "Error in rule train" in out and "Trying to restart job" in out, out[-4000:]

    # Each later attempt resumed from the checkpoint of the one before; the run's record lists the steps
    # (the rule's log is per attempt: it says only the last). The first resume is mid-run: only the
    # SIGTERM handler writes a checkpoint there (the periodic interval is longer than the run). A later
    # attempt may resume at the last step: killed after the final checkpoint, while writing the outputs.
    at = json.loads((run / fill(artefacts.RUN_RECORD, model=model, fold=fold)).read_text())["result"][
        "resumed_at_steps"]
    assert 0 < len(at) <= len(jobs) - 1 and 0 < at[0] < steps and at == sorted(at) and at[-1] <= steps, (at, jobs)
    last = re.findall(r"resuming from .* at step (\d+) of (\d+)", (run / train_log).read_text())
    assert last == [(str(at[-1]), str(steps))], last
    print(f"resumed at steps {at} of {steps}")

    # Same weights and loss curve as the uninterrupted run.
    a, b = tensors(run / target), tensors(ref / target)
    assert a.keys() == b.keys() and a
    assert all(a[k].equal(b[k]) for k in a), [k for k in a if not a[k].equal(b[k])]
    cols = ["step", "train_loss", "val_loss"]
    log_csv = fill(artefacts.TRAIN_LOG, model=model, fold=fold)
    pd.testing.assert_frame_equal(pd.read_csv(run / log_csv)[cols], pd.read_csv(ref / log_csv)[cols])


# ------------------------------------------------------------------------------------ a bad subject
def _volume(path: Path) -> np.ndarray:
    from pddpm.io import load_nifti

    return np.asarray(load_nifti(path).dataobj, dtype=np.float64)


def _splits_equal(a: Path, b: Path) -> bool:
    with np.load(a) as x, np.load(b) as y:
        return x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)


def test_unreadable_scan_in_a_group_job_spares_the_other_subjects(cluster, tiny_run, tmp_path):
    """One truncated raw scan among the subjects of one grouped preprocessing job. The failure names the
    subject and its file. The group job runs its jobs one after another, largest input first (the
    profile's greedy scheduler), so the small truncated scan comes last and the other subject's chain is
    done first; the job stops at the failure and Snakemake counts all its jobs as failed, but the other
    subject's outputs are kept (the profile's keep-incomplete; every output is written whole or not at
    all) and complete. With keep-going, a job that needs no subject of that group still runs. The next
    run, with the scan replaced, redoes nothing that was finished.

    Retries are off here: a resubmitted group job reruns all of its jobs (Snakemake forces every job of
    a group it resubmits), as docs/cluster.md says; the next run is where finished work is kept."""
    ds = "demo_brats"  # its demo config skips skull stripping: the fastest chain
    run = copy_run(tiny_run, tmp_path / "run")
    stages = run / Path(fill(artefacts.RESAMPLED, ds=ds, sub="x", key="t2")).parents[1]
    subs = sorted(p.name.removesuffix("_t2.nii.gz") for p in (stages / "1_resampled").glob("*_t2.nii.gz"))
    bad, good = subs[:2]
    for sub in (bad, good):
        for f in stages.glob(f"*/{sub}_*"):
            f.unlink()
    # the first two stages of both subjects' chains: enough for two jobs per subject in one group job
    wanted = {sub: [fill(artefacts.RESAMPLED, ds=ds, sub=sub, key="seg"),
                    fill(artefacts.SKULLSTRIPPED, ds=ds, sub=sub, key="t2"),
                    fill(artefacts.SKULLSTRIPPED, ds=ds, sub=sub, key="mask")] for sub in (bad, good)}
    independent = fill(artefacts.SLICES, ds="demo_ixi", split="test")  # needs no demo_brats subject
    (run / independent).unlink()
    scan = run / fill(artefacts.RAW_IMAGE, ds=ds, sub=bad, key="t2")
    original = scan.read_bytes()
    scan.write_bytes(original[:len(original) // 10])  # a download cut short
    targets = [*wanted[bad], *wanted[good], independent]
    profile = slurm_profile(tmp_path / "profile", cluster, retries=0)
    before = {j["id"] for j in cluster.jobs()}

    t0 = time.monotonic()
    proc = run_profile(run, profile, *targets, env=cluster.env, timeout=400)
    first_s = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    (tmp_path / "first.log").write_text(out)
    assert proc.returncode != 0, out[-6000:]
    # both subjects' jobs went in one SLURM job (the shipped grouping), which failed
    jobs = [j for j in cluster.jobs() if j["id"] not in before]
    group = [j for j in jobs if not j["comment"].startswith("rule_slices")]
    assert len(group) == 1 and group[0]["state"] == "FAILED", jobs
    assert "Error in group preprocess" in out, out[-6000:]
    # The failure names the subject and its file (the rule's log, printed by show-failed-logs).
    rel_scan = str(scan.relative_to(run))
    assert bad in rel_scan and f"PddpmInputError: {rel_scan}: truncated or corrupt image data" in out, out[-8000:]
    # Nothing of the bad subject, not even half-written; what the good one finished is kept, complete.
    assert not list(stages.rglob(f"*{bad}_*")), list(stages.rglob(f"*{bad}_*"))
    kept = {p: p.stat().st_mtime_ns for p in stages.rglob(f"*{good}_*")}
    # the profile's greedy scheduler runs the group's jobs largest input first: the truncated scan last
    assert {str(p.relative_to(run)) for p in kept} >= set(wanted[good]), kept
    for p in kept:
        assert not p.name.startswith("."), p  # no temporary file of a write cut short
        assert np.array_equal(_volume(p), _volume(tiny_run / p.relative_to(run))), p
    # keep-going: the job that needs no demo_brats subject ran in the same run.
    assert _splits_equal(run / independent, tiny_run / independent)
    print(f"group job with a bad scan: {first_s:.0f} s; kept of {good}: "
          + ", ".join(str(p.relative_to(stages)) for p in sorted(kept)))

    # The scan replaced, the next run does the rest and redoes nothing that was finished.
    scan.write_bytes(original)
    t0 = time.monotonic()
    proc = run_profile(run, profile, *targets, env=cluster.env, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:] + cluster.logs()
    print(f"rerun with the scan replaced: {time.monotonic() - t0:.0f} s")
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    for rel in [*wanted[bad], *wanted[good]]:
        assert np.array_equal(_volume(run / rel), _volume(tiny_run / rel)), rel


# ---------------------------------------------------------------------------------- a killed snakemake
def test_killed_snakemake_resumes_without_resubmitting_finished_jobs(cluster, tiny_run, tmp_path):
    """`snakemake --profile profiles/slurm` gets SIGTERM (it stops submitting and waits for its jobs) and
    then SIGKILL while its jobs are running and queued. Done as docs/cluster.md says: the killed run's
    jobs cancelled by its run ID, `--unlock`, the same command again: the jobs that had finished are not
    submitted again, the others are, and the results equal the undisturbed (tiny) run's."""
    run = copy_run(tiny_run, tmp_path / "run")
    # five independent SLURM jobs (2 run at a time on the 2-CPU node, the rest queue)
    splits = [("demo_ixi", "train_fold0"), ("demo_ixi", "val_fold0"), ("demo_ixi", "test"),
              ("demo_brats", "val"), ("demo_brats", "test")]
    targets = [fill(artefacts.SLICES, ds=ds, split=s) for ds, s in splits]
    for t in targets:
        (run / t).unlink()
    profile = slurm_profile(tmp_path / "profile", cluster)
    before = {j["id"] for j in cluster.jobs()}
    log = tmp_path / "killed.log"
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(snakemake_cmd(run, profile, *targets), stdout=fh, stderr=subprocess.STDOUT,
                                env=cluster.env, stdin=subprocess.DEVNULL)
    try:
        def busy():
            states = [j["state"] for j in rule_jobs(cluster, "slices", before)]
            return "COMPLETED" in states and {"RUNNING", "PENDING"} & set(states)

        wait_until("one job finished and others running or queued", busy, 240)
        proc.send_signal(signal.SIGTERM)
        time.sleep(3)
        assert proc.poll() is None  # waits for its running jobs, as Snakemake does on SIGTERM
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Will exit after finishing currently running jobs" in text, text[-4000:]
    run_id = re.search(r"SLURM run ID: (\S+)", text).group(1)

    # SLURM keeps running the killed run's jobs; stop them by the run ID (the job name).
    cluster.run("scancel", "--name", run_id)
    wait_until("the cancelled jobs to end", lambda: not cluster.run(
        "squeue", "-h", "--name", run_id, "-t", "pending,running,completing").stdout.strip(), 60)
    jobs = rule_jobs(cluster, "slices", before)
    finished = {j["comment"] for j in jobs if j["state"] == "COMPLETED"}
    unfinished = {j["comment"] for j in jobs if j["state"] != "COMPLETED"}
    assert finished and unfinished, jobs
    done = {t: (run / t).stat().st_mtime_ns for t in targets if (run / t).exists()}
    assert len(done) == len(finished), (done, jobs)

    # The same command: refused while the killed run's lock is there; `--unlock`, then it runs.
    proc = run_profile(run, profile, *targets, env=cluster.env, timeout=120)
    assert proc.returncode != 0 and "Directory cannot be locked" in proc.stdout + proc.stderr
    proc = run_profile(run, profile, "--unlock", env=cluster.env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    again = {j["id"] for j in cluster.jobs()}
    proc = run_profile(run, profile, *targets, env=cluster.env, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:] + cluster.logs()
    print(f"killed and resumed: {time.monotonic() - t0:.0f} s; {len(finished)} finished before, "
          f"{len(unfinished)} resubmitted")
    resubmitted = {j["comment"] for j in rule_jobs(cluster, "slices", again)}
    assert resubmitted == unfinished, (resubmitted, unfinished)
    assert {t: (run / t).stat().st_mtime_ns for t in done} == done
    for t in targets:
        assert _splits_equal(run / t, tiny_run / t), t


# --------------------------------------------------------------------------------------------- memory
def _mem_by_rule(out: str) -> dict[str, int]:
    """rule -> mem_mb of its first job in a dry run's job list."""
    found: dict[str, int] = {}
    for rule, body in re.findall(r"rule (\w+):\n(.*?)(?=\n\s*\n|\Z)", out, re.S):
        m = re.search(r"resources: .*?\bmem_mb=(\d+)", body)
        if m:
            found.setdefault(rule, int(m.group(1)))
    return found


def test_memory_of_data_dependent_rules_grows_with_the_attempt(tiny_run, tmp_path):
    """A job killed for memory is resubmitted by the profile's retries with attempt + 1: training,
    inference and slicing then ask for twice the memory (what SLURM would get from sbatch --mem);
    preprocessing does not. Read from the dry run of the shipped profile at attempt 1 and 2.

    This loopback cluster has no cgroups, so SLURM never enforces a memory limit and no job here is
    killed for memory (tests/slurm_cluster.py); test_training_killed_at_slurm_time_limit_resumes_on_retry
    reads the doubled request of a real second attempt from SLURM."""
    run = copy_run(tiny_run, tmp_path / "run")
    prof = yaml.safe_load(SHIPPED.read_text())
    prof["default-resources"]["slurm_partition"] = "debug"
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "config.yaml").write_text(yaml.safe_dump(prof))
    mem = {}
    for attempt in (1, 2):
        proc = run_profile(run, profile, "-n", "--forceall", "--sdm", "env-modules", "--attempt", str(attempt),
                           timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        mem[attempt] = _mem_by_rule(out)
    for rule in ("train", "infer", "slice_subject", "slices"):
        assert mem[2][rule] == 2 * mem[1][rule], (rule, mem[1].get(rule), mem[2].get(rule))
    for rule in ("resample", "register", "n4"):
        assert mem[2][rule] == mem[1][rule], rule
    print("mem_mb at attempt 1 -> 2: " + ", ".join(f"{r} {mem[1][r]} -> {mem[2][r]}"
                                                   for r in ("train", "infer", "slice_subject", "slices")))
