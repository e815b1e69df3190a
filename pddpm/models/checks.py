"""Do a model kind's settings fit the slices? Checked when the workflow starts, before any job.

Torch-free: `pddpm.config_checks.check_config` calls `problems(config)` for every name in `models`, so a
bottleneck that does not divide the slice or a patch grid that does not tile it stops the dry run with
the key and the allowed values, instead of failing inside a training job hours later. A kind's network
may call its own entry of `KIND_CHECKS` with its settings (which hold its config sections) to raise the
same message when it is built outside the workflow.

A kind registers `KIND_CHECKS[name] = fn` with `fn(config, image_size) -> list[str]`: `config` holds at
least the kind's own sections (the whole run config at DAG time), `image_size` is the model grid's
(height, width) (`model_grid`). Each line names the key, what is wrong and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from math import gcd

ProblemsFn = Callable[[Mapping, Sequence[int]], list[str]]


def model_grid(config: Mapping) -> tuple[int, int, int]:
    """(height, width, slices) of the model grid: `round(fov_mm / target_spacing_mm)` per axis, as the
    slicing stage resamples (pddpm.slices); the first two are a slice's size."""
    spacing = config["slices"]["target_spacing_mm"]
    h, w, z = (max(1, round(f / spacing)) for f in config["slices"]["fov_mm"])
    return h, w, z


def _grid_text(image_size: Sequence[int]) -> str:
    return (f"the {image_size[0]} x {image_size[1]} slices of the model grid (slices.fov_mm / "
            f"slices.target_spacing_mm)")


def max_halvings(image_size: Sequence[int]) -> int:
    """How often both sides of the slice can be halved exactly."""
    n, (h, w) = 0, image_size
    while h % 2 == 0 and w % 2 == 0 and h > 1 and w > 1:
        h, w, n = h // 2, w // 2, n + 1
    return n


def halving_problem(key: str, levels: int, image_size: Sequence[int], what: str, allowed: str) -> list[str]:
    """The message of `levels` stride-2 steps that do not divide the slice; [] if they do.
    `allowed(n)`: the allowed values of `key` when at most n halvings fit, as a phrase."""
    if image_size[0] % 2 ** levels == 0 and image_size[1] % 2 ** levels == 0:
        return []
    fit = max_halvings(image_size)
    return [f"{key}: {levels} {what} need slice sides divisible by {2 ** levels}, but {_grid_text(image_size)} "
            f"allow at most {fit}; allowed: {allowed.format(n=fit, n1=fit + 1)}, or a grid whose sides divide "
            f"by {2 ** levels}"]


def tile_problems(key: str, size: int, stride: int, image_size: Sequence[int]) -> list[str]:
    """`size` x `size` patches `stride` apart must tile the slice exactly (pddpm.patches.patch_corners)."""
    h, w = image_size
    if size > min(h, w):
        return [f"{key}: patch size {size} is larger than {_grid_text(image_size)}; allowed: 1..{min(h, w)}"]
    if (h - size) % stride == 0 and (w - size) % stride == 0:
        return []
    strides = [s for s in range(1, size + 1) if (h - size) % s == 0 and (w - size) % s == 0]
    return [f"{key}: {size} x {size} patches with stride {stride} do not tile {_grid_text(image_size)} "
            f"((side - size) must divide by the stride); allowed strides for size {size}: "
            f"{', '.join(map(str, strides))}"]


# ------------------------------------------------------------------------------------ the kinds' checks
def unet_problems(config: Mapping, image_size: Sequence[int]) -> list[str]:
    levels = len(config["unet"]["channel_mult"]) - 1
    return halving_problem("unet.channel_mult", levels, image_size, "downsamplings (entries - 1)",
                           "at most {n1} entries")


def pddpm_problems(config: Mapping, image_size: Sequence[int]) -> list[str]:
    patch = config["patch"]
    out = unet_problems(config, image_size) + tile_problems("patch.size/patch.stride", patch["size"],
                                                            patch["stride"], image_size)
    stride = (config.get("infer") or {}).get("stride")
    if stride is not None and not out:
        out += tile_problems("infer.stride", patch["size"], stride, image_size)
    return out


def conv_autoencoder_problems(section: str) -> ProblemsFn:
    """Checks of the convolutional autoencoders (pddpm.models.autoencoders): every level halves the
    slice, and the decoder mirrors it back, so the sides must divide by 2^levels."""

    def check(config: Mapping, image_size: Sequence[int]) -> list[str]:
        levels = len(config[section]["widths"])
        return halving_problem(f"{section}.widths", levels, image_size, "stride-2 levels (one per entry)",
                               "at most {n} entries")

    return check


def svae_problems(config: Mapping, image_size: Sequence[int]) -> list[str]:
    s = config["svae"]
    out = conv_autoencoder_problems("svae")(config, image_size)
    if s["latent_dim"] % s["heads"]:
        divisors = [d for d in range(1, s["latent_dim"] + 1) if s["latent_dim"] % d == 0 and d <= 16]
        out.append(f"svae.heads: {s['heads']} attention heads do not divide svae.latent_dim {s['latent_dim']}; "
                   f"allowed: {', '.join(map(str, divisors))}")
    if "slices" in config:  # the run config (not a model's settings): the training windows must fit a volume
        z = model_grid(config)[2]
        if s["sequence_length"] > z:
            out.append(f"svae.sequence_length: windows of {s['sequence_length']} slices are longer than the "
                       f"{z} axial slices of a volume on the model grid (slices.fov_mm[2] / "
                       f"slices.target_spacing_mm); allowed: 2..{z}")
    return out


def _size(image_size: Sequence[int]) -> str:
    return (f"the {image_size[0]} x {image_size[1]} slices (slices.fov_mm / slices.target_spacing_mm) halve "
            f"evenly {max_halvings(image_size)} times")


def dae_problems(config: dict, image_size: Sequence[int]) -> list[str]:
    s = config["dae"]
    out = []
    most = max_halvings(image_size) + 1
    if s["depth"] > most:
        out.append(f"dae.depth: {s['depth']} levels halve the slices {s['depth'] - 1} times, but {_size(image_size)}; "
                   f"allowed: 1 to {most}")
    side = gcd(*image_size)
    if side % s["noise_cell_px"]:
        fits = [d for d in range(1, side + 1) if side % d == 0]
        out.append(f"dae.noise_cell_px: {s['noise_cell_px']} does not divide the {image_size[0]} x {image_size[1]} "
                   f"slices into whole noise cells; allowed: {', '.join(map(str, fits))}")
    return out


def fanogan_problems(config: dict, image_size: Sequence[int]) -> list[str]:
    s = config["fanogan"]
    out = []
    n = len(s["widths"])
    most = max_halvings(image_size)
    if n > most:
        out.append(f"fanogan.widths: {n} widths are {n} stride-2 stages, but {_size(image_size)}; allowed: "
                   f"1 to {most} widths")
    if "train" in config and config["train"]["epochs"] < 2:
        out.append(f"train.epochs: {config['train']['epochs']}, but fanogan trains in two phases of whole epochs "
                   "(fanogan.gan_share of them the GAN, the rest the encoder); allowed: 2 or more")
    return out


def cddpm_problems(config: Mapping, image_size: Sequence[int]) -> list[str]:
    """The UNet's downsamplings, and (run config, kind cddpm) the pre-training's mask patches tiling the slice."""
    out = unet_problems(config, image_size)
    if "cddpm_pretrain" in config and "cddpm" in config.get("models", ()):
        size = config["cddpm_pretrain"]["mask_patch"]
        if image_size[0] % size or image_size[1] % size:
            side = gcd(*image_size)
            fits = [d for d in range(1, side + 1) if side % d == 0]
            out.append(f"cddpm_pretrain.mask_patch: {size} px patches do not tile {_grid_text(image_size)}; "
                       f"allowed: {', '.join(map(str, fits))}")
    return out


KIND_CHECKS: dict[str, ProblemsFn] = {
    "pddpm": pddpm_problems,
    "ddpm": unet_problems,
    "ae": conv_autoencoder_problems("ae"),
    "vae": conv_autoencoder_problems("vae"),
    "svae": svae_problems,
    "dae": dae_problems,
    "fanogan": fanogan_problems,
    "cddpm": cddpm_problems,
    "cddpm_nopretrain": cddpm_problems,
}


def kind_problems(name: str, config: Mapping, image_size: Sequence[int]) -> list[str]:
    """The problems of kind `name` (none for a kind without a check, e.g. thresh)."""
    fn = KIND_CHECKS.get(name)
    return fn(config, image_size) if fn else []


def problems(config: Mapping) -> list[str]:
    """Every model kind's problems in a validated run config (defaults filled in), in `models` order."""
    size = model_grid(config)[:2]
    return [line for name in config["models"] for line in kind_problems(name, config, size)]


def raise_problems(name: str, settings: Mapping, image_size: Sequence[int]) -> None:
    """For a kind's constructor: its problems as one PddpmConfigError, the same lines and error type as the
    dry run's (`pddpm.config_checks.check_config`)."""
    from pddpm.errors import PddpmConfigError

    lines = kind_problems(name, settings, image_size)
    if lines:
        raise PddpmConfigError(f"model kind {name!r} does not fit its slices:\n  - " + "\n  - ".join(lines))


def model_image_size(config: Mapping) -> tuple[int, int]:
    """(height, width) of the model grid's axial slices (model_grid without the slice count)."""
    return model_grid(config)[:2]
