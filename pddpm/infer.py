"""Patched inference (SPEC section 6): reconstructions and anomaly maps of a whole slices split.

pDDPM: for every patch of the grid, only that patch of the slice is noised to t = test_timestep - 1 and
the network's x0 prediction is kept inside the patch; the patches tile (or, with a smaller stride,
overlap and are averaged into) the reconstruction. DDPM: the whole slice is noised, one forward pass.
Options: a noise ensemble over several t whose reconstructions are averaged.

All (slice, ensemble member, patch) items are independent, so many slices' items go through the network
together, `batch_size` items per forward pass. The noise depends only on (seed, volume, member), never
on how items are batched, so batched and one-patch-at-a-time inference give the same reconstruction.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import numpy as np
import torch
from tqdm import tqdm

from pddpm.artefacts import load_inference, save_inference  # noqa: F401 (re-export)
from pddpm.errors import PddpmInputError
from pddpm.evaluate.postprocess import anomaly_map, check_same_grid

log = logging.getLogger("pddpm.infer")

NoiseFn = Callable[[int, int, int], torch.Tensor]  # (volume, member, n_slices) -> (n_slices, 1, H, W)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when present, else CPU; `cuda` without a GPU falls back to CPU with a warning."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        log.warning("device: cuda requested but no CUDA device is visible; running on CPU")
    return torch.device("cpu")


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


def regions_for(kind: str, height: int, width: int, size: int | None = None,
                stride: int | None = None) -> torch.Tensor:
    """(P, H, W) boolean regions that are noised and kept one at a time: the patch grid, or the slice."""
    if kind == "ddpm":
        return torch.ones(1, height, width, dtype=torch.bool)
    if kind != "pddpm":
        raise PddpmInputError(f"model kind {kind!r} has no network inference; expected pddpm or ddpm")
    from pddpm.patches import patch_masks

    return patch_masks(height, width, int(size), int(stride))


@torch.no_grad()
def reconstruct(images: np.ndarray, net: torch.nn.Module, diffusion, regions: torch.Tensor,
                timesteps: Sequence[int], noise_fn: NoiseFn, *, batch_size: int = 256,
                device: str | torch.device = "cpu", autocast_dtype: torch.dtype | None = None,
                progress: bool = True, timings: dict | None = None) -> np.ndarray:
    """Reconstructions (N, Z, H, W) float32 in the [0, 1] scale of `images` (not clamped).

    images: (N, Z, H, W) in [0, 1]; regions: (P, H, W) bool covering every pixel; timesteps: the t of
    each ensemble member (already `test_timestep - 1`); noise_fn(volume, member, Z) -> (Z, 1, H, W).
    `timings["network"]` and `timings["passes"]` accumulate the seconds in and the number of forward passes."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise PddpmInputError(f"images must be (N, Z, H, W), got shape {images.shape}")
    n_vol, n_z, h, w = images.shape
    device = torch.device(device)
    regions = regions.to(torch.bool)
    if tuple(regions.shape[1:]) != (h, w):
        raise PddpmInputError(f"patch regions {tuple(regions.shape[1:])} do not match slices {h} x {w}")
    coverage = regions.sum(0)
    if (coverage == 0).any():
        raise PddpmInputError("the patch grid leaves pixels of the slice uncovered; check patch.size/stride")
    n_p, n_e = len(regions), len(timesteps)
    per_slice = n_p * n_e
    regions_d = regions.to(device)
    weight = (coverage * n_e).to(device=device, dtype=torch.float32)  # predictions averaged per pixel
    t_of_member = torch.as_tensor(list(timesteps), dtype=torch.long, device=device)
    # whole slices per chunk, so each slice's reconstruction is finished inside one chunk
    chunk = max(1, batch_size // per_slice)
    flat = images.reshape(n_vol * n_z, h, w)
    out = np.empty((n_vol * n_z, h, w), np.float32)
    noise_cache: dict[int, torch.Tensor] = {}
    timings = timings if timings is not None else {}
    timings.setdefault("network", 0.0)
    timings.setdefault("passes", 0)
    amp = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext())

    fit = batch_size  # inputs per forward pass; halved if the GPU runs out of memory
    bar = tqdm(range(0, n_vol * n_z, chunk), desc="reconstruct", unit="chunk", disable=not progress,
               mininterval=5)
    for s0 in bar:
        s1 = min(s0 + chunk, n_vol * n_z)
        idx = np.arange(s0, s1)
        vols, zs = idx // n_z, idx % n_z
        for v in set(vols.tolist()) - set(noise_cache):  # (E, Z, 1, H, W) per volume, drawn once
            noise_cache[v] = torch.stack([noise_fn(v, e, n_z) for e in range(n_e)]).to(device, torch.float32)
        for v in [v for v in noise_cache if v < vols[0]]:
            del noise_cache[v]
        x0 = torch.from_numpy(np.asarray(flat[s0:s1], dtype=np.float32)).to(device) * 2 - 1  # (S, H, W)
        noise = torch.stack([noise_cache[v][:, z, 0] for v, z in zip(vols.tolist(), zs.tolist(), strict=True)])
        # items in (slice, member, patch) order
        s = s1 - s0
        x0_i = x0[:, None, None].expand(s, n_e, n_p, h, w)
        noise_i = noise[:, :, None].expand(s, n_e, n_p, h, w)
        t_i = t_of_member[None, :, None].expand(s, n_e, n_p).reshape(-1)
        x0_i = x0_i.reshape(-1, 1, h, w)
        xt = diffusion.q_sample(x0_i, t_i, noise_i.reshape(-1, 1, h, w))
        mask_i = regions_d[None, None].expand(s, n_e, n_p, h, w).reshape(-1, 1, h, w)
        xt = torch.where(mask_i, xt, x0_i)  # only the region is noised; the rest stays clean context
        preds = []
        t_start = time.perf_counter()
        b0 = 0
        while b0 < len(xt):
            try:
                with amp:
                    preds.append(net(xt[b0:b0 + fit], t_i[b0:b0 + fit]).float())
            except torch.cuda.OutOfMemoryError:
                # items are independent: a smaller pass gives the same result, only slower
                if fit == 1:
                    raise
                fit = max(1, fit // 2)
                torch.cuda.empty_cache()
                log.warning("GPU out of memory: %d network inputs per pass from now on (infer.batch_size %d)",
                            fit, batch_size)
                continue
            b0 += fit
            timings["passes"] += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings["network"] += time.perf_counter() - t_start
        pred = torch.cat(preds).reshape(s, n_e, n_p, h, w)
        recon = (pred * regions_d[None, None]).sum(dim=(1, 2)) / weight
        out[s0:s1] = ((recon + 1) / 2).cpu().numpy()
    return out.reshape(n_vol, n_z, h, w)


def postprocess_split(images: np.ndarray, recons: np.ndarray, masks: np.ndarray, *, erosion_iterations: int = 3,
                      median_size: int = 5) -> np.ndarray:
    """Anomaly maps (N, Z, H, W) float16 of a split: residual x eroded brain mask, 3D median per volume.

    Filled volume by volume into a float16 array (the stored precision) to bound memory on large splits."""
    check_same_grid(images=images, reconstructions=recons, masks=masks)
    maps = np.empty(np.shape(images), np.float16)
    for i in range(len(maps)):
        maps[i] = anomaly_map(images[i], recons[i], masks[i], erosion_iterations=erosion_iterations,
                              median_size=median_size)
    return maps


def member_timesteps(test_timestep: int = 500, ensemble_timesteps: Sequence[int] | None = None,
                     total: int | None = None) -> list[int]:
    """Noise levels t of the ensemble members: `test_timestep - 1` (the original) or one per ensemble entry."""
    ts = [int(v) - 1 for v in (ensemble_timesteps or [test_timestep])]
    if total is not None and any(t >= total or t < 0 for t in ts):
        raise PddpmInputError(f"infer.test_timestep/ensemble_timesteps {ts} must lie in 1..{total} "
                              "(the model's diffusion.timesteps)")
    return ts


def infer_arrays(images: np.ndarray, masks: np.ndarray, *, model: str,
                 model_path: str | os.PathLike | None = None, test_timestep: int = 500,
                 ensemble_timesteps: Sequence[int] | None = None, stride: int | None = None,
                 erosion_iterations: int = 3, median_size: int = 5, seed: int = 3141, stream: str = "",
                 batch_size: int = 256, device: str = "auto", precision: str = "fp32",
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """(reconstructions float32, anomaly maps float16, run info) of a split's images and brain masks.

    `model` "thresh" is the intensity baseline: reconstruction 0, so the anomaly map is the intensity."""
    images = np.asarray(images)
    info: dict = {"model": model, "n_volumes": int(len(images)), "shape": list(images.shape),
                  "seed": int(seed), "stream": stream}
    timings = {"network": 0.0}
    t0 = time.perf_counter()
    if model == "thresh":
        recons = np.zeros(images.shape, np.float32)
    else:
        if model_path is None:
            raise PddpmInputError(f"model {model!r} needs a trained model file")
        from pddpm.model import load_trained

        dev = resolve_device(device)
        net, diffusion, settings = load_trained(model_path, dev)
        h, w = images.shape[-2:]
        if list(settings.get("image_size", [h, w])) != [h, w]:
            raise PddpmInputError(f"{model_path} was trained on {settings['image_size']} slices but the "
                                  f"split holds {h} x {w}; retrain on the same slices settings")
        patch = settings.get("patch") or {}
        size, stride = patch.get("size", 48), stride or patch.get("stride", 48)
        regions = regions_for(settings["kind"], h, w, size, stride)
        ts = member_timesteps(test_timestep, ensemble_timesteps, diffusion.timesteps)
        noise_fn = seeded_noise((settings.get("diffusion") or {}).get("noise"), h, w, seed, stream)
        autocast = torch.bfloat16 if (precision == "bf16" and dev.type == "cuda") else None
        log.info("%s on %s: %d volumes x %d slices, %d regions x %d noise levels %s, batch %d",
                 settings["kind"], dev, len(images), images.shape[1], len(regions), len(ts), ts, batch_size)
        recons = reconstruct(images, net, diffusion, regions, ts, noise_fn, batch_size=batch_size, device=dev,
                             autocast_dtype=autocast, progress=progress, timings=timings)
        info.update(kind=settings["kind"], device=str(dev), timesteps=ts, patch_size=int(size),
                    stride=int(stride), n_regions=int(len(regions)), batch_size=int(batch_size),
                    precision="bf16" if autocast else "fp32")
    t1 = time.perf_counter()
    maps = postprocess_split(images, recons, masks, erosion_iterations=erosion_iterations,
                             median_size=median_size)
    t2 = time.perf_counter()
    info.update(erosion_iterations=erosion_iterations, median_size=median_size,
                forward_passes=int(timings.get("passes", 0)),
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
