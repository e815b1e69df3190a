"""Training of any model kind (pddpm.models) on healthy slices, resumable and reproducible.

An epoch draws `train.slices_per_volume` random axial slices (or slice sequences, for a kind whose
samples are sequences) per training volume, shuffles them and cuts them into full batches; the
incomplete last batch is dropped, as the original's `drop_last=True` (docs/spec.md, section 5). The
kind's `training_step` computes its loss terms and steps its optimisers; the loop around it schedules the
learning rate, keeps the EMA of the weights (if asked), logs every term, validates, keeps the weights with
the lowest validation loss and checkpoints. Everything a resumed run needs is one `TrainingState`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pddpm.checkpoint import load_checkpoint, save_checkpoint
from pddpm.config import with_defaults
from pddpm.device import (
    autocast,
    configure_backends,
    fused_adam,
    resolve_device,
    resolve_precision,
    use_channels_last,
)
from pddpm.errors import PddpmConfigError, PddpmInputError
from pddpm.io import atomic_path
from pddpm.models import TRAIN_SPEED_KEYS, build, complete_settings, save_trained
from pddpm.models.base import Batch, ModelKind, window_starts

log = logging.getLogger("pddpm.train")

# `train` keys a checkpoint may differ in and still be resumed: the speed-only ones, and the number of
# epochs (so a finished or interrupted run can be extended) unless the learning rate decays over them
RESUME_EXEMPT = (*TRAIN_SPEED_KEYS, "epochs")
# one row per step; val_loss and images_per_s (since the previous validation) on validation steps only;
# a kind with more loss terms than its total adds `train_<term>` (every step) and `val_<term>` columns
LOG_COLUMNS = ["step", "train_loss", "val_loss", "images_per_s"]
VAL_SEED_OFFSET = 1_000_003


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """Stopped on request (SIGTERM, e.g. a SLURM time limit); a checkpoint was written to resume from."""


# -------------------------------------------------------------------------------------------------- data
def check_images(images: np.ndarray, name: str, image_size) -> None:
    if images.ndim != 4:
        raise PddpmInputError(f"{name}: image array has shape {images.shape}, expected (N, Z, H, W)")
    if images.shape[0] == 0 or images.shape[1] == 0:
        raise PddpmInputError(f"{name}: the split holds no volumes/slices (shape {images.shape}); check the "
                              f"split sheet and that the training data set has subjects in this fold")
    if list(images.shape[-2:]) != list(image_size):
        raise PddpmInputError(f"{name}: slices are {images.shape[-2:]}, the model expects {tuple(image_size)}")


@dataclass
class SliceData:
    """A split's slices on the training device: image (N, Z, H, W) in [0, 1] as stored, brain mask (or None:
    the whole slice counts as brain)."""

    image: torch.Tensor
    mask: torch.Tensor | None
    channels_last: bool = False

    @classmethod
    def from_split(cls, split, name: str = "split", image_size=None, device="cpu",
                   channels_last: bool = False) -> SliceData:
        """`split`: an image array (N, Z, H, W), or a mapping with `image` and `mask` (pddpm.slices.load_split)."""
        images = split["image"] if isinstance(split, Mapping) else split
        masks = split.get("mask") if isinstance(split, Mapping) else None
        images = np.asarray(images)
        check_images(images, name, image_size if image_size is not None else images.shape[-2:])
        if masks is not None and np.shape(masks) != images.shape:
            raise PddpmInputError(f"{name}: mask {np.shape(masks)} and image {images.shape} differ in shape")
        dev = torch.device(device)
        image = torch.from_numpy(np.ascontiguousarray(images)).to(dev)
        mask = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8)).to(dev) if masks is not None else None
        return cls(image, mask, channels_last)

    @property
    def n_volumes(self) -> int:
        return self.image.shape[0]

    @property
    def n_slices(self) -> int:
        return self.image.shape[1]

    def batch(self, volumes: np.ndarray, first_slices: np.ndarray, length: int = 1) -> Batch:
        """Batch of `length` consecutive slices from `first_slices` of `volumes`, image in [-1, 1] float32."""
        dev = self.image.device
        v = _to_device(volumes, dev)[:, None]
        z = _to_device(first_slices, dev)[:, None] + torch.arange(length, device=dev)
        image = self.image[v, z].float().mul(2).sub(1)
        mask = self.mask[v, z].bool() if self.mask is not None else torch.ones_like(image, dtype=torch.bool)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return Batch(image, mask)

    def check_length(self, length: int, name: str, setting: str | None = None) -> None:
        """Samples of `length` consecutive slices must fit this split's volumes; `setting` is the config key
        that sets the length (a kind's `sample_length_key`), named in the error with the allowed values."""
        if self.n_slices >= length:
            return
        fix = (f"set {setting} to {self.n_slices} or less" if setting else
               f"give this model kind volumes of {length} slices or more")
        raise PddpmInputError(f"{name}: volumes have {self.n_slices} slices, fewer than the {length} consecutive "
                              f"slices of one sample of this model kind ({setting or 'its sample length'}); "
                              f"{fix}, or a slice grid with more axial slices (slices.fov_mm[2] / "
                              f"slices.target_spacing_mm)")

    def validation_items(self, length: int = 1, setting: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every slice of every volume (length 1), or windows of `length` slices covering each volume.
        Volumes shorter than `length` are a PddpmInputError naming `setting` (`check_length`)."""
        self.check_length(length, "validation split", setting)
        starts = np.array(window_starts(self.n_slices, length))
        return np.repeat(np.arange(self.n_volumes), len(starts)), np.tile(starts, self.n_volumes)


def epoch_plan(seed: int, epoch: int, n_volumes: int, n_starts: int,
               per_volume: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(order, first slice) of `epoch`'s samples, a pure function of (seed, epoch) so that a resumed run
    draws exactly the same batches: sample i is volume order[i] % n_volumes from slice first[order[i]].
    `per_volume` k draws k independent slices per volume (as k of the original's epochs, shuffled
    together); with 1 it is the original's one random slice per volume."""
    rng = np.random.default_rng([seed, epoch])
    n = n_volumes * per_volume
    return rng.permutation(n), rng.integers(0, n_starts, n)


class Sampler:
    """Which samples make up training step `step`: full batches of the epoch plans, the last
    incomplete batch of each epoch dropped."""

    def __init__(self, seed: int, n_volumes: int, n_slices: int, length: int, per_volume: int, batch_size: int):
        self.seed, self.n_volumes, self.per_volume, self.batch_size = seed, n_volumes, per_volume, batch_size
        self.n_starts = n_slices - length + 1
        if self.n_starts < 1:  # train() checks first (SliceData.check_length), naming the kind's setting
            raise PddpmInputError(f"training volumes have {n_slices} slices, fewer than the {length} consecutive "
                                  f"slices of one training sample of this model kind")
        self.steps_per_epoch = n_volumes * per_volume // batch_size
        if self.steps_per_epoch == 0:
            need = math.ceil(batch_size / n_volumes)
            raise PddpmConfigError(
                f"train.batch_size {batch_size} is more than the {n_volumes} training volumes x "
                f"train.slices_per_volume {per_volume}: an epoch would hold no full batch (the incomplete "
                f"last batch is dropped, as the original). Set train.slices_per_volume to {need} or more, or "
                f"train.batch_size to {n_volumes * per_volume} or less")
        self._epoch, self._plan = None, None

    def items(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._plan = epoch, epoch_plan(self.seed, epoch, self.n_volumes, self.n_starts,
                                                        self.per_volume)
        order, first = self._plan
        sel = order[pos * self.batch_size:(pos + 1) * self.batch_size]
        return sel % self.n_volumes, first[sel]


def _to_device(index: np.ndarray, dev: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(index))
    if dev.type == "cuda":  # pinned + non-blocking: no wait for the queued GPU work
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)


@torch.no_grad()
def validation_loss(model: ModelKind, data: SliceData, seed: int, batch_size: int,
                    precision: str = "fp32") -> dict[str, float]:
    """The kind's loss terms on every slice (or window) of the validation volumes, with noise and draws
    fixed by `seed` so that values at different steps are comparable; mean over samples."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed + VAL_SEED_OFFSET)
    volumes, first = data.validation_items(model.sample_length, model.sample_length_key)
    sums: dict[str, float] = {}
    count = 0
    for start in range(0, len(volumes), batch_size):
        batch = data.batch(volumes[start:start + batch_size], first[start:start + batch_size], model.sample_length)
        with autocast(batch.image.device, precision):
            terms = model.loss(batch, gen)
        n = len(batch.image)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v.item() * n
        count += n
    model.train(was_training)
    return {k: v / count for k, v in sums.items()}


# ------------------------------------------------------------------------------------------------- state
def lr_factor(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of train.lr after `s` optimiser steps: linear warm-up over `warmup_steps`, then constant
    or a cosine decay to 0 at the last step."""
    def factor(s: int) -> float:
        warm = min(1.0, (s + 1) / warmup_steps) if warmup_steps else 1.0
        if schedule == "constant":
            return warm
        progress = min(1.0, max(0, s - warmup_steps) / max(1, total_steps - warmup_steps))
        return warm * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _state_of(obj):
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    if isinstance(obj, dict):
        return {k: _state_of(v) for k, v in obj.items()}
    return copy.deepcopy(obj)


def _restore(current, saved):
    if isinstance(current, torch.Generator):
        current.set_state(saved)
        return current
    if hasattr(current, "load_state_dict"):
        current.load_state_dict(saved)
        return current
    if isinstance(current, dict) and isinstance(saved, dict):
        return {k: _restore(current.get(k), v) for k, v in saved.items()}
    return saved


@dataclass
class TrainingState:
    """Everything a resumed run needs to continue exactly as an uninterrupted one. `state_dict()` walks
    the fields (objects with a state_dict, generators, plain values) plus torch's global RNG states, so a
    new piece of state is one new field."""

    model: ModelKind
    optimisers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]
    ema: torch.optim.swa_utils.AveragedModel | None
    generator: torch.Generator  # every random draw of the kind's loss (on the training device)
    step: int = 0
    best_val: float = math.inf
    best_step: int = -1
    best_weights: dict | None = None  # state dict (fp32, CPU) of the model with the lowest validation loss
    log: list[dict] = field(default_factory=list)  # train_log.csv rows
    window: dict[str, float] = field(default_factory=dict)  # total loss summed since the last validation, "_n" steps
    resumes: list[int] = field(default_factory=list)  # the step each later attempt resumed at (e.g. SLURM retries)

    @classmethod
    def start(cls, model: ModelKind, cfg: dict, device: torch.device, seed: int, total_steps: int) -> TrainingState:
        def adam(params, **overrides):
            return torch.optim.Adam(params, **{"lr": cfg["lr"], "fused": fused_adam(device), **overrides})

        optimisers = model.configure_optimisers(adam)
        factor = lr_factor(cfg["lr_schedule"], cfg["warmup_steps"], total_steps)
        schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, factor) for k, o in optimisers.items()}
        ema = None
        if cfg["ema_decay"] is not None:
            # parameters averaged, buffers (e.g. batch-norm statistics) copied from the live model
            ema = torch.optim.swa_utils.AveragedModel(
                model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg["ema_decay"]), use_buffers=False)
        return cls(model, optimisers, schedulers, ema, torch.Generator(device=device).manual_seed(seed))

    def state_dict(self) -> dict:
        state = {f.name: _state_of(getattr(self, f.name)) for f in fields(self)}
        state["rng"] = {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(self.generator.device)
                        if self.generator.device.type == "cuda" else None}
        return state

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            if f.name in state:  # a checkpoint written before a field existed keeps the field's start value
                setattr(self, f.name, _restore(getattr(self, f.name), state[f.name]))
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and self.generator.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.generator.device)

    @property
    def eval_model(self) -> ModelKind:
        """The weights that are validated and kept: the EMA if there is one."""
        return self.ema.module if self.ema is not None else self.model

    def train_step(self, batch: Batch, amp: Callable) -> dict[str, torch.Tensor]:
        terms = self.model.training_step(batch, self.generator, self.optimisers, self.step, amp)
        with warnings.catch_warnings():
            # the schedule follows the training step, also for an optimiser this step left alone
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            for scheduler in self.schedulers.values():
                scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        return terms

    def record(self, pending: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Log the loss terms of the steps in `pending` (the last len(pending) steps); returns the totals.
        A term a step did not report (e.g. in another training phase) is logged as empty."""
        names = list(dict.fromkeys(k for p in pending for k in p))
        nan = torch.tensor(math.nan)
        values = {k: torch.stack([p.get(k, nan).float().cpu() for p in pending]) for k in names}
        first = self.step - len(pending) + 1
        for i in range(len(pending)):
            row = {"step": first + i, "train_loss": float(values["loss"][i]), "val_loss": None, "images_per_s": None}
            row.update({f"train_{k}": float(v[i]) for k, v in values.items() if k != "loss"})
            self.log.append(row)
        self.window["loss"] = self.window.get("loss", 0.0) + float(values["loss"].sum())
        self.window["_n"] = self.window.get("_n", 0) + len(pending)
        return values["loss"]

    def validated(self, terms: dict[str, float], images_per_s: float | None) -> float:
        """Record a validation; keep the weights if they are the best so far. Returns the mean training
        loss since the previous validation."""
        self.log[-1].update(val_loss=terms["loss"], images_per_s=images_per_s,
                            **{f"val_{k}": v for k, v in terms.items() if k != "loss"})
        if terms["loss"] < self.best_val:
            self.best_val, self.best_step = terms["loss"], self.step
            self.best_weights = {k: (v.detach().to("cpu", torch.float32, copy=True) if v.is_floating_point()
                                     else v.detach().to("cpu", copy=True))
                                 for k, v in self.eval_model.state_dict().items()}
        mean_train = self.window.get("loss", 0.0) / max(self.window.get("_n", 0), 1)
        self.window = {}
        return mean_train


# -------------------------------------------------------------------------------------------------- run
@dataclass
class TrainResult:
    state_dict: dict
    log: list[dict]
    info: dict = field(default_factory=dict)


def _file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def split_digest(split) -> str:
    """sha256 of a split's images (and brain masks): a checkpoint of other data must not be resumed, or
    a rerun after an upstream change (an N4 setting, a replaced scan) would return the old model."""
    h = hashlib.sha256()
    parts = [split["image"], split.get("mask")] if isinstance(split, Mapping) else [split]
    for arr in parts:
        if arr is not None:
            arr = np.ascontiguousarray(arr)
            h.update(str((arr.dtype, arr.shape)).encode())
            h.update(memoryview(arr.reshape(-1).view(np.uint8)))
    return h.hexdigest()


def run_fingerprint(settings: dict, train_cfg: dict, seed: int, n_train: int, n_val: int,
                    extra_inputs: Mapping[str, str] | None = None, data: Sequence[str] = ()) -> str:
    """Identity of a run for resuming: settings and `train` section (both completed from the schema
    defaults), seed, split sizes, the digests of the splits (`split_digest`) and the content of extra
    input files."""
    cfg = with_defaults(train_cfg, "train")
    exempt = RESUME_EXEMPT if cfg["lr_schedule"] == "constant" else TRAIN_SPEED_KEYS
    keep = {k: v for k, v in cfg.items() if k not in exempt}
    inputs = {k: _file_digest(v) for k, v in sorted((extra_inputs or {}).items())}
    blob = json.dumps({"settings": complete_settings(settings), "train": keep, "seed": seed, "n": [n_train, n_val],
                       "inputs": inputs, "data": list(data)}, sort_keys=True, default=str)
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


def train(train_split, val_split, settings: dict, train_cfg: dict, *, seed: int, device: str = "auto",
          checkpoint_dir: str | Path | None = None, progress: bool = True, stop_after_steps: int | None = None,
          extra_inputs: Mapping[str, str] | None = None) -> TrainResult:
    """Train one model kind; resume from `checkpoint_dir` when it holds a checkpoint of the same run.

    train_split / val_split: image arrays (N, Z, H, W) in [0, 1], or mappings with `image` and `mask`
    (as pddpm.slices.load_split returns). settings: {"kind", "image_size", the kind's config sections};
    train_cfg: the `train` section (missing keys: schema defaults); extra_inputs: the files of
    `Kind.extra_inputs`. `stop_after_steps` stops like a SIGTERM would after that many steps
    (checkpoint written, then TrainingInterrupted) - how tests and benchmarks interrupt a run.
    """
    dev = resolve_device(device)
    configure_backends(dev)
    # `auto` resolved here, so the run's identity (a checkpoint resumed elsewhere) holds what it trained in
    cfg = with_defaults(train_cfg, "train")
    cfg["precision"] = precision = resolve_precision(dev, cfg["precision"])
    channels_last = use_channels_last(dev, cfg["channels_last"])

    torch.manual_seed(seed)  # the kind's initial weights
    model = build(settings["kind"], settings)  # checks the settings against the slice size
    settings = model.settings
    data = SliceData.from_split(train_split, "training split", settings["image_size"], dev, channels_last)
    val_data = SliceData.from_split(val_split, "validation split", settings["image_size"], dev, channels_last)
    # before any step: a validation split too short for the kind's samples would fail only at the first validation
    for split_data, name in ((data, "training split"), (val_data, "validation split")):
        split_data.check_length(model.sample_length, name, model.sample_length_key)
    sampler = Sampler(seed, data.n_volumes, data.n_slices, model.sample_length, cfg["slices_per_volume"],
                      cfg["batch_size"])
    total_steps = cfg["epochs"] * sampler.steps_per_epoch
    fingerprint = run_fingerprint(settings, cfg, seed, data.n_volumes, val_data.n_volumes, extra_inputs,
                                  data=[split_digest(train_split), split_digest(val_split)])
    ckpt_path = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir else None

    model.plan(sampler.steps_per_epoch, total_steps)
    model.load_inputs(dict(extra_inputs or {}))
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    state = TrainingState.start(model, cfg, dev, seed, total_steps)
    if cfg["compile"]:
        for network in model.children():
            network.compile()  # in place: state_dict keys stay as they are

    resumed_from = None
    saved = load_checkpoint(ckpt_path, fingerprint) if ckpt_path else None
    if saved is not None and saved["step"] > total_steps:
        log.warning("checkpoint %s is at step %d, beyond the %d steps now asked for; training starts afresh",
                    ckpt_path, saved["step"], total_steps)
        saved = None
    if saved is not None:
        state.load_state_dict(saved)
        resumed_from = state.step
        state.resumes.append(state.step)
        log.info("resuming from %s at step %d of %d", ckpt_path, state.step, total_steps)

    def checkpoint():
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, {"fingerprint": fingerprint, **state.state_dict()})

    def amp():
        return autocast(dev, precision)

    log.info("training %s: %d volumes x %d slices, %d samples per volume and epoch, batch %d, %d steps "
             "(%d epochs), device %s, precision %s", model.name, data.n_volumes, data.n_slices,
             cfg["slices_per_volume"], cfg["batch_size"], total_steps, cfg["epochs"], dev, precision)
    model.train()
    pending: list[dict[str, torch.Tensor]] = []  # losses not yet checked for NaN (checking syncs a GPU)
    check_every = 1 if dev.type == "cpu" else 20
    t_window, n_window = time.perf_counter(), 0
    stopped_at = None
    with _StopFlag() as stop, _progress(total_steps, state.step, progress) as bar:
        try:
            while state.step < total_steps:
                batch = model.augment(data.batch(*sampler.items(state.step), model.sample_length), state.generator)
                pending.append(state.train_step(batch, amp))
                n_window += batch.image.shape[0] * batch.image.shape[1]
                bar.update(1)
                step = state.step
                last = step == total_steps
                due_val = step % cfg["val_every_steps"] == 0 or last
                due_ckpt = step % cfg["checkpoint_every_steps"] == 0 or last
                stop_now = stop.requested or (stop_after_steps is not None and step >= stop_after_steps)
                if len(pending) >= check_every or due_val or due_ckpt or stop_now:
                    losses = state.record(pending)
                    pending.clear()
                    if not torch.isfinite(losses).all():
                        raise TrainingDiverged(
                            f"{model.name}: the training loss became {losses[-1].item()} at step {step}; "
                            f"stopped. The last good checkpoint ({ckpt_path}) is kept; lower train.lr or set "
                            f"train.precision: fp32, then delete the checkpoint to restart")
                if due_val:
                    elapsed = time.perf_counter() - t_window
                    val = validation_loss(state.eval_model, val_data, seed, cfg["batch_size"], precision)
                    speed = n_window / elapsed if elapsed > 0 else None
                    mean_train = state.validated(val, speed)
                    bar.set_postfix(train=f"{mean_train:.4f}", val=f"{val['loss']:.4f}")
                    log.info("step %d: train loss %.5f (mean since last validation), val loss %.5f, %.1f images/s",
                             step, mean_train, val["loss"], speed or float("nan"))
                    t_window, n_window = time.perf_counter(), 0
                if due_ckpt or stop_now:
                    checkpoint()
                if stop_now and not last:
                    stopped_at = step
                    break
        except KeyboardInterrupt:
            # mid-step state is not consistent: keep the last periodic checkpoint instead of writing one
            raise TrainingInterrupted(f"training interrupted near step {state.step} of {total_steps}; rerun to "
                                      f"resume from the last checkpoint in {ckpt_path}") from None
    if stopped_at is not None:
        raise TrainingInterrupted(f"training stopped at step {stopped_at} of {total_steps}; "
                                  f"rerun to resume from {ckpt_path}")
    info = {"steps": total_steps, "steps_per_epoch": sampler.steps_per_epoch, "epochs": cfg["epochs"],
            "best_step": state.best_step, "best_val_loss": state.best_val, "resumed_from_step": resumed_from,
            "resumed_at_steps": list(state.resumes),
            "device": str(dev), "precision": precision, "fingerprint": fingerprint,
            "n_train_volumes": data.n_volumes, "n_val_volumes": val_data.n_volumes,
            "slices_per_volume": cfg["slices_per_volume"], "ema": state.ema is not None}
    return TrainResult(state_dict=state.best_weights, log=state.log, info=info)


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", mininterval=5)


class _NoBar(contextlib.nullcontext):
    def __enter__(self):
        return self

    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass


# ------------------------------------------------------------------------------------------------ outputs
def log_columns(rows: list[dict]) -> list[str]:
    """train_log.csv columns: LOG_COLUMNS, then the kind's other terms in the order they first appear."""
    extra = dict.fromkeys(k for r in rows for k in r if k not in LOG_COLUMNS)
    return LOG_COLUMNS + list(extra)


def write_outputs(result: TrainResult, settings: dict, run_record: dict, model_path, log_path, run_path) -> None:
    """model.pt (best weights + settings), train_log.csv, run.json; each written atomically."""
    model = build(settings["kind"], settings)
    model.load_state_dict(result.state_dict)
    save_trained(model, model_path, extra={"info": result.info})
    with atomic_path(log_path) as tmp:
        pd.DataFrame(result.log, columns=log_columns(result.log)).to_csv(tmp, index=False)
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
