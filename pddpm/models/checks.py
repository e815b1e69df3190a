"""Model settings that must fit the slice size, checked before any job (torch-free).

One function per kind, `problems(config, image_size) -> list[str]`, registered in `CHECKS`: each message
names the key and the values that fit. `pddpm.config_checks.check_config` calls them for every name in
`models` on the completed config (image size from `model_image_size`), so a bad setting stops before the
DAG runs; each kind's constructor calls its own function on its settings (which hold the same sections),
so the library stops with the same message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import gcd


def model_image_size(config: dict) -> tuple[int, int]:
    """(H, W) of the model grid's axial slices: round(fov_mm / target_spacing_mm) for the first two axes
    (as pddpm.slices resamples them)."""
    s = config["slices"]
    return tuple(round(s["fov_mm"][i] / s["target_spacing_mm"]) for i in (0, 1))


def even_halvings(image_size: Sequence[int]) -> int:
    """How many times both sides halve without remainder."""
    h, w = image_size
    n = 0
    while h % 2 ** (n + 1) == 0 and w % 2 ** (n + 1) == 0:
        n += 1
    return n


def _size(image_size: Sequence[int]) -> str:
    return (f"the {image_size[0]} x {image_size[1]} slices (slices.fov_mm / slices.target_spacing_mm) halve "
            f"evenly {even_halvings(image_size)} times")


def dae_problems(config: dict, image_size: Sequence[int]) -> list[str]:
    s = config["dae"]
    out = []
    most = even_halvings(image_size) + 1
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
    most = even_halvings(image_size)
    if n > most:
        out.append(f"fanogan.widths: {n} widths are {n} stride-2 stages, but {_size(image_size)}; allowed: "
                   f"1 to {most} widths")
    if "train" in config and config["train"]["epochs"] < 2:
        out.append(f"train.epochs: {config['train']['epochs']}, but fanogan trains in two phases of whole epochs "
                   "(fanogan.gan_share of them the GAN, the rest the encoder); allowed: 2 or more")
    return out


CHECKS: dict[str, Callable[[dict, Sequence[int]], list[str]]] = {
    "dae": dae_problems,
    "fanogan": fanogan_problems,
}


def problems(config: dict, image_size: Sequence[int] | None = None) -> list[str]:
    """The problems of every kind in `config["models"]` (a completed config)."""
    size = image_size or model_image_size(config)
    return [p for name in config["models"] if name in CHECKS for p in CHECKS[name](config, size)]
