"""Training of pDDPM (patched) and the DDPM baseline on healthy slices, resumable and reproducible.

An epoch draws one random axial slice per training volume (as the original). Per sample a timestep
t ~ U[0, T) and, for pDDPM, one patch of the grid; only that patch is noised and the prediction replaces
only that patch; the loss is the L1 over the whole slice. The kept model is the one with the lowest
validation loss (the same stochastic loss, with fixed noise, on all slices of the validation volumes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pddpm.checkpoint import load_checkpoint, save_checkpoint
from pddpm.device import autocast, configure_backends, resolve_device
from pddpm.diffusion import Diffusion
from pddpm.errors import PddpmInputError
from pddpm.io import atomic_path
from pddpm.model import build_network, check_image_size, save_trained
from pddpm.noise import make_noise
from pddpm.patches import patch_masks

log = logging.getLogger("pddpm.train")

TRAIN_DEFAULTS = {"batch_size": 32, "lr": 1e-4, "epochs": 1600, "val_every_steps": 500,
                  "checkpoint_every_steps": 500, "precision": "bf16", "compile": False}
# settings that do not change what a run computes: a checkpoint stays valid when only these change
# (epochs included, so a finished or interrupted run can be extended)
RESUME_EXEMPT = ("epochs", "checkpoint_every_steps", "compile", "gpus", "threads", "mem_mb", "runtime_min")
# one row per step; val_loss and images_per_s (since the previous validation) on validation steps only
LOG_COLUMNS = ["step", "train_loss", "val_loss", "images_per_s"]
VAL_SEED_OFFSET = 1_000_003


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """Stopped on request (SIGTERM, e.g. a SLURM time limit); a checkpoint was written to resume from."""


# ---------------------------------------------------------------------------------------------- objective
class Objective:
    """Forward noising and loss of one model kind: `pddpm` (one noised patch per sample) or `ddpm`."""

    def __init__(self, settings: dict, device: torch.device):
        self.kind = settings["kind"]
        self.diffusion = Diffusion.from_config(settings.get("diffusion"))
        self.noise_cfg = (settings.get("diffusion") or {}).get("noise") or {}
        h, w = settings["image_size"]
        self.shape = (h, w)
        self.device = device
        if self.kind == "pddpm":
            p = settings.get("patch") or {}
            self.masks = patch_masks(h, w, p.get("size", 48), p.get("stride", 48)).to(device)
        else:
            self.masks = None

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return make_noise((n, 1, *self.shape), self.noise_cfg, generator=generator, device=self.device)

    def inputs(self, x0: torch.Tensor, generator: torch.Generator, noise: torch.Tensor | None = None):
        """(x_t, t, mask): x0 in [-1, 1] noised at t per sample, only inside the chosen patch for pDDPM."""
        n = x0.shape[0]
        gdev = generator.device
        t = torch.randint(0, self.diffusion.timesteps, (n,), generator=generator, device=gdev).to(self.device)
        mask = None
        if self.masks is not None:
            idx = torch.randint(0, len(self.masks), (n,), generator=generator, device=gdev).to(self.device)
            mask = self.masks[idx][:, None]
        if noise is None:
            noise = self.noise(n, generator)
        x_t = self.diffusion.q_sample(x0, t, noise)
        if mask is not None:
            x_t = torch.where(mask, x_t, x0)
        return x_t, t, mask

    @staticmethod
    def loss(pred: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Mean L1 over the whole slice; for pDDPM the prediction counts only inside the patch."""
        pred = pred.float()
        if mask is not None:
            pred = torch.where(mask, pred, x0)
        return (pred - x0).abs().mean()


# -------------------------------------------------------------------------------------------------- data
def check_images(images: np.ndarray, name: str, image_size) -> None:
    if images.ndim != 4:
        raise PddpmInputError(f"{name}: image array has shape {images.shape}, expected (N, Z, H, W)")
    if images.shape[0] == 0 or images.shape[1] == 0:
        raise PddpmInputError(f"{name}: the split holds no volumes/slices (shape {images.shape}); check the "
                              f"split sheet and that the training data set has subjects in this fold")
    if list(images.shape[-2:]) != list(image_size):
        raise PddpmInputError(f"{name}: slices are {images.shape[-2:]}, the model expects {tuple(image_size)}")


def epoch_plan(seed: int, epoch: int, n_volumes: int, n_slices: int) -> tuple[np.ndarray, np.ndarray]:
    """Volume order and one random slice index per volume for `epoch`: a pure function of (seed, epoch),
    so a resumed run draws exactly the same batches."""
    rng = np.random.default_rng([seed, epoch])
    return rng.permutation(n_volumes), rng.integers(0, n_slices, n_volumes)


def to_model_range(batch: torch.Tensor) -> torch.Tensor:
    """[0, 1] intensities -> [-1, 1] float32 (B, 1, H, W)."""
    return batch.float().mul(2).sub(1).unsqueeze(1)


# -------------------------------------------------------------------------------------------------- run
@dataclass
class TrainResult:
    state_dict: dict
    log: list[dict]
    info: dict = field(default_factory=dict)


def run_fingerprint(settings: dict, train_cfg: dict, seed: int, n_train: int, n_val: int) -> str:
    keep = {k: v for k, v in train_cfg.items() if k not in RESUME_EXEMPT}
    blob = json.dumps({"settings": settings, "train": keep, "seed": seed, "n": [n_train, n_val]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _StopFlag:
    """Turns SIGTERM (SLURM's time-limit signal, snakemake's cancel) into a flag checked between steps."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


@torch.no_grad()
def validation_loss(network, objective: Objective, images: torch.Tensor, seed: int, batch_size: int,
                    device: torch.device, precision: str) -> float:
    """The training loss on every slice of the validation volumes, with noise/t/patch fixed by `seed`
    so that values at different steps are comparable."""
    was_training = network.training
    network.eval()
    gen = torch.Generator().manual_seed(seed + VAL_SEED_OFFSET)
    flat = images.reshape(-1, *images.shape[-2:])
    total, count = 0.0, 0
    for start in range(0, len(flat), batch_size):
        x0 = to_model_range(flat[start:start + batch_size].to(device))
        x_t, t, mask = objective.inputs(x0, gen)
        with autocast(device, precision):
            pred = network(x_t, t)
        total += objective.loss(pred, x0, mask).item() * len(x0)
        count += len(x0)
    network.train(was_training)
    return total / count


def train(train_images: np.ndarray, val_images: np.ndarray, settings: dict, train_cfg: dict, *, seed: int,
          device: str = "auto", checkpoint_dir: str | Path | None = None, progress: bool = True,
          stop_after_steps: int | None = None) -> TrainResult:
    """Train one model; resume from `checkpoint_dir` when it holds a checkpoint of the same run.

    `stop_after_steps` stops like a SIGTERM would after that many steps (checkpoint written, then
    TrainingInterrupted) - how tests and benchmarks interrupt a run.
    """
    cfg = {**TRAIN_DEFAULTS, **train_cfg}
    check_image_size(settings)
    check_images(train_images, "training split", settings["image_size"])
    check_images(val_images, "validation split", settings["image_size"])
    dev = resolve_device(device)
    configure_backends(dev)
    precision = cfg["precision"] if dev.type == "cuda" else "fp32"

    n_vol, n_slices = train_images.shape[:2]
    bs = int(cfg["batch_size"])
    steps_per_epoch = math.ceil(n_vol / bs)
    total_steps = int(cfg["epochs"]) * steps_per_epoch
    fingerprint = run_fingerprint(settings, cfg, seed, n_vol, len(val_images))
    ckpt_path = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None

    torch.manual_seed(seed)
    network = build_network(settings).to(dev)
    if dev.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(network.parameters(), lr=cfg["lr"], **({"fused": True} if dev.type == "cuda" else {}))
    step_fn_net = torch.compile(network) if (cfg["compile"] and dev.type == "cuda") else network
    objective = Objective(settings, dev)
    # on the training device: drawing t, patches and noise then needs no host-device copy per step
    gen = torch.Generator(device=dev).manual_seed(seed)

    data = torch.from_numpy(np.ascontiguousarray(train_images)).to(dev)
    val_data = torch.from_numpy(np.ascontiguousarray(val_images)).to(dev)

    step, best_val, best_step, best_state, rows = 0, math.inf, -1, None, []
    acc_loss, acc_n, resumed_from = 0.0, 0, None
    state = load_checkpoint(ckpt_path, fingerprint) if ckpt_path else None
    if state is not None and state["step"] > total_steps:
        log.warning("checkpoint %s is at step %d, beyond the %d steps now asked for; training starts afresh",
                    ckpt_path, state["step"], total_steps)
        state = None
    if state is not None:
        network.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if dev.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], dev)
        step, best_val, best_step = state["step"], state["best_val"], state["best_step"]
        best_state, rows = state["best_state"], state["log"]
        acc_loss, acc_n = state["acc_loss"], state["acc_n"]
        resumed_from = step
        log.info("resuming from %s at step %d of %d", ckpt_path, step, total_steps)

    def checkpoint():
        if ckpt_path is None:
            return
        save_checkpoint(ckpt_path, {
            "fingerprint": fingerprint, "model": network.state_dict(), "optimiser": optimiser.state_dict(),
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None, "step": step,
            "best_val": best_val, "best_step": best_step, "best_state": best_state, "log": rows,
            "acc_loss": acc_loss, "acc_n": acc_n})

    log.info("training %s: %d volumes x %d slices, batch %d, %d steps (%d epochs), device %s, precision %s",
             settings["kind"], n_vol, n_slices, bs, total_steps, cfg["epochs"], dev, precision)
    network.train()
    pending: list[torch.Tensor] = []  # losses not yet checked for NaN (checking every step syncs a GPU)
    check_every = 1 if dev.type == "cpu" else 20
    t_window, n_window = time.perf_counter(), 0
    bar = _progress(total_steps, step, progress)
    stopped_at = None
    with _StopFlag() as stop, bar:
        try:
            while step < total_steps:
                epoch, pos = divmod(step, steps_per_epoch)
                order, zs = epoch_plan(seed, epoch, n_vol, n_slices)
                sel = order[pos * bs:(pos + 1) * bs]
                x0 = to_model_range(data[_to_device(sel, dev), _to_device(zs[sel], dev)])
                if dev.type == "cuda":
                    x0 = x0.contiguous(memory_format=torch.channels_last)
                x_t, t, mask = objective.inputs(x0, gen)
                with autocast(dev, precision):
                    pred = step_fn_net(x_t, t)
                loss = objective.loss(pred, x0, mask)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                pending.append(loss.detach())
                step += 1
                n_window += len(sel)
                bar.update(1)
                last = step == total_steps
                due_val = step % cfg["val_every_steps"] == 0 or last
                due_ckpt = step % cfg["checkpoint_every_steps"] == 0 or last
                stop_now = stop.requested or (stop_after_steps is not None and step >= stop_after_steps)
                if len(pending) >= check_every or due_val or due_ckpt or stop_now:
                    losses = torch.stack(pending).float().cpu()
                    pending.clear()
                    if not torch.isfinite(losses).all():
                        raise TrainingDiverged(
                            f"{settings['kind']}: the training loss became {losses[-1].item()} at step {step}; "
                            f"stopped. The last good checkpoint ({ckpt_path}) is kept; lower train.lr or set "
                            f"train.precision: fp32, then delete the checkpoint to restart")
                    acc_loss += float(losses.sum())
                    acc_n += len(losses)
                    # one row per step (its batch loss); validation rows also carry val loss and speed
                    first = step - len(losses) + 1
                    rows.extend({"step": first + i, "train_loss": float(v), "val_loss": None, "images_per_s": None}
                                for i, v in enumerate(losses))
                if due_val:
                    elapsed = time.perf_counter() - t_window
                    val = validation_loss(network, objective, val_data, seed, bs, dev, precision)
                    speed = n_window / elapsed if elapsed > 0 else None
                    rows[-1].update(val_loss=val, images_per_s=speed)
                    mean_train = acc_loss / max(acc_n, 1)
                    bar.set_postfix(train=f"{mean_train:.4f}", val=f"{val:.4f}")
                    log.info("step %d: train loss %.5f (mean since last validation), val loss %.5f, %.1f images/s",
                             step, mean_train, val, speed or float("nan"))
                    if val < best_val:
                        best_val, best_step = val, step
                        best_state = {k: v.detach().to("cpu", torch.float32, copy=True)
                                      for k, v in network.state_dict().items()}
                    acc_loss, acc_n = 0.0, 0
                    t_window, n_window = time.perf_counter(), 0
                if due_ckpt or stop_now:
                    checkpoint()
                if stop_now and not last:
                    stopped_at = step
                    break
        except KeyboardInterrupt:
            # mid-step state is not consistent: keep the last periodic checkpoint instead of writing one
            raise TrainingInterrupted(f"training interrupted near step {step} of {total_steps}; rerun to resume "
                                      f"from the last checkpoint in {ckpt_path}") from None
    if stopped_at is not None:
        raise TrainingInterrupted(f"training stopped at step {stopped_at} of {total_steps}; "
                                  f"rerun to resume from {ckpt_path}")
    info = {"steps": total_steps, "steps_per_epoch": steps_per_epoch, "epochs": cfg["epochs"],
            "best_step": best_step, "best_val_loss": best_val, "resumed_from_step": resumed_from,
            "device": str(dev), "precision": precision, "fingerprint": fingerprint,
            "n_train_volumes": n_vol, "n_val_volumes": len(val_images)}
    return TrainResult(state_dict=best_state, log=rows, info=info)


def _to_device(index: np.ndarray, dev: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(index))
    if dev.type == "cuda":  # pinned + non-blocking: no wait for the queued GPU work
        return t.pin_memory().to(dev, non_blocking=True)
    return t


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", mininterval=5)


class _NoBar(contextlib.nullcontext):
    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass


# ------------------------------------------------------------------------------------------------ outputs
def write_outputs(result: TrainResult, settings: dict, run_record: dict, model_path, log_path, run_path) -> None:
    """model.pt (best weights + settings), train_log.csv, run.json; each written atomically."""
    net = build_network(settings)
    net.load_state_dict(result.state_dict)
    save_trained(net, settings, model_path, extra={"info": result.info})
    with atomic_path(log_path) as tmp:
        pd.DataFrame(result.log, columns=LOG_COLUMNS).to_csv(tmp, index=False)
    with atomic_path(run_path) as tmp:
        Path(tmp).write_text(json.dumps({**run_record, "result": result.info}, indent=2, default=str))


def run_record(config: dict, seed: int) -> dict:
    """What a run was: its config, seed, library versions and the git commit of this checkout."""
    import platform
    import subprocess
    import sys

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).parent).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, timeout=10, cwd=Path(__file__).parent).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"seed": seed, "config": config, "git_commit": commit, "git_dirty": dirty,
            "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
                         "cuda": torch.version.cuda, "platform": platform.platform()}}
