"""Benchmark of inference and evaluation: volumes/s batched vs one patch at a time, seconds per volume of
post-processing and metrics, and the split of time between network, post-processing and metrics.

    .venv/bin/python bench/bench_infer.py                          # demo grid 48x48x25, demo UNet, CPU
    .venv/bin/python bench/bench_infer.py --grid paper --batch-sizes 1,4,25   # 96x96x50, demo UNet
    .venv/bin/python bench/bench_infer.py --grid paper --unet paper --device cuda --precision bf16
    .venv/bin/python bench/bench_infer.py --grid paper --batch-sizes ''       # post-processing + metrics only
    .venv/bin/python bench/bench_infer.py --grid paper --unet paper --kind cddpm --volumes 1 --batch-sizes 75

Random weights and synthetic volumes: the speed of a forward pass does not depend on trained weights.
Prints one line per setting: the numbers, not a verdict.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pddpm.device import resolve_device
from pddpm.evaluate.metrics import volume_metrics
from pddpm.evaluate.postprocess import voxel_settings
from pddpm.infer import postprocess_split, reconstruct, seeded_noise
from pddpm.models import build

GRIDS = {"demo": (25, 48, 48, 24), "paper": (50, 96, 96, 48)}  # Z, H, W, patch size
UNETS = {
    "demo": {"base_width": 32, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_heads": 2,
             "attention_head_channels": 32, "groups": 8},
    "paper": {},  # the schema's defaults are the paper's (37.5 M parameters)
}


def synthetic(n: int, z: int, h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:z, :h, :w]
    brain = (((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.35 * w)) ** 2 < 1) & (zz > 1) & (zz < z - 2)
    images = (brain * (0.4 + 0.1 * rng.random((n, z, h, w)))).astype(np.float16)
    lesion = ((zz - z / 2) ** 2 + (yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (h / 10) ** 2
    segs = np.repeat(lesion[None], n, 0).astype(np.uint8)
    return images, np.repeat(brain[None], n, 0).astype(np.uint8), segs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", choices=GRIDS, default="demo")
    ap.add_argument("--unet", choices=UNETS, default="demo")
    ap.add_argument("--kind", choices=["pddpm", "ddpm", "cddpm"], default="pddpm",
                    help="cddpm: ResNet-50 encoder (schema default) + conditioned UNet, infer.cddpm_timesteps")
    ap.add_argument("--volumes", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,0,256",
                    help="comma-separated; 0 = as many as the slices of a volume (the original's pass size); "
                         "'' = skip the network. Mind memory: attention at 48 x 48 (demo UNet on the paper "
                         "grid) needs ~70 MB per item")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one-patch-volumes", type=int, default=1, help="volumes for the batch-size-1 run (slow)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    z, h, w, patch = GRIDS[args.grid]
    settings = {"kind": args.kind, "unet": UNETS[args.unet], "patch": {"size": patch, "stride": patch},
                "image_size": [h, w]}
    net = build(args.kind, settings).to(dev).eval().configure_inference()
    n_params = sum(p.numel() for p in net.parameters())
    noise = seeded_noise(net.noise_config, h, w, 3141, "bench")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"# device {name}; grid {z}x{h}x{w}; unet {args.unet} ({n_params / 1e6:.1f} M params); {args.kind}, "
          f"{len(net.regions)} regions; precision {args.precision}")

    images, masks, segs = synthetic(args.volumes, z, h, w)
    # warm-up (cuDNN autotuning, allocator) outside the timings
    reconstruct(images[:1, :2], net, noise, batch_size=8, device=dev, precision=args.precision, progress=False)
    recons, t_net = None, 0.0
    for bs in [int(b) for b in args.batch_sizes.split(",") if b.strip()]:  # "" = evaluation only
        batch = bs or z  # 0: all slices of a volume for one patch per pass, as the original looped
        n = min(args.volumes, args.one_patch_volumes) if batch == 1 else args.volumes
        timings = {"network": 0.0, "passes": 0}
        t0 = time.perf_counter()
        out = reconstruct(images[:n], net, noise, batch_size=batch, device=dev, precision=args.precision,
                          progress=False, timings=timings)
        total = time.perf_counter() - t0
        print(f"reconstruct batch={batch:4d}: {n / total:8.3f} volumes/s  ({total / n:7.3f} s/volume, network "
              f"{timings['network'] / n:7.3f} s/volume, {timings['passes'] / n:5.1f} forward passes/volume)")
        if n == args.volumes:
            recons, t_net = out, timings["network"] / n
    if recons is None:
        recons = np.zeros(images.shape, np.float32)

    t0 = time.perf_counter()
    vox = voxel_settings(spacing_mm=2.0 if args.grid == "paper" else 4.0)  # the schema's sizes in mm
    maps = postprocess_split(images, recons, masks, erosion_iterations=vox["erosion_iterations"],
                             median_size=vox["median_size"])
    t_post = (time.perf_counter() - t0) / args.volumes
    t0 = time.perf_counter()
    for i in range(args.volumes):
        volume_metrics(maps[i], segs[i], threshold=float(np.percentile(maps[i], 99)))
    t_metrics = (time.perf_counter() - t0) / args.volumes
    print(f"post-processing (residual, erosion, 5^3 median): {t_post:.3f} s/volume")
    print(f"metrics (components, Dice, AUPRC, AUROC, best Dice): {t_metrics:.3f} s/volume")
    print(f"post-processing + metrics: {t_post + t_metrics:.3f} s/volume")
    total = t_net + t_post + t_metrics
    if t_net:
        print(f"time split at the last batch size: network {100 * t_net / total:.0f}% / post-processing "
              f"{100 * t_post / total:.0f}% / metrics {100 * t_metrics / total:.0f}%")


if __name__ == "__main__":
    main()
