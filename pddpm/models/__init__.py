"""Model kinds: one object per kind owns its networks, its training loss and its reconstruction.

A kind is a `pddpm.models.base.ModelKind` (a `torch.nn.Module`) in its own module under this package;
`train.py` and `infer.py` call only that interface. This module is the registry: which kinds exist,
which config sections each one reads, and how a trained kind is written and read back. It imports no
torch at module level, so the Snakefile can ask it which settings a rule's params carry.

    build("pddpm", settings)            -> ModelKind (settings completed from the schema)
    load_trained(path, device)          -> ModelKind in eval mode, as training left it
    save_trained(model, path, extra)    -> model.pt (fp32 weights + the settings that rebuild the kind)
    train_params(kind, config)          -> the config a kind's training depends on (the train rule's params)
    infer_params(kind, config)          -> the `infer` keys a kind's reconstruction depends on

Adding a kind: one module defining a `ModelKind` subclass, one `Kind` entry below, its config section
(if any) with defaults in `schemas/config.schema.yaml`, and its name in the schema's `models` enum.
See docs/contracts.md, section "Python API".
"""

from __future__ import annotations

import copy
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pddpm.errors import PddpmConfigError, PddpmInputError

MODEL_FORMAT = 2  # model.pt layout: 2 = state_dict of the whole kind (keys prefixed by its network names)


@dataclass(frozen=True)
class Kind:
    """What the workflow needs to know about a model kind without importing torch."""

    name: str
    target: str  # "module:Class" of the ModelKind subclass
    # config sections stored in the kind's settings (model.pt): they rebuild it, and changing them
    # retrains this kind only
    sections: tuple[str, ...] = ()
    # keys of the `infer` section that change this kind's reconstructions (the infer rule's params)
    infer_keys: tuple[str, ...] = ()
    trained: bool = True  # False: no network, no train job (thresh)
    # extra files the train rule hands the kind: input name -> a kind (its model.pt of the same fold) or
    # the name of a pddpm.artefacts path pattern with a {fold} wildcard (e.g. the pretrain rule's encoder)
    extra_inputs: dict[str, str] = field(default_factory=dict)
    # what each loss term the kind's `loss`/`training_step` returns is ("loss": the total), for the
    # training-curve axes; tests/test_models.py checks these are exactly the terms the kind logs
    loss_terms: dict[str, str] = field(default_factory=dict)


_VAE_TERMS = {"loss": "L1 + beta x KL", "l1": "L1 reconstruction error", "kl": "KL to N(0, I), per slice"}


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("pddpm", "pddpm.models.pddpm:PDDPM", sections=("unet", "diffusion", "patch"),
         infer_keys=("test_timestep", "ensemble_timesteps", "stride"),
         loss_terms={"loss": "L1 of the denoised patch (mean over the slice)"}),
    Kind("ddpm", "pddpm.models.ddpm:DDPM", sections=("unet", "diffusion"),
         infer_keys=("test_timestep", "ensemble_timesteps"),
         loss_terms={"loss": "L1 of the denoised slice"}),
    Kind("thresh", "pddpm.models.thresh:Thresh", trained=False),
    Kind("ae", "pddpm.models.autoencoders:AE", sections=("ae",),
         loss_terms={"loss": "L1 reconstruction error"}),
    Kind("vae", "pddpm.models.autoencoders:VAE", sections=("vae",), loss_terms=_VAE_TERMS),
    Kind("svae", "pddpm.models.svae:SVAE", sections=("svae",), loss_terms=_VAE_TERMS),
    Kind("dae", "pddpm.models.dae:DAE", sections=("dae",),
         loss_terms={"loss": "MSE inside the brain mask"}),
    Kind("fanogan", "pddpm.models.fanogan:FAnoGAN", sections=("fanogan",),
         loss_terms={"loss": "GAN phase: WGAN-GP critic loss; encoder phase: izi_f (image + kappa x feature MSE)",
                     "wdist": "Wasserstein estimate D(x) - D(G(z))",
                     "gp": "gradient penalty of the critic",
                     "generator": "generator loss -D(G(z))",
                     "image": "image MSE of G(E(x))",
                     "feature": "critic-feature MSE of G(E(x))"}),
    Kind("cddpm", "pddpm.models.cddpm:CDDPM", sections=("unet", "diffusion", "cddpm"),
         infer_keys=("cddpm_timesteps",), extra_inputs={"encoder": "PRETRAINED_ENCODER"},
         loss_terms={"loss": "L1 of the denoised slice (conditioned on the clean slice)"}),
    Kind("cddpm_nopretrain", "pddpm.models.cddpm:CDDPMNoPretrain", sections=("unet", "diffusion", "cddpm"),
         infer_keys=("cddpm_timesteps",),
         loss_terms={"loss": "L1 of the denoised slice (conditioned on the clean slice)"}),
)}

# `train` keys that change only speed or job size, never the weights: not rule params, and a checkpoint
# stays valid when they change
TRAIN_SPEED_KEYS = ("checkpoint_every_steps", "compile", "channels_last", "gpus", "threads", "mem_mb",
                    "runtime_min")


def kind(name: str) -> Kind:
    """The registry entry of `name`; an unknown name is a config error listing the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise PddpmConfigError(f"unknown model kind {name!r}; known kinds: {', '.join(KINDS)} (config key "
                               f"`models`; a new kind is registered in pddpm/models/__init__.py)") from None


def loss_label(name: str, term: str) -> str:
    """What loss term `term` of kind `name` is (`Kind.loss_terms`); the term's own name where the registry
    does not describe it (e.g. a kind not registered here)."""
    known = KINDS.get(name)
    return known.loss_terms.get(term, term) if known else term


def kind_class(name: str):
    module, cls = kind(name).target.split(":")
    return getattr(importlib.import_module(module), cls)


def build(name: str, settings: dict | None = None, **kwargs):
    """A fresh (untrained) kind `name` from `settings` ({"image_size": [H, W], section: {...}}; missing
    sections and keys take the schema's defaults). `kwargs` go to the kind's constructor."""
    return kind_class(name)({**(settings or {}), "kind": name}, **kwargs)


def complete_settings(settings: dict) -> dict:
    """`settings` with the kind's sections completed from the schema defaults, as plain JSON types (they
    are stored in model.pt and read back with torch.load(weights_only=True))."""
    from pddpm.config import with_defaults

    k = kind(settings.get("kind"))
    out = {"kind": k.name}
    if "image_size" in settings:
        out["image_size"] = [int(v) for v in settings["image_size"]]
    for section in k.sections:
        out[section] = with_defaults(settings.get(section) or {}, section)
    return json.loads(json.dumps(out))


def settings_from_sections(name: str, sections: dict, image_size) -> dict:
    """Settings of kind `name` from the config sections the train rule passed (`train_params`)."""
    return complete_settings({"kind": name, "image_size": list(image_size), **sections})


def train_params(name: str, config: dict) -> dict:
    """Everything a kind's training result depends on in the config, for the train rule's params:
    {"sections": {section: config[section]}, "train": the result-changing `train` keys}."""
    k = kind(name)
    return {"sections": {s: config[s] for s in k.sections},
            "train": {key: v for key, v in config["train"].items() if key not in TRAIN_SPEED_KEYS}}


def infer_params(name: str, config: dict) -> dict:
    """The `infer` keys a kind's reconstructions depend on (empty for thresh), for the infer rule's params;
    `precision` only where there is a network to run."""
    k = kind(name)
    keys = k.infer_keys + (("precision",) if k.trained else ())
    return {key: config["infer"][key] for key in keys}


# ------------------------------------------------------------------------------------------ model.pt
def save_trained(model, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write model.pt atomically: the kind's state dict (floating tensors as fp32, on the CPU) and the
    settings that rebuild it."""
    import torch

    from pddpm.io import atomic_path

    state = {k: (v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": MODEL_FORMAT, "settings": model.settings, "state_dict": state, **(extra or {})}, tmp)


def load_trained(path: str | os.PathLike, device="cpu"):
    """The kind saved in model.pt, in eval mode on `device`; `.settings` are those it was trained with."""
    import torch

    path = Path(path)
    if not path.exists():
        raise PddpmInputError(f"{path}: trained model not found; run the `train` rule for it first")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise PddpmInputError(f"{path}: not a readable model file ({exc}); delete it and rerun training") from exc
    if not isinstance(blob, dict) or "state_dict" not in blob or "settings" not in blob:
        raise PddpmInputError(f"{path}: not a pddpm model file (no state_dict/settings); rerun training")
    if blob.get("format") != MODEL_FORMAT:
        raise PddpmInputError(f"{path}: model file format {blob.get('format')}, this version reads "
                              f"{MODEL_FORMAT}; delete it and rerun training")
    settings = copy.deepcopy(blob["settings"])
    model = build(settings["kind"], settings)
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()
