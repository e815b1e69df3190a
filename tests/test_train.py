"""Training: the loss falls on brain slices, resume equals an uninterrupted run, SIGTERM leaves a
checkpoint, bad input stops clearly, and the `train` rule runs for real."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pddpm.checkpoint import load_checkpoint, save_checkpoint
from pddpm.errors import PddpmConfigError, PddpmInputError
from pddpm.models import build, load_trained
from pddpm.train import (
    SliceData,
    TrainingDiverged,
    TrainingInterrupted,
    epoch_plan,
    lr_factor,
    run_fingerprint,
    split_digest,
    train,
    validation_loss,
    write_outputs,
)

# one torch thread per test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"kind": "pddpm",
            "unet": {"base_width": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_heads": 1,
                     "attention_head_channels": 16, "groups": 4},
            "diffusion": {"noise": {"type": "simplex"}}, "patch": {"size": 24, "stride": 24},
            "image_size": [48, 48]}
FAST = {"batch_size": 4, "epochs": 3, "val_every_steps": 2, "checkpoint_every_steps": 100}


def test_loss_falls_on_brain_slices(brains):
    tr, va = brains
    torch.manual_seed(0)  # the untrained network train() starts from (same seed)
    untrained = build(SETTINGS["kind"], SETTINGS)
    before = validation_loss(untrained, SliceData.from_split(va), 0, 8, "fp32")["loss"]
    res = train(tr, va, SETTINGS, {**FAST, "batch_size": 8, "epochs": 20, "val_every_steps": 5, "lr": 3e-3},
                seed=0, device="cpu", progress=False)
    log = pd.DataFrame(res.log)
    assert list(log.step) == list(range(1, 21))
    val = log.dropna(subset=["val_loss"])
    assert list(val.step) == [5, 10, 15, 20]
    assert val.val_loss.min() < 0.6 * before
    assert log.train_loss.iloc[-5:].mean() < log.train_loss.iloc[:5].mean()
    assert res.info["best_step"] == int(log.step[log.val_loss.idxmin()])
    assert (val.images_per_s > 0).all() and log.images_per_s.notna().sum() == 4


def test_resume_equals_uninterrupted(brains, tmp_path):
    tr, va = brains
    full = train(tr, va, SETTINGS, FAST, seed=3, device="cpu", progress=False)
    with pytest.raises(TrainingInterrupted, match="resume"):
        train(tr, va, SETTINGS, FAST, seed=3, device="cpu", checkpoint_dir=tmp_path, progress=False,
              stop_after_steps=3)
    assert load_checkpoint(tmp_path / "checkpoint.pt", full.info["fingerprint"])["step"] == 3
    with pytest.raises(TrainingInterrupted, match="resume"):  # a second attempt, stopped again
        train(tr, va, SETTINGS, FAST, seed=3, device="cpu", checkpoint_dir=tmp_path, progress=False,
              stop_after_steps=5)
    resumed = train(tr, va, SETTINGS, FAST, seed=3, device="cpu", checkpoint_dir=tmp_path, progress=False)
    assert resumed.info["resumed_from_step"] == 5
    assert resumed.info["resumed_at_steps"] == [3, 5] and full.info["resumed_at_steps"] == []
    strip = [{k: v for k, v in r.items() if k != "images_per_s"} for r in full.log]
    assert strip == [{k: v for k, v in r.items() if k != "images_per_s"} for r in resumed.log]
    for k, v in full.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    # an attempt killed after its last step, while writing its outputs: the next one only hands back the model
    total = full.info["steps"]
    again = train(tr, va, SETTINGS, FAST, seed=3, device="cpu", checkpoint_dir=tmp_path, progress=False)
    assert again.info["resumed_at_steps"] == [3, 5, total] and again.log == resumed.log
    for k, v in full.state_dict.items():
        assert torch.equal(v, again.state_dict[k]), k


def test_a_checkpoint_from_before_the_resume_record_still_resumes(brains, tmp_path):
    # checkpoints written before TrainingState kept `resumes` lack the key: the run resumes all the same
    tr, va = brains
    full = train(tr, va, SETTINGS, FAST, seed=3, device="cpu", progress=False)
    with pytest.raises(TrainingInterrupted):
        train(tr, va, SETTINGS, FAST, seed=3, device="cpu", checkpoint_dir=tmp_path, progress=False,
              stop_after_steps=3)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    del state["resumes"]
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    resumed = train(tr, va, SETTINGS, FAST, seed=3, device="cpu", checkpoint_dir=tmp_path, progress=False)
    assert resumed.info["resumed_at_steps"] == [3]
    for k, v in full.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k


def test_other_settings_do_not_resume_a_foreign_checkpoint(brains, tmp_path):
    tr, va = brains
    with pytest.raises(TrainingInterrupted):
        train(tr, va, SETTINGS, FAST, seed=3, device="cpu", checkpoint_dir=tmp_path, progress=False,
              stop_after_steps=2)
    res = train(tr, va, SETTINGS, {**FAST, "lr": 3e-4}, seed=3, device="cpu", checkpoint_dir=tmp_path,
                progress=False)
    assert res.info["resumed_from_step"] is None
    # fewer epochs than the checkpoint has done: not resumable either (1 epoch = 2 steps < 6)
    res = train(tr, va, SETTINGS, {**FAST, "lr": 3e-4, "epochs": 1}, seed=3, device="cpu",
                checkpoint_dir=tmp_path, progress=False)
    assert res.info["resumed_from_step"] is None and res.info["steps"] == 2


def test_a_checkpoint_of_other_training_data_is_not_resumed(brains, tmp_path):
    # an upstream change (N4 setting, replaced scan) reruns training on new slices of the same shape:
    # the finished run's checkpoint must not hand back the old model
    tr, va = brains
    first = train(tr, va, SETTINGS, FAST, seed=3, device="cpu", checkpoint_dir=tmp_path, progress=False)
    changed = (1 - tr.astype(np.float32)).astype(tr.dtype)
    again = train(changed, va, SETTINGS, FAST, seed=3, device="cpu", checkpoint_dir=tmp_path, progress=False)
    fresh = train(changed, va, SETTINGS, FAST, seed=3, device="cpu", progress=False)
    assert again.info["resumed_from_step"] is None
    assert again.info["fingerprint"] != first.info["fingerprint"]
    for k, v in fresh.state_dict.items():
        assert torch.equal(v, again.state_dict[k]), k


def test_sigterm_writes_a_checkpoint_and_the_rerun_resumes(brains, tmp_path):
    tr, va = brains
    np.save(tmp_path / "tr.npy", tr)
    np.save(tmp_path / "va.npy", va)
    cfg = {**FAST, "epochs": 10_000, "val_every_steps": 1}
    script = textwrap.dedent(f"""
        import logging, sys, numpy as np, torch
        from pddpm.train import train
        torch.set_num_threads(1)
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True)
        train(np.load({str(tmp_path / 'tr.npy')!r}), np.load({str(tmp_path / 'va.npy')!r}), {SETTINGS!r},
              {cfg!r}, seed=5, device="cpu", checkpoint_dir={str(tmp_path / 'ck')!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-u", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    for line in proc.stdout:
        if "step 2:" in line:
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "TrainingInterrupted" in err and "rerun to resume" in err
    fp = run_fingerprint(SETTINGS, {**FAST, **cfg}, 5, 8, 2,  # completes the schema defaults itself
                         data=[split_digest(tr), split_digest(va)])
    state = load_checkpoint(tmp_path / "ck" / "checkpoint.pt", fp)
    assert state is not None and 2 <= state["step"] < 10_000 * 2
    res = train(tr, va, SETTINGS, {**cfg, "epochs": 2}, seed=5, device="cpu", checkpoint_dir=tmp_path / "ck",
                progress=False)
    assert res.info["resumed_from_step"] == state["step"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(brains, tmp_path):
    tr, va = brains
    with pytest.raises(TrainingInterrupted):
        train(tr, va, SETTINGS, FAST, seed=1, device="cpu", checkpoint_dir=tmp_path, progress=False,
              stop_after_steps=2)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    poisoned = tr.copy()
    poisoned[:, :, 10:14, 10:14] = np.nan
    # other data: a fresh run (not a resume), which diverges at once and must not overwrite the checkpoint
    with pytest.raises(TrainingDiverged, match=r"nan at step 1.*last good checkpoint"):
        train(poisoned, va, SETTINGS, FAST, seed=1, device="cpu", checkpoint_dir=tmp_path, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_bad_input_is_named(brains):
    tr, va = brains
    with pytest.raises(PddpmInputError, match="training split.*no volumes"):
        train(tr[:0], va, SETTINGS, FAST, seed=0, device="cpu", progress=False)
    with pytest.raises(PddpmInputError, match="not tiled"):
        train(tr[..., :44, :44], va[..., :44, :44], {**SETTINGS, "image_size": [44, 44]}, FAST, seed=0,
              device="cpu", progress=False)
    with pytest.raises(PddpmInputError, match="expects"):
        train(tr, va[..., :40, :40], SETTINGS, FAST, seed=0, device="cpu", progress=False)


def test_outputs_rebuild_the_network(brains, tmp_path):
    tr, va = brains
    res = train(tr, va, {**SETTINGS, "kind": "ddpm"}, FAST, seed=2, device="cpu", progress=False)
    write_outputs(res, {**SETTINGS, "kind": "ddpm"}, {"seed": 2}, tmp_path / "model.pt", tmp_path / "log.csv",
                  tmp_path / "run.json")
    model = load_trained(tmp_path / "model.pt")
    diffusion, settings = model.diffusion, model.settings
    assert settings["kind"] == "ddpm" and diffusion.timesteps == 1000
    assert list(pd.read_csv(tmp_path / "log.csv").columns) == ["step", "train_loss", "val_loss", "images_per_s"]
    assert json.loads((tmp_path / "run.json").read_text())["result"]["best_step"] == res.info["best_step"]


@pytest.mark.workflow
def test_train_rule_runs_and_reruns_on_a_setting_change(brains, tmp_path):
    """The real rule on the tiny config, from slice files, for both trained models."""
    from pddpm.slices import save_split
    from workflow_utils import planned_jobs, snakemake, write_config

    tr, va = brains
    fast = {"epochs": 2, "val_every_steps": 1, "threads": 1}
    write_config(tmp_path, {"train": fast})
    for split, data in (("train_fold0", tr), ("val_fold0", va)):
        n = len(data)
        save_split({"image": data, "mask": (data > 0.05).astype(np.uint8), "seg": np.zeros(data.shape, np.uint8),
                    "subjects": np.array([f"s{i}" for i in range(n)]), "label": np.zeros(n, int),
                    "spacing_mm": 4.0, "fov_mm": np.array([192.0, 192, 100])},
                   tmp_path / "results" / "slices" / f"demo_ixi_{split}.npz")
    targets = [f"results/models/{m}/fold0/model.pt" for m in ("pddpm", "ddpm")]
    snakemake(tmp_path, "--allowed-rules", "train", "--cores", "2", *targets)
    for m in ("pddpm", "ddpm"):
        out = tmp_path / "results" / "models" / m / "fold0"
        settings = load_trained(out / "model.pt").settings
        assert settings["kind"] == m and settings["image_size"] == [48, 48]
        log = pd.read_csv(out / "train_log.csv")
        assert list(log.step) == [1, 2, 3, 4]  # 2 epochs x 2 steps of 4 volumes
        assert log.val_loss.notna().all()  # validated every step here
        assert json.loads((out / "run.json").read_text())["seed"] == 3141
        assert (tmp_path / "results" / "logs" / "train" / m / "fold0.log").exists()
        # the resumable state sits outside the declared outputs, where Snakemake's cleanup does not reach
        assert (tmp_path / "results" / "checkpoints" / m / "fold0" / "checkpoint.pt").exists()
    # a result-changing setting reruns training; a speed-only one does not
    write_config(tmp_path, {"train": {**fast, "threads": 2, "checkpoint_every_steps": 7}})
    assert planned_jobs(tmp_path, "--allowed-rules", "train", "--cores", "2", *targets) == {}
    write_config(tmp_path, {"train": {**fast, "epochs": 3}})
    assert planned_jobs(tmp_path, "--allowed-rules", "train", "--cores", "2", *targets) == {"train": 2}
    # each kind's params carry only the sections it reads: the patch grid retrains pDDPM, not DDPM
    write_config(tmp_path, {"train": fast, "patch": {"size": 12, "stride": 12}})
    assert planned_jobs(tmp_path, "--allowed-rules", "train", "--cores", "2", *targets) == {"train": 1}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where no GPU is present")
def test_cuda_requested_without_a_gpu_is_a_clear_error(brains):
    from pddpm.errors import PddpmConfigError

    tr, va = brains
    with pytest.raises(PddpmConfigError, match="device: auto"):
        train(tr, va, SETTINGS, FAST, seed=0, device="cuda", progress=False)


# ------------------------------------------------------------------------------------ training options
def test_steps_per_epoch_round_down_and_too_few_volumes_is_named(brains):
    tr, va = brains  # 8 training volumes
    res = train(tr, va, SETTINGS, {**FAST, "batch_size": 3, "epochs": 2}, seed=0, device="cpu", progress=False)
    assert res.info["steps_per_epoch"] == 2 and res.info["steps"] == 4  # 8 // 3: the last 2 volumes dropped
    with pytest.raises(PddpmConfigError, match=r"batch_size 10 is more than the 8 training volumes.*"
                                               r"slices_per_volume to 2 or more"):
        train(tr, va, SETTINGS, {**FAST, "batch_size": 10}, seed=0, device="cpu", progress=False)
    res = train(tr, va, SETTINGS, {**FAST, "batch_size": 10, "slices_per_volume": 2, "epochs": 1}, seed=0,
                device="cpu", progress=False)
    assert res.info["steps_per_epoch"] == 1  # 16 samples: one full batch of 10


def test_an_epoch_draws_each_volume_slices_per_volume_times():
    for k in (1, 3):
        order, first = epoch_plan(seed=4, epoch=2, n_volumes=5, n_starts=12, per_volume=k)
        assert np.bincount(order % 5, minlength=5).tolist() == [k] * 5
        assert first.min() >= 0 and first.max() < 12
    # k > 1: independent slices, so a volume's samples differ (as k of the original's epochs would)
    order, first = epoch_plan(4, 2, 5, 12, per_volume=3)
    assert len({int(first[i]) for i in np.flatnonzero(order % 5 == 0)}) > 1
    assert not np.array_equal(epoch_plan(4, 2, 5, 12)[0], epoch_plan(4, 3, 5, 12)[0])


def test_learning_rate_schedule():
    constant = lr_factor("constant", 0, 100)
    assert [constant(s) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    warm = lr_factor("constant", 4, 100)
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = lr_factor("cosine", 4, 100)
    values = [cos(s) for s in range(101)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0] and values[4] == 1.0
    assert all(b < a for a, b in zip(values[4:], values[5:], strict=False)) and values[100] == 0.0
    assert values[52] == pytest.approx(0.5)  # halfway through the decay


OPTIONS = {**FAST, "epochs": 4, "slices_per_volume": 2, "lr_schedule": "cosine", "warmup_steps": 3,
           "ema_decay": 0.8, "val_every_steps": 100, "lr": 3e-3}  # validated at the last step only


def test_resume_equals_uninterrupted_with_schedule_ema_and_several_slices_per_volume(brains, tmp_path):
    tr, va = brains
    full = train(tr, va, SETTINGS, OPTIONS, seed=3, device="cpu", progress=False, checkpoint_dir=tmp_path / "full")
    assert full.info["steps"] == 4 * (8 * 2 // 4) and full.info["ema"]
    with pytest.raises(TrainingInterrupted):
        train(tr, va, SETTINGS, OPTIONS, seed=3, device="cpu", checkpoint_dir=tmp_path / "cut", progress=False,
              stop_after_steps=7)
    resumed = train(tr, va, SETTINGS, OPTIONS, seed=3, device="cpu", checkpoint_dir=tmp_path / "cut",
                    progress=False)
    assert resumed.info["resumed_from_step"] == 7
    strip = [{k: v for k, v in r.items() if k != "images_per_s"} for r in full.log]
    assert strip == [{k: v for k, v in r.items() if k != "images_per_s"} for r in resumed.log]
    for k, v in full.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    # the kept weights are the EMA's, not the live network's; the learning rate followed the schedule
    ck = load_checkpoint(tmp_path / "full" / "checkpoint.pt", full.info["fingerprint"])
    assert full.info["best_step"] == 16
    for k, v in full.state_dict.items():
        assert torch.equal(v, ck["ema"][f"module.{k}"].float()), k
    assert not all(torch.equal(v, ck["model"][k]) for k, v in full.state_dict.items())
    assert ck["schedulers"]["adam"]["_last_lr"][0] == pytest.approx(
        OPTIONS["lr"] * lr_factor("cosine", 3, 16)(16), abs=1e-12)
    # a decaying schedule depends on the number of steps: more epochs are another run, not a continuation
    longer = train(tr, va, SETTINGS, {**OPTIONS, "epochs": 5}, seed=3, device="cpu", progress=False,
                   checkpoint_dir=tmp_path / "full")
    assert longer.info["resumed_from_step"] is None


def test_ema_weights_are_validated_and_kept(brains):
    tr, va = brains
    cfg = {**FAST, "epochs": 3, "val_every_steps": 6, "lr": 3e-3}
    plain = train(tr, va, SETTINGS, cfg, seed=0, device="cpu", progress=False)
    ema = train(tr, va, SETTINGS, {**cfg, "ema_decay": 0.5}, seed=0, device="cpu", progress=False)
    # same training (the EMA does not touch the live weights), other kept weights and validation loss
    assert [r["train_loss"] for r in plain.log] == [r["train_loss"] for r in ema.log]
    assert plain.log[-1]["val_loss"] != ema.log[-1]["val_loss"]
    assert not torch.equal(plain.state_dict["net.out.2.weight"], ema.state_dict["net.out.2.weight"])
