"""A training job killed the way SLURM kills at the time limit (SIGTERM to the job's processes, SIGKILL
after KillWait) and run again resumes from its last checkpoint and finishes; the checkpoint survives
Snakemake's cleanup of the failed job's outputs.

Done locally with signals, on a copy of the tiny run, so it is quick and deterministic: snakemake
stays alive (as on a cluster, where only the job dies) and sees the job fail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from workflow_utils import REPO, SNAKEMAKE, copy_run, snakemake, write_config

pytestmark = pytest.mark.workflow

KILL_WAIT_S = 5  # SLURM's KillWait between SIGTERM and SIGKILL (30 s by default, 5 s in the test cluster)


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (from /proc), so the job's script is found however it was started."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def kill_like_slurm(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    time.sleep(KILL_WAIT_S)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_training_killed_at_time_limit_resumes_from_checkpoint(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path / "run")
    models = run / "results" / "models"
    if not models.is_dir():
        pytest.skip("the training stage is not in the workflow yet")
    model = next(m for m in ("pddpm", "ddpm") if (models / m / "fold0" / "model.pt").exists())
    target = f"results/models/{model}/fold0/model.pt"
    ckpt = run / "results" / "checkpoints" / model / "fold0" / "checkpoint.pt"
    train_log = run / "results" / "logs" / "train" / model / "fold0.log"
    # Long enough to be killed mid-way (one step per epoch on the tiny set), a checkpoint every step.
    write_config(run, {"train": {"epochs": 150, "val_every_steps": 25, "checkpoint_every_steps": 1}})
    if ckpt.exists():
        ckpt.unlink()  # a checkpoint of the finished run belongs to other settings anyway

    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(run), "--configfile",
           str(run / "config.yaml"), "--cores", "2", target]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 300
        while not ckpt.exists() and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.5)
        assert ckpt.exists(), "no checkpoint appeared while training"
        time.sleep(2)  # a few more steps
        job = [p for p in descendants(proc.pid) if "train.py" in cmdline(p)]
        assert job, "the training job's process was not found"
        kill_like_slurm(job)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, out[-3000:]
    assert "Error in rule train" in out, out[-3000:]
    assert not (run / target).exists()  # snakemake removed the failed job's outputs ...
    assert ckpt.exists()  # ... but not the checkpoint
    import torch

    step = torch.load(ckpt, map_location="cpu", weights_only=False)["step"]
    assert step >= 1

    # Run again, as SLURM's retry or the user would: it resumes there and finishes.
    snakemake(run, target)
    assert (run / target).exists()
    text = train_log.read_text()
    assert "resuming from" in text, text[-2000:]
    resumed = [int(line.split(" at step ")[1].split()[0]) for line in text.splitlines()
               if "resuming from" in line]
    assert resumed[-1] >= step
