"""Networks of the trained models and how a trained model file is rebuilt.

settings = {"kind": "pddpm" | "ddpm", "unet": config["unet"], "diffusion": config["diffusion"],
            "patch": config["patch"], "image_size": [H, W]}
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pddpm.diffusion import Diffusion
from pddpm.errors import PddpmInputError
from pddpm.model.unet import UNet

UNET_DEFAULTS = {"base_width": 128, "channel_mult": [1, 2, 2], "num_res_blocks": 3, "attention_heads": 4,
                 "attention_head_channels": 64, "groups": 32, "dropout": 0.0}
KINDS = ("pddpm", "ddpm")
MODEL_FORMAT = 1


def unet_config(settings: dict) -> dict:
    return {**UNET_DEFAULTS, **(settings.get("unet") or {})}


def check_image_size(settings: dict) -> None:
    """The slice must pass the UNet's downsamplings (and, for pDDPM, be tiled by the patch grid)."""
    h, w = settings["image_size"]
    factor = 2 ** (len(unet_config(settings)["channel_mult"]) - 1)
    if h % factor or w % factor:
        raise PddpmInputError(
            f"slices of {h} x {w} pixels cannot pass the UNet's {len(unet_config(settings)['channel_mult']) - 1} "
            f"downsamplings (sides must be divisible by {factor}); change slices.target_spacing_mm / fov_mm "
            f"or unet.channel_mult")
    if settings["kind"] == "pddpm":
        from pddpm.patches import patch_corners

        patch = settings.get("patch") or {}
        patch_corners(h, w, patch.get("size", 48), patch.get("stride", 48))


def build_network(settings: dict) -> torch.nn.Module:
    """The UNet for `settings`: pDDPM with scale-shift conditioning, the DDPM baseline without."""
    kind = settings.get("kind")
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")
    u = unet_config(settings)
    return UNet(in_channels=1, out_channels=1, base_width=u["base_width"], channel_mult=tuple(u["channel_mult"]),
                num_res_blocks=u["num_res_blocks"], attention_heads=u["attention_heads"],
                attention_head_channels=u["attention_head_channels"], groups=u["groups"],
                dropout=u["dropout"], scale_shift=(kind == "pddpm"))


def save_trained(network: torch.nn.Module, settings: dict, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write model.pt atomically: fp32 state dict (on CPU) + the settings that rebuild the network."""
    from pddpm.io import atomic_path

    state = {k: v.detach().to("cpu", torch.float32) for k, v in _plain(network).state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": MODEL_FORMAT, "settings": settings, "state_dict": state, **(extra or {})}, tmp)


def load_trained(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(network in eval mode on `device`, Diffusion, settings) from a model.pt written by training."""
    path = Path(path)
    if not path.exists():
        raise PddpmInputError(f"{path}: trained model not found; run the `train` rule for it first")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise PddpmInputError(f"{path}: not a readable model file ({exc}); delete it and rerun training") from exc
    if not isinstance(blob, dict) or "state_dict" not in blob or "settings" not in blob:
        raise PddpmInputError(f"{path}: not a pddpm model file (no state_dict/settings); rerun training")
    settings = blob["settings"]
    net = build_network(settings)
    net.load_state_dict(blob["state_dict"])
    net.to(device).eval()
    return net, Diffusion.from_config(settings.get("diffusion")), settings


def _plain(network: torch.nn.Module) -> torch.nn.Module:
    """The module under torch.compile's wrapper, so saved keys have no `_orig_mod.` prefix."""
    return getattr(network, "_orig_mod", network)
