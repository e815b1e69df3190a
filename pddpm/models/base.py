"""The interface every model kind implements (docs/contracts.md, section "Python API").

A kind is one `torch.nn.Module` that owns its networks (as child modules), its training loss and its
reconstruction. The training loop (pddpm.train) and inference (pddpm.infer) call only what is here.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from pddpm.errors import PddpmConfigError

# adam(params, **overrides) -> torch.optim.Adam with train.lr and the device's fused/foreach choice
AdamFactory = Callable[..., torch.optim.Optimizer]
# run(fn, *inputs) -> fn applied to the inputs in forward passes of at most infer.batch_size items
# (fewer after a CUDA out-of-memory error), concatenated along dim 0, as float32
PassRunner = Callable[..., torch.Tensor]


def window_starts(n_slices: int, length: int) -> list[int]:
    """First slices of the windows of `length` consecutive slices that cover a volume of `n_slices`: every
    `length`, the last one ending at the last slice (validation samples and whole-volume reconstruction)."""
    starts = list(range(0, n_slices - length + 1, length))
    if starts[-1] != n_slices - length:
        starts.append(n_slices - length)
    return starts


class Batch(NamedTuple):
    """A training or validation batch on the training device.

    image: (B, L, H, W) float32 in [-1, 1]; L = `sample_length` consecutive axial slices of one volume
    (1 for slice models, whose networks read it as one channel). mask: (B, L, H, W) bool brain mask.
    """

    image: torch.Tensor
    mask: torch.Tensor


class ModelKind(nn.Module):
    """Base of every model kind. Subclasses set their networks as attributes in `__init__`, after calling
    `super().__init__(settings)`, and implement `loss` (if trained) and `reconstruct`."""

    #: consecutive slices of one volume per training sample (a sequence model sets > 1)
    sample_length: ClassVar[int] = 1
    #: the config key that sets `sample_length` (named when a volume has fewer slices); None: fixed at 1
    sample_length_key: ClassVar[str | None] = None
    #: what one call of `reconstruct` sees: "slice" (any slices, batched across volumes) or "volume"
    infer_unit: ClassVar[str] = "slice"

    def __init__(self, settings: dict):
        super().__init__()
        from pddpm.models import complete_settings

        self.settings = complete_settings(settings)
        self.name = self.settings["kind"]

    # ------------------------------------------------------------------------------------- training
    def loss(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Named loss terms of `batch` (scalar tensors): "loss" is the total that is backpropagated and
        validated; every term is logged (train_log.csv column `train_<name>` / `val_<name>`). Random
        draws only from `generator` (on the training device), so a resumed run draws the same."""
        raise PddpmConfigError(f"model kind {self.name!r} has nothing to train")

    def plan(self, steps_per_epoch: int, total_steps: int) -> None:
        """Told how long this run trains, before its optimisers are made and a checkpoint is resumed; a kind
        that trains in phases places them here (state it keeps for that belongs in its state dict, so that a
        resumed run keeps the phases it started with). Default: nothing."""

    def augment(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Per-batch augmentation of training batches (not validation); default none."""
        return batch

    def configure_optimisers(self, adam: AdamFactory) -> dict[str, torch.optim.Optimizer]:
        """Optimisers by name (their state is checkpointed; the learning-rate schedule applies to each).
        Default: one Adam on all parameters."""
        return {"adam": adam(self.parameters())}

    def training_step(self, batch: Batch, generator: torch.Generator, optimisers: dict[str, torch.optim.Optimizer],
                      step: int, autocast: Callable[[], AbstractContextManager]) -> dict[str, torch.Tensor]:
        """One optimisation step on `batch` (`step`: steps done before it); returns the detached loss terms.

        Default: backward of `loss(...)["loss"]` and a step of every optimiser. A kind with several
        optimisers or phases (e.g. a GAN's critic and generator) overrides this and decides from `step`
        which networks to update; the loop then only schedules, averages (EMA), logs and checkpoints."""
        with autocast():
            terms = self.loss(batch, generator)
        for opt in optimisers.values():
            opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        for opt in optimisers.values():
            opt.step()
        return {k: v.detach() for k, v in terms.items()}

    def load_inputs(self, paths: dict[str, str]) -> None:
        """Read the extra input files the train rule gives this kind (`Kind.extra_inputs`), e.g. a
        pre-trained encoder; called once before training starts (a resumed run then loads its own state)."""
        if paths:
            raise PddpmConfigError(f"model kind {self.name!r} takes no extra inputs, got {sorted(paths)}")

    # ------------------------------------------------------------------------------------ inference
    #: noise maps drawn per (volume, ensemble member) at inference; 0 = the kind uses no noise
    noise_members: int = 0
    #: network inputs per slice at inference (sizes the chunks of slices one `reconstruct` call gets)
    inputs_per_slice: int = 1

    def configure_inference(self, **options) -> ModelKind:
        """Set the inference options (the `infer` keys of `Kind.infer_keys`); missing ones take the
        schema's defaults. Called by pddpm.infer before `reconstruct`."""
        if options:
            raise PddpmConfigError(f"model kind {self.name!r} takes no inference options, got {sorted(options)}")
        return self

    @property
    def noise_config(self) -> dict | None:
        """`diffusion.noise` settings for inference noise (pddpm.noise.make_noise); None without noise."""
        return None

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None,
                    run: PassRunner) -> torch.Tensor:
        """Reconstruction (U, L, H, W) in [-1, 1] of U units of L slices (L = 1 for "slice" kinds, Z for
        "volume" kinds); image in [-1, 1], mask bool, both (U, L, H, W); noise (U, E, L, H, W) drawn per
        (volume, member) from the inference seed, or None. The networks run through `run`."""
        raise NotImplementedError

    def inference_info(self) -> dict:
        """What the inference file's `info` records about this kind's settings."""
        return {"kind": self.name}
