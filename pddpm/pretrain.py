"""Masked-image-modelling pre-training of the cddpm encoder (rule pretrain; docs/cddpm.md).

The cDDPM authors pre-train their ResNet-50 with SparK (sparse convolutions over the visible patches,
65 % of the patches masked, loss on the masked region, 1200 epochs). This is a dense variant: each
training slice gets a random `mask_patch` x `mask_patch` grid of which `mask_ratio` of the cells are
zero-filled, the ResNet (pddpm.models.cddpm.ResNet, the one the diffusion model conditions on) reads the
whole masked slice with ordinary convolutions, a light decoder (nearest-neighbour upsampling and 3 x 3
convolutions from the stride-32 features) reconstructs the slice, and the loss (L2 or L1) counts the
masked pixels only. The decoder is discarded; the encoder file holds the ResNet's weights.

    pretrain(train_split, val_split, encoder, cfg, seed, device) -> PretrainResult
    save_encoder(result, path) / pddpm.models.cddpm.load_encoder_state(trunk, path)

Everything the result depends on is `cddpm.encoder`, the `cddpm_pretrain` section, the seed and the
training fold's slices (the rule's params and inputs), so changing diffusion settings does not redo it.
A killed job starts again from the beginning (no checkpoint; the job is short next to training).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from pddpm.config import with_defaults
from pddpm.device import configure_backends, resolve_device
from pddpm.errors import PddpmInputError
from pddpm.io import atomic_path
from pddpm.models.cddpm import ENCODER_FORMAT, ResNet
from pddpm.train import VAL_SEED_OFFSET, Sampler, SliceData

log = logging.getLogger(__name__)

LOG_COLUMNS = ["epoch", "step", "train_loss", "val_loss"]
N_VALIDATIONS = 20  # validations spread over the run (each reads every validation slice)


class MaskedAutoencoder(nn.Module):
    """ResNet encoder + light decoder: masked slice (B, 1, H, W) -> reconstruction (B, 1, H, W)."""

    def __init__(self, encoder: str, decoder_width: int):
        super().__init__()
        self.encoder = ResNet(encoder)
        stages, ch_in = [], self.encoder.out_features
        for i in range(5):  # five doublings undo the ResNet's stride 32
            ch = max(16, decoder_width >> i)
            stages += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch_in, ch, 3, padding=1),
                       nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]
            ch_in = ch
        self.decoder = nn.Sequential(*stages, nn.Conv2d(ch_in, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.encoder.feature_map(x))
        # sides that are not multiples of 32 round up in the ResNet: back to the slice's size
        return out if out.shape[-2:] == x.shape[-2:] else F.interpolate(out, size=x.shape[-2:], mode="bilinear")


def random_mask(n: int, height: int, width: int, patch: int, ratio: float,
                generator: torch.Generator) -> torch.Tensor:
    """(n, 1, H, W) bool, True in the masked patches: per slice exactly round(ratio * cells) cells of the
    `patch`-pixel grid, chosen uniformly."""
    if height % patch or width % patch:
        raise PddpmInputError(f"cddpm_pretrain.mask_patch {patch} does not divide the {height} x {width} slices")
    gh, gw = height // patch, width // patch
    k = max(1, round(ratio * gh * gw))
    scores = torch.rand(n, gh * gw, generator=generator, device=generator.device)
    cells = torch.zeros(n, gh * gw, dtype=torch.bool, device=generator.device)
    cells.scatter_(1, scores.argsort(dim=1)[:, :k], True)
    cells = cells.reshape(n, 1, gh, gw)
    return cells.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


def masked_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean L2 (or L1) error over the masked pixels only."""
    err = (pred.float() - target).square() if kind == "l2" else (pred.float() - target).abs()
    return (err * mask).sum() / mask.sum().clamp_min(1)


def masked_step_loss(model: MaskedAutoencoder, x0: torch.Tensor, cfg: dict, generator: torch.Generator) -> torch.Tensor:
    mask = random_mask(x0.shape[0], x0.shape[-2], x0.shape[-1], cfg["mask_patch"], cfg["mask_ratio"],
                       generator).to(x0.device)
    return masked_loss(model(torch.where(mask, torch.zeros_like(x0), x0)), x0, mask, cfg["loss"])


@torch.no_grad()
def validation_loss(model: MaskedAutoencoder, data: SliceData, cfg: dict, seed: int) -> float:
    """Masked loss on every validation slice, with masks fixed by the seed (comparable across epochs)."""
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed + VAL_SEED_OFFSET)
    volumes, first = data.validation_items()
    total, count = 0.0, 0
    for s in range(0, len(volumes), cfg["batch_size"]):
        x0 = data.batch(volumes[s:s + cfg["batch_size"]], first[s:s + cfg["batch_size"]]).image
        total += masked_step_loss(model, x0, cfg, gen).item() * len(x0)
        count += len(x0)
    model.train(was)
    return total / max(count, 1)


@dataclass
class PretrainResult:
    encoder: str
    state_dict: dict  # the ResNet's (pddpm.models.cddpm.ResNet) weights and BatchNorm statistics
    log: list[dict]
    info: dict


def pretrain(train_split, val_split, encoder: str, cfg: dict | None = None, *, seed: int,
             device: str = "auto") -> PretrainResult:
    """Pre-train ResNet `encoder` on the training split's slices (arrays (N, Z, H, W) in [0, 1], or
    mappings with `image` and `mask`); `cfg`: the `cddpm_pretrain` section (missing keys: defaults)."""
    cfg = with_defaults(cfg or {}, "cddpm_pretrain")
    dev = resolve_device(device)
    configure_backends(dev)
    torch.manual_seed(seed)
    data = SliceData.from_split(train_split, "training split", device=dev)
    val_data = SliceData.from_split(val_split, "validation split", device=dev)
    h, w = data.image.shape[-2:]
    if h % cfg["mask_patch"] or w % cfg["mask_patch"]:
        raise PddpmInputError(f"cddpm_pretrain.mask_patch {cfg['mask_patch']} does not divide the {h} x {w} "
                              "training slices; choose a divisor of both sides")
    model = MaskedAutoencoder(encoder, cfg["decoder_width"]).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    sampler = Sampler(seed, data.n_volumes, data.n_slices, 1, cfg["slices_per_volume"], cfg["batch_size"])
    gen = torch.Generator(dev).manual_seed(seed)
    every = max(1, cfg["epochs"] // N_VALIDATIONS)
    rows, step, t0 = [], 0, time.perf_counter()
    log.info("pre-training %s: %d volumes, %d epochs of %d steps, mask %.2f of %d px patches, device %s",
             encoder, data.n_volumes, cfg["epochs"], sampler.steps_per_epoch, cfg["mask_ratio"],
             cfg["mask_patch"], dev)
    model.train()
    for epoch in range(1, cfg["epochs"] + 1):
        losses = []
        for _ in range(sampler.steps_per_epoch):
            x0 = data.batch(*sampler.items(step)).image
            loss = masked_step_loss(model, x0, cfg, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            step += 1
        train_loss = torch.stack(losses).mean().item()
        if not np.isfinite(train_loss):
            raise PddpmInputError(f"pre-training loss became {train_loss} in epoch {epoch}; lower cddpm_pretrain.lr")
        row = {"epoch": epoch, "step": step, "train_loss": train_loss, "val_loss": float("nan")}
        if epoch % every == 0 or epoch == cfg["epochs"]:
            row["val_loss"] = validation_loss(model, val_data, cfg, seed)
            log.info("epoch %d: masked train loss %.5f, val %.5f (%.0f s)", epoch, train_loss, row["val_loss"],
                     time.perf_counter() - t0)
        rows.append(row)
    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in model.encoder.state_dict().items()}
    info = {"encoder": encoder, "steps": step, "epochs": cfg["epochs"], "seconds": time.perf_counter() - t0,
            "device": str(dev), "settings": cfg, "seed": seed}
    return PretrainResult(encoder, state, rows, info)


def save_encoder(result: PretrainResult, path, log_path=None) -> None:
    """The encoder file the cddpm kind loads (pddpm.models.cddpm.load_encoder_state), and the loss log."""
    with atomic_path(path) as tmp:
        torch.save({"format": ENCODER_FORMAT, "encoder": result.encoder, "state_dict": result.state_dict,
                    "info": result.info}, tmp)
    if log_path is not None:
        with atomic_path(log_path) as tmp:
            pd.DataFrame(result.log, columns=LOG_COLUMNS).to_csv(tmp, index=False)
