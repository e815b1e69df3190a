"""Effect of bf16 autocast on the training loss curve, against fp32 (the original's precision).

Trains the same network from the same seed twice with pddpm.train.train, fp32 and bf16 (autocast,
which it applies on the CPU too), plus fp32 from a second seed as the yardstick: a precision effect is small when
bf16 lies closer to fp32 than another seed does. The same seed draws the same batches, timesteps, patches
and noise in both precisions (the random numbers never depend on the network), so the two curves differ
only by arithmetic. Data: 48 x 48 axial slices of the ICBM152 template in T2 contrast (the demo's anatomy,
no download), each volume shifted and scaled differently. Networks: the demo's (config.yaml) and the
paper's width (schema defaults: 128 channels, [1, 2, 2], 3 blocks, 37.5 M parameters) at 48 x 48.

    .venv/bin/python bench/bench_precision.py                     # both, CPU: ~1.5 h on one busy core
    .venv/bin/python bench/bench_precision.py --only demo --steps 300
    .venv/bin/python bench/bench_precision.py --device cuda --paper-batch 32 --steps 500   # on a GPU
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pddpm.config import defaults  # noqa: E402
from pddpm.device import configure_backends, resolve_device  # noqa: E402
from pddpm.models import build  # noqa: E402
from pddpm.train import SliceData, train, validation_loss  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = 48


def brain_slices(n_volumes: int, n_slices: int = 12, seed: int = 0) -> np.ndarray:
    """(n_volumes, n_slices, 48, 48) float16 in [0, 1]: template T2 slices at 4 mm, per volume shifted,
    scaled and noised differently (as tests/test_train.py's training data)."""
    from pddpm.demo.anatomy import load_template, t2_contrast

    tpl = load_template()
    t2 = ndi.zoom(t2_contrast(tpl["csf"], tpl["gm"], tpl["wm"]), 0.25, order=1)
    t2 = np.moveaxis(t2, 2, 0)
    z0 = t2.shape[0] // 2 - n_slices // 2
    rng = np.random.default_rng(seed)
    vols = []
    for _ in range(n_volumes):
        v = np.pad(t2[z0:z0 + n_slices], ((0, 0), (8, 8), (8, 8)))
        v = np.roll(v, rng.integers(-3, 4, 2), axis=(1, 2))
        cy, cx = (v.shape[1] - SIZE) // 2, (v.shape[2] - SIZE) // 2
        v = v[:, cy:cy + SIZE, cx:cx + SIZE]
        v = v * rng.uniform(0.85, 1.15) + rng.normal(0, 0.01, v.shape)
        vols.append(np.clip(v / np.percentile(v, 99), 0, 1))
    return np.stack(vols).astype(np.float16)


def run(settings: dict, train_imgs: np.ndarray, val_imgs: np.ndarray, *, batch: int, lr: float, steps: int,
        seed: int, precision: str, dev: torch.device, val_every: int) -> dict:
    """One pddpm.train.train run in this precision (bf16 autocast applies on the CPU too), `steps` rounded
    up to whole epochs; the validation loss of the untrained network at step 0."""
    torch.manual_seed(seed)  # the initial weights train() starts from (same seed)
    untrained = build(settings["kind"], settings).to(dev)
    vals = {0: validation_loss(untrained, SliceData.from_split(val_imgs, device=dev), seed, 32, precision)["loss"]}
    epochs = math.ceil(steps / (len(train_imgs) // batch))
    cfg = {"batch_size": batch, "lr": lr, "epochs": epochs, "val_every_steps": val_every,
           "checkpoint_every_steps": 10 ** 9, "precision": precision}
    t0 = time.perf_counter()
    res = train(train_imgs, val_imgs, settings, cfg, seed=seed, device=str(dev), progress=False)
    elapsed = time.perf_counter() - t0
    vals.update({r["step"]: r["val_loss"] for r in res.log if r["val_loss"] is not None})
    losses = np.array([r["train_loss"] for r in res.log])
    return {"train": losses, "val": vals, "s_per_step": elapsed / len(losses)}


def report(name: str, runs: dict, steps: int) -> None:
    a, b, c = runs["fp32 seed 0"], runs["bf16 seed 0"], runs["fp32 seed 1"]
    windows = np.array_split(np.arange(steps), 5)
    print(f"\n[{name}] mean training loss per fifth of the run, validation loss (fixed noise) at its steps")
    head = " ".join(f"{w[0] + 1:>5d}-{w[-1] + 1:<5d}" for w in windows)
    print(f"  {'run':14s} {head}   s/step")
    for key, r in runs.items():
        cells = " ".join(f"{r['train'][w].mean():11.5f}" for w in windows)
        print(f"  {key:14s} {cells}   {r['s_per_step']:.2f}")
    print(f"  {'val step':14s} " + " ".join(f"{s:>9d}" for s in a["val"]))
    for key, r in runs.items():
        print(f"  {key:14s} " + " ".join(f"{v:9.5f}" for v in r["val"].values()))
    same = np.abs(b["train"] - a["train"])  # paired: the same t, patch and noise at every step
    rel = same / np.maximum(a["train"], 1e-12)
    last = sorted(a["val"])[-1]
    print(f"  bf16 vs fp32, same seed: per-step training loss differs by {100 * np.median(rel):.2f} % (median), "
          f"{100 * np.percentile(rel, 95):.2f} % (95th percentile); last-fifth mean "
          f"{100 * (b['train'][windows[-1]].mean() / a['train'][windows[-1]].mean() - 1):+.2f} %")
    print(f"  final validation loss: bf16 {100 * (b['val'][last] / a['val'][last] - 1):+.2f} % vs fp32; "
          f"another seed (fp32) {100 * (c['val'][last] / a['val'][last] - 1):+.2f} %")
    print(f"  speed: bf16 {a['s_per_step'] / b['s_per_step']:.2f}x fp32 on this device")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=["demo", "paper"], default=None)
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default: demo 300, paper 150)")
    ap.add_argument("--demo-batch", type=int, default=16)
    ap.add_argument("--paper-batch", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    configure_backends(dev)  # TF32 on CUDA, as the paper run's fp32
    demo = yaml.safe_load((REPO / "config.yaml").read_text())
    patch = {"size": SIZE // 2, "stride": SIZE // 2}  # the 2 x 2 grid of both the demo and the paper
    nets = {
        "demo": ({"kind": "pddpm", "unet": demo["unet"], "diffusion": {}, "patch": patch,
                  "image_size": [SIZE, SIZE]}, args.demo_batch, demo["train"]["lr"], args.steps or 300),
        "paper": ({"kind": "pddpm", "unet": defaults("unet"), "diffusion": {}, "patch": patch,
                   "image_size": [SIZE, SIZE]}, args.paper_batch, defaults("train", "lr"), args.steps or 150),
    }
    imgs = brain_slices(36)
    train_imgs, val_imgs = imgs[:32], imgs[32:]
    print(f"device {dev}, {torch.get_num_threads()} thread(s); {len(train_imgs)} training and "
          f"{len(val_imgs)} validation volumes of {imgs.shape[1]} slices, {SIZE} x {SIZE}")
    for name, (settings, batch, lr, steps) in nets.items():
        if args.only and name != args.only:
            continue
        n_par = sum(p.numel() for p in build(settings["kind"], settings).parameters())
        print(f"\n{name}: {n_par / 1e6:.2f} M parameters, batch {batch}, lr {lr:g}, {steps} steps")
        val_every = max(1, math.ceil(steps / 5))
        runs = {}
        for key, seed, precision in (("fp32 seed 0", 0, "fp32"), ("bf16 seed 0", 0, "bf16"),
                                     ("fp32 seed 1", 1, "fp32")):
            runs[key] = run(settings, train_imgs, val_imgs, batch=batch, lr=lr, steps=steps, seed=seed,
                            precision=precision, dev=dev, val_every=val_every)
            print(f"  {key}: done, {runs[key]['s_per_step']:.2f} s/step", flush=True)
        report(name, runs, steps)


if __name__ == "__main__":
    main()
