"""Training speed: images/s and the time split of a step (data, noise, forward, backward, optimiser) for the
demo and the paper network, plus the overhead of pddpm.train.train over a plain PyTorch loop of the same
network. On CUDA also the achieved TFLOP/s against the bf16 dense peak.

    .venv/bin/python bench/bench_train.py                 # CPU: demo batch 16, paper batch 4
    .venv/bin/python bench/bench_train.py --paper-batch 32 --steps 50   # on a GPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pddpm.device import autocast, configure_backends, resolve_device  # noqa: E402
from pddpm.model import build_network  # noqa: E402
from pddpm.train import Objective, to_model_range, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, SXM


def settings_for(unet: dict, patch: dict, size: int, kind: str = "pddpm") -> dict:
    return {"kind": kind, "unet": unet, "diffusion": {}, "patch": patch, "image_size": [size, size]}


def forward_flops(settings: dict) -> float:
    with torch.device("meta"):
        net = build_network(settings)
        x, t = torch.zeros(1, 1, *settings["image_size"]), torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as fc:
        net(x, t)
    return fc.get_total_flops()


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_split(settings: dict, batch: int, steps: int, dev: torch.device, precision: str, n_vol: int = 64):
    """Seconds per step of each part, measured with a synchronisation between parts."""
    h, w = settings["image_size"]
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.random((n_vol, 8, h, w), dtype=np.float32).astype(np.float16)).to(dev)
    torch.manual_seed(0)
    net = build_network(settings).to(dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, **({"fused": True} if dev.type == "cuda" else {}))
    obj = Objective(settings, dev)
    gen = torch.Generator(device=dev).manual_seed(0)  # as pddpm.train: draws on the device
    parts = dict.fromkeys(("data", "noise", "forward", "backward", "optimiser"), 0.0)
    for i in range(steps + 2):  # 2 warm-up steps
        t0 = time.perf_counter()
        sel = torch.from_numpy(rng.integers(0, n_vol, batch)).to(dev)
        zs = torch.from_numpy(rng.integers(0, 8, batch)).to(dev)
        x0 = to_model_range(data[sel, zs])
        sync(dev)
        t1 = time.perf_counter()
        noise = obj.noise(batch, gen)
        sync(dev)
        t2 = time.perf_counter()
        x_t, t, mask = obj.inputs(x0, gen, noise=noise)
        with autocast(dev, precision):
            pred = net(x_t, t)
        loss = obj.loss(pred, x0, mask)
        sync(dev)
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync(dev)
        t4 = time.perf_counter()
        opt.step()
        sync(dev)
        t5 = time.perf_counter()
        if i >= 2:
            for k, d in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                parts[k] += d / steps
    return parts


def train_speed(settings: dict, batch: int, steps: int, device: str, precision: str) -> float:
    """Images/s of pddpm.train.train itself (no validation inside the window)."""
    h, w = settings["image_size"]
    rng = np.random.default_rng(0)
    n_vol = batch * (steps + 2)  # one epoch: 2 warm-up steps, then the timed ones
    imgs = rng.random((n_vol, 4, h, w), dtype=np.float32).astype(np.float16)
    cfg = {"batch_size": batch, "epochs": 1, "val_every_steps": 2, "checkpoint_every_steps": 10**9,
           "precision": precision}
    t0 = time.perf_counter()
    res = train(imgs, imgs[:1, :1], settings, cfg, seed=0, device=device, progress=False)
    elapsed = time.perf_counter() - t0
    # each log row's images/s covers the steps since the previous row (validation excluded): skip warm-up
    rows = [r for r in res.log if r["images_per_s"]]  # validation rows carry the speed since the previous one
    per_image = sum((r["step"] - p["step"]) * batch / r["images_per_s"] for p, r in zip(rows, rows[1:], strict=False))
    return steps * batch / per_image, n_vol / elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--demo-batch", type=int, default=16)
    ap.add_argument("--paper-batch", type=int, default=4)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--only", choices=["demo", "paper"], default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    configure_backends(dev)
    precision = args.precision if dev.type == "cuda" else "fp32"
    demo_cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    demo_size = round(demo_cfg["slices"]["fov_mm"][0] / demo_cfg["slices"]["target_spacing_mm"])
    nets = {"demo": (settings_for(demo_cfg["unet"], demo_cfg["patch"], demo_size), args.demo_batch),
            "paper": (settings_for({}, {"size": 48, "stride": 48}, 96), args.paper_batch)}
    name = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; precision {precision}; {args.steps} timed steps after 2 warm-up")
    for key, (settings, batch) in nets.items():
        if args.only and key != args.only:
            continue
        flops = forward_flops(settings)
        n_par = sum(p.numel() for p in build_network(settings).parameters())
        parts = time_split(settings, batch, args.steps, dev, precision)
        step = sum(parts.values())
        split = ", ".join(f"{k} {1000 * v:.1f} ms ({100 * v / step:.0f} %)" for k, v in parts.items())
        print(f"\n[{key}] {n_par:,} parameters, {flops / 1e9:.2f} GFLOP per {settings['image_size'][0]}^2 forward, "
              f"batch {batch}")
        print(f"  plain loop: {batch / step:.3g} images/s; step {1000 * step:.1f} ms = {split}")
        window, overall = train_speed(settings, batch, args.steps, args.device, precision)
        print(f"  pddpm.train.train: {window:.3g} images/s (after warm-up), {overall:.3g} images/s incl. start-up")
        if dev.type == "cuda":
            achieved = 3 * flops * batch / step / 1e12  # backward ~ 2x forward
            peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
            share = f", {100 * achieved / peak:.0f} % of the {peak:.0f} TFLOP/s bf16 peak" if peak else ""
            print(f"  achieved {achieved:.1f} TFLOP/s{share}")


if __name__ == "__main__":
    main()
