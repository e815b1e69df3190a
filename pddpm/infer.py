"""Inference of a whole slices split: reconstructions and anomaly maps (docs/spec.md, sections 6-7).

What a reconstruction is belongs to the model kind (`ModelKind.reconstruct`, e.g. the patch mechanism in
pddpm.models.patched); this module feeds it: chunks of whole slices (or whole volumes for kinds that
reconstruct volumes) on the device, each with its noise maps, and forward passes of at most
`batch_size` network inputs (halved after a CUDA out-of-memory error: the inputs are independent, so
only speed changes). The noise depends only on (seed, stream, volume, ensemble member), never on how
the work is batched, so batched and one-patch-at-a-time inference give the same reconstruction.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

from pddpm.artefacts import load_inference, save_inference  # noqa: F401 (re-export)
from pddpm.device import autocast, resolve_device
from pddpm.errors import PddpmInputError
from pddpm.evaluate.postprocess import anomaly_map, check_same_grid

log = logging.getLogger("pddpm.infer")

NoiseFn = Callable[[int, int, int], torch.Tensor]  # (volume, member, n_slices) -> (n_slices, 1, H, W)


def noise_seed(base_seed: int, stream: str, volume: int, member: int) -> int:
    """Seed of the noise of one volume and ensemble member; `stream` names the split (e.g. brats_test)."""
    entropy = [int(base_seed) & 0xFFFFFFFF, zlib.crc32(stream.encode()), int(volume), int(member)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def seeded_noise(noise_cfg: dict | None, height: int, width: int, base_seed: int, stream: str) -> NoiseFn:
    """Noise of a volume as training drew it (pddpm.noise.make_noise), from a CPU generator seeded per volume.

    With simplex noise and `per_sample: false` one map serves all slices of the volume, as the original."""
    from pddpm.noise import make_noise

    def fn(volume: int, member: int, n_slices: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(noise_seed(base_seed, stream, volume, member))
        return make_noise((n_slices, 1, height, width), noise_cfg, generator=gen, device="cpu")

    return fn


class Passes:
    """The `run` a kind's `reconstruct` gets: fn(*inputs) in passes of at most `fit` items along dim 0,
    concatenated as float32. On CUDA out of memory `fit` is halved for the rest of the split. Counts the
    passes and the seconds spent in them."""

    def __init__(self, batch_size: int, device: torch.device, precision: str):
        self.batch_size, self.fit, self.device, self.precision = batch_size, batch_size, device, precision
        self.passes, self.seconds = 0, 0.0

    def __call__(self, fn, *inputs: torch.Tensor) -> torch.Tensor:
        n = len(inputs[0])
        out, b0 = [], 0
        t0 = time.perf_counter()
        while b0 < n:
            try:
                with autocast(self.device, self.precision):
                    out.append(fn(*(x[b0:b0 + self.fit] for x in inputs)).float())
            except torch.cuda.OutOfMemoryError:
                if self.fit == 1:
                    raise
                self.fit = max(1, self.fit // 2)
                torch.cuda.empty_cache()
                log.warning("GPU out of memory: %d network inputs per pass from now on (infer.batch_size %d)",
                            self.fit, self.batch_size)
                continue
            b0 += self.fit
            self.passes += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - t0
        return torch.cat(out)


@torch.no_grad()
def reconstruct(images: np.ndarray, model, noise_fn: NoiseFn | None = None, *, masks: np.ndarray | None = None,
                batch_size: int | None = None, device: str | torch.device = "cpu", precision: str = "fp32",
                progress: bool = True, timings: dict | None = None) -> np.ndarray:
    """Reconstructions (N, Z, H, W) float32 in the [0, 1] scale of `images` (not clamped) by `model` (a
    ModelKind on `device`, its inference options set).

    images: (N, Z, H, W) in [0, 1]; masks: brain masks of the same shape (None: all brain);
    noise_fn(volume, member, Z) -> (Z, 1, H, W) for the kind's `noise_members` members;
    batch_size: network inputs per forward pass (None: the schema's infer.batch_size).
    `timings["network"]` and `timings["passes"]` accumulate the seconds in and the number of forward passes."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise PddpmInputError(f"images must be (N, Z, H, W), got shape {images.shape}")
    if batch_size is None:
        from pddpm.config import defaults

        batch_size = defaults("infer", "batch_size")
    n_vol, n_z, h, w = images.shape
    device = torch.device(device)
    n_e = model.noise_members
    if n_e and noise_fn is None:
        raise PddpmInputError(f"model kind {model.name!r} draws {n_e} noise maps per volume: give noise_fn")
    # the units one reconstruct call sees: single slices, or whole volumes for kinds that model the volume
    length = n_z if model.infer_unit == "volume" else 1
    n_units = n_vol * n_z // length
    chunk = max(1, batch_size // max(1, length * model.inputs_per_slice))  # whole units per chunk
    if masks is not None:
        check_same_grid(images=images, masks=masks)
    flat = images.reshape(n_units, length, h, w)
    flat_masks = np.asarray(masks).reshape(n_units, length, h, w) if masks is not None else None
    out = np.empty((n_units, length, h, w), np.float32)
    noise_cache: dict[int, torch.Tensor] = {}  # volume -> (E, Z, H, W), drawn once
    passes = Passes(batch_size, device, precision)
    bar = tqdm(range(0, n_units, chunk), desc="reconstruct", unit="chunk", disable=not progress, mininterval=5)
    for u0 in bar:
        u1 = min(u0 + chunk, n_units)
        first = np.arange(u0, u1) * length  # flat index of each unit's first slice
        vols, zs = first // n_z, first % n_z
        x0 = torch.from_numpy(np.asarray(flat[u0:u1], dtype=np.float32)).to(device) * 2 - 1
        mask = (torch.from_numpy(np.asarray(flat_masks[u0:u1]) > 0).to(device) if flat_masks is not None
                else torch.ones(x0.shape, dtype=torch.bool, device=device))
        noise = None
        if n_e:
            for v in set(vols.tolist()) - set(noise_cache):
                noise_cache[v] = torch.stack([noise_fn(v, e, n_z)[:, 0] for e in range(n_e)]).to(device, torch.float32)
            for v in [v for v in noise_cache if v < vols[0]]:
                del noise_cache[v]
            noise = torch.stack([noise_cache[v][:, z:z + length] for v, z in zip(vols.tolist(), zs.tolist(),
                                                                                  strict=True)])
        recon = model.reconstruct(x0, mask, noise, passes)
        out[u0:u1] = ((recon.float() + 1) / 2).cpu().numpy()
    if timings is not None:
        timings["network"] = timings.get("network", 0.0) + passes.seconds
        timings["passes"] = timings.get("passes", 0) + passes.passes
    return out.reshape(n_vol, n_z, h, w)


def postprocess_split(images: np.ndarray, recons: np.ndarray, masks: np.ndarray, *,
                      erosion_iterations: int | None, median_size: int | None,
                      device: str | torch.device = "cpu") -> np.ndarray:
    """Anomaly maps (N, Z, H, W) float16 of a split: residual x eroded brain mask, 3D median per volume
    (sizes in voxels; None: pddpm.evaluate.postprocess.voxel_settings' defaults).

    On CUDA the maps are computed on the GPU right after inference (anomaly_maps_torch, bit-equal to the
    numpy path); on the CPU volume by volume into a float16 array (the stored precision), bounding memory."""
    from pddpm.evaluate.postprocess import anomaly_maps_torch, voxel_settings

    check_same_grid(images=images, reconstructions=recons, masks=masks)
    vox = voxel_settings()
    erosion_iterations = vox["erosion_iterations"] if erosion_iterations is None else erosion_iterations
    median_size = vox["median_size"] if median_size is None else median_size
    device = torch.device(device)
    if device.type == "cuda":
        return anomaly_maps_torch(images, torch.from_numpy(np.ascontiguousarray(recons)).to(device), masks,
                                  erosion_iterations=erosion_iterations, median_size=median_size, device=device)
    maps = np.empty(np.shape(images), np.float16)
    for i in range(len(maps)):
        maps[i] = anomaly_map(images[i], recons[i], masks[i], erosion_iterations=erosion_iterations,
                              median_size=median_size, dtype=np.float16)
    return maps


def infer_arrays(images: np.ndarray, masks: np.ndarray, *, model: str,
                 model_path: str | os.PathLike | None = None, seed: int | None = None, stream: str = "",
                 batch_size: int | None = None, device: str = "auto", precision: str | None = None,
                 erosion_iterations: int | None = None, median_size: int | None = None, progress: bool = True,
                 **options) -> tuple[np.ndarray, np.ndarray, dict]:
    """(reconstructions float32, anomaly maps float16, run info) of a split's images and brain masks.

    model: a kind of pddpm.models.KINDS; a trained kind is read from `model_path`. options: the kind's
    inference options (`Kind.infer_keys`, e.g. test_timestep, ensemble_timesteps, stride). Arguments left
    None take the schema's defaults (`seed`, `infer.*`; the post-processing sizes those of
    pddpm.evaluate.postprocess.voxel_settings on the default grid)."""
    from pddpm.config import defaults
    from pddpm.models import build, kind, load_trained

    seed = defaults("seed") if seed is None else seed
    batch_size = defaults("infer", "batch_size") if batch_size is None else batch_size
    precision = defaults("infer", "precision") if precision is None else precision
    images = np.asarray(images)
    check_same_grid(images=images, masks=masks)
    h, w = images.shape[-2:]
    info: dict = {"model": model, "n_volumes": int(len(images)), "shape": list(images.shape),
                  "seed": int(seed), "stream": stream}
    timings = {"network": 0.0, "passes": 0}
    t0 = time.perf_counter()
    if kind(model).trained:
        if model_path is None:
            raise PddpmInputError(f"model {model!r} needs a trained model file")
        dev = resolve_device(device)
        net = load_trained(model_path, dev)
        if net.name != model:
            raise PddpmInputError(f"{model_path} holds a {net.name!r} model, not {model!r}; rerun its training")
        if list(net.settings.get("image_size", [h, w])) != [h, w]:
            raise PddpmInputError(f"{model_path} was trained on {net.settings['image_size']} slices but the "
                                  f"split holds {h} x {w}; retrain on the same slices settings")
    else:
        dev = torch.device("cpu")  # nothing to compute
        net = build(model, {"image_size": [h, w]})
    net.configure_inference(**options)
    noise_fn = seeded_noise(net.noise_config, h, w, seed, stream) if net.noise_members else None
    kind_info = net.inference_info()
    if kind(model).trained:
        kind_info.update(device=str(dev), batch_size=int(batch_size), precision=precision)
        log.info("%s on %s: %d volumes x %d slices, %s, batch %d", model, dev, len(images), images.shape[1],
                 json.dumps(net.inference_info()), batch_size)
    recons = reconstruct(images, net, noise_fn, masks=masks, batch_size=batch_size, device=dev, precision=precision,
                         progress=progress, timings=timings)
    info.update(kind_info)
    t1 = time.perf_counter()
    maps = postprocess_split(images, recons, masks, erosion_iterations=erosion_iterations,
                             median_size=median_size, device=dev)
    t2 = time.perf_counter()
    info.update(erosion_iterations=erosion_iterations, median_size=median_size,
                forward_passes=int(timings["passes"]),
                seconds={"reconstruct": round(t1 - t0, 3), "network": round(timings["network"], 3),
                         "postprocess": round(t2 - t1, 3)})
    return recons, maps, info


def infer_split(slices_path: str | os.PathLike, out_path: str | os.PathLike, **kwargs) -> dict:
    """Read a slices split (pddpm.artefacts.load_split), run `infer_arrays(**kwargs)`, write `out_path`."""
    from pddpm.artefacts import load_split

    split = load_split(slices_path, mmap=True)  # large splits: read slice chunks from disk
    recons, maps, info = infer_arrays(split["image"], split["mask"], **kwargs)
    info["slices"] = str(slices_path)
    save_inference(out_path, recons, maps, split["subjects"], info)
    log.info("wrote %s: %s", out_path, json.dumps(info["seconds"]))
    return info
