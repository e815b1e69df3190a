"""Training speed: images/s of pddpm.train.train for the demo network and every registered model kind.

Sections (all by default):
  demo    the demo's network and batch before issue 11 (two levels, batch 10) and now (config.yaml: three
          levels, batch 32), one thread, through train(): what a demo training step costs per image
  loop    the demo network (config.yaml's unet, 48 x 48 pDDPM): a bare loop of the kind's loss + Adam beside
          pddpm.train.train, per batch size and thread count (the loop's own overhead)
  levers  the same network through train() with each speed setting off and on, interleaved: channels-last,
          bf16 autocast, torch.compile (its compile time reported separately, from the warm-up window)
  kinds   parameters, forward GFLOP and train() images/s of every kind in pddpm.models.KINDS (or --kinds)
          at the paper's size (configs/paper.yaml: 96 x 96) and the demo's (config.yaml: 48 x 48)

    .venv/bin/python bench/bench_train.py                            # everything, CPU, 1 and 2 threads
    .venv/bin/python bench/bench_train.py --sections levers --batches 32 --threads 2
    .venv/bin/python bench/bench_train.py --sections kinds --paper-batch 32 --steps 20   # on a GPU
    .venv/bin/python bench/bench_train.py --sections kinds --kinds ddpm,cddpm_nopretrain --steps 2

Random slices: speed does not depend on the data. Every line ends with the 1-minute load average (the
figures of a shared machine move with it); on CUDA also the achieved TFLOP/s of the kinds section.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pddpm.config import with_defaults  # noqa: E402
from pddpm.device import configure_backends, resolve_device  # noqa: E402
from pddpm.models import KINDS, build, train_params  # noqa: E402
from pddpm.train import SliceData, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, SXM


def load() -> str:
    return f"[load {os.getloadavg()[0]:.1f}]"


def config_of(path: Path) -> tuple[dict, int]:
    cfg = with_defaults(yaml.safe_load(path.read_text()))
    size = round(cfg["slices"]["fov_mm"][0] / cfg["slices"]["target_spacing_mm"])
    return cfg, size


def settings_of(kind: str, cfg: dict, size: int) -> dict:
    return {"kind": kind, "image_size": [size, size], **train_params(kind, cfg)["sections"]}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def random_split(n: int, z: int, size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    image = rng.random((n, z, size, size), dtype=np.float32).astype(np.float16)
    return {"image": image, "mask": np.ones(image.shape, np.uint8)}


def bare_loop(settings: dict, batch: int, steps: int, dev: torch.device) -> float:
    """Images/s of the kind's loss + backward + one Adam step, nothing else (2 warm-up steps)."""
    torch.manual_seed(0)
    model = build(settings["kind"], settings).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = SliceData.from_split(random_split(batch, 4, settings["image_size"][0]), device=dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    rng = np.random.default_rng(0)
    for i in range(steps + 2):
        if i == 2:
            sync(dev)
            t0 = time.perf_counter()
        b = data.batch(rng.permutation(batch), rng.integers(0, 4, batch), model.sample_length)
        loss = model.loss(b, gen)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(dev)
    return steps * batch / (time.perf_counter() - t0)


def train_speed(settings: dict, batch: int, steps: int, device: str, **cfg) -> tuple[float, float]:
    """(images/s of `steps` timed steps, seconds of the `steps` warm-up steps before them) of
    pddpm.train.train itself; the warm-up window holds torch.compile's compilation."""
    # one step per epoch; volumes long enough for a sequence kind's sample (its images/s count every slice)
    length = build(settings["kind"], settings).sample_length
    split = random_split(batch, max(4, length), settings["image_size"][0])
    val = random_split(1, length, settings["image_size"][0], seed=1)
    run = {"batch_size": batch, "epochs": 2 * steps, "val_every_steps": steps, "checkpoint_every_steps": 10 ** 9,
           **cfg}
    res = train(split, val, settings, run, seed=0, device=device, progress=False)
    warm, timed = (r["images_per_s"] for r in res.log if r["images_per_s"])
    return timed, steps * batch / warm


def forward_gflop(settings: dict) -> float:
    """GFLOP of one sample's training loss forward (all the kind's networks)."""
    model = build(settings["kind"], settings)
    h, w = settings["image_size"]
    data = SliceData.from_split(random_split(1, max(4, model.sample_length), h))
    batch = data.batch(np.array([0]), np.array([0]), model.sample_length)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.loss(batch, torch.Generator().manual_seed(0))
    return fc.get_total_flops() / 1e9


def with_threads(threads: int):
    torch.set_num_threads(threads)
    return f"{threads} thread{'s' if threads > 1 else ''}"


def section_loop(demo: dict, args, dev: torch.device) -> None:
    print("\n## loop: demo network, bare loss + Adam loop vs pddpm.train.train (fp32, defaults)")
    for threads in args.threads:
        label = with_threads(threads)
        for batch in args.batches:
            bare = bare_loop(demo, batch, args.steps, dev)
            full, _ = train_speed(demo, batch, args.steps, args.device)
            print(f"  {label}, batch {batch:3d}: bare loop {bare:7.2f} images/s, train() {full:7.2f} images/s "
                  f"({100 * full / bare:.0f} %) {load()}", flush=True)


def section_levers(demo: dict, args, dev: torch.device) -> None:
    print("\n## levers: demo network through train(), each setting off then on (same process, interleaved)")
    levers = [("channels_last", {"channels_last": False}, {"channels_last": True}),
              ("bf16", {"precision": "fp32"}, {"precision": "bf16"})]
    for threads in args.threads:
        label = with_threads(threads)
        for batch in args.batches:
            for name, off, on in levers:
                a, _ = train_speed(demo, batch, args.steps, args.device, **off)
                b, _ = train_speed(demo, batch, args.steps, args.device, **on)
                print(f"  {label}, batch {batch:3d}, {name:13s}: off {a:7.2f}, on {b:7.2f} images/s "
                      f"(x{b / a:.2f}) {load()}", flush=True)
            if batch in args.compile_batches:
                a, warm_a = train_speed(demo, batch, args.steps, args.device, compile=False)
                b, warm_b = train_speed(demo, batch, args.steps, args.device, compile=True)
                print(f"  {label}, batch {batch:3d}, {'compile':13s}: off {a:7.2f}, on {b:7.2f} images/s "
                      f"(x{b / a:.2f}); compile time ~{warm_b - warm_a:.0f} s (warm-up {warm_b:.0f} s vs "
                      f"{warm_a:.0f} s; less once the inductor cache holds the kernels) {load()}", flush=True)


# config.yaml's unet and train.batch_size before the demo was made to train for real (issue 11)
DEMO_BEFORE = {"unet": {"base_width": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_heads": 2,
                        "attention_head_channels": 16, "groups": 8}, "batch": 10}


def section_demo(demo: dict, cfg: dict, args) -> None:
    print("\n## demo: the demo network and batch before and now, 1 thread, pddpm.train.train (fp32)")
    with_threads(1)
    before = {**demo, "unet": {**demo["unet"], **DEMO_BEFORE["unet"]}}
    for label, settings, batch in (("before", before, DEMO_BEFORE["batch"]), ("now", demo, cfg["train"]["batch_size"])):
        n_par = sum(p.numel() for p in build("pddpm", settings).parameters())
        speed, _ = train_speed(settings, batch, args.steps, args.device)
        print(f"  {label:6s}: channel_mult {settings['unet']['channel_mult']}, {n_par:,} parameters, batch {batch}: "
              f"{speed:7.2f} images/s {load()}", flush=True)


def section_kinds(args, dev: torch.device, name: str) -> None:
    print("\n## kinds: every registered model kind through train() (fp32 unless --precision)")
    with_threads(args.threads[-1])
    runs = [("paper", *config_of(REPO / "configs" / "paper.yaml"), args.paper_batch),
            ("demo", *config_of(REPO / "config.yaml"), args.demo_batch)]
    for label, cfg, size, batch in runs:
        for kind, entry in KINDS.items():
            if args.kinds and kind not in args.kinds:
                continue
            settings = settings_of(kind, cfg, size)
            if not entry.trained:
                print(f"  {label} {size}^2, {kind:7s}: no network, nothing to train")
                continue
            if entry.extra_inputs:  # e.g. cddpm: its inputs only set initial weights (the *_nopretrain twin's speed)
                print(f"  {label} {size}^2, {kind:7s}: reads {', '.join(entry.extra_inputs)} first; same networks "
                      f"and speed as {kind}_nopretrain")
                continue
            n_par = sum(p.numel() for p in build(kind, settings).parameters())
            gflop = forward_gflop(settings)
            speed, _ = train_speed(settings, batch, args.steps, args.device, precision=args.precision)
            line = (f"  {label} {size}^2, {kind:7s}: {n_par:>11,} parameters, {gflop:6.2f} GFLOP/sample forward, "
                    f"batch {batch}: {speed:8.3f} images/s")
            if dev.type == "cuda":
                achieved = 3 * gflop * speed / 1e3  # backward ~ 2x forward
                peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
                line += f", {achieved:.1f} TFLOP/s" + (f" ({100 * achieved / peak:.0f} % of bf16 peak)" if peak else "")
            print(f"{line} {load()}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sections", default="demo,loop,levers,kinds")
    ap.add_argument("--batches", default="16,32,64", help="batch sizes of the loop and levers sections")
    ap.add_argument("--threads", default="1,2", help="torch CPU threads (the kinds section uses the last)")
    ap.add_argument("--compile-batches", default="32", help="batch sizes at which compile is measured ('' none)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps, after as many warm-up steps")
    ap.add_argument("--paper-batch", type=int, default=2)
    ap.add_argument("--demo-batch", type=int, default=32)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="of the kinds section")
    ap.add_argument("--kinds", default="", help="comma-separated kinds of the kinds section ('' every kind)")
    args = ap.parse_args()
    ints = lambda s: [int(v) for v in s.split(",") if v.strip()]  # noqa: E731
    args.batches, args.threads, args.compile_batches = ints(args.batches), ints(args.threads), ints(args.compile_batches)
    args.kinds = [k for k in args.kinds.split(",") if k.strip()]
    dev = resolve_device(args.device)
    configure_backends(dev)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    cfg, size = config_of(REPO / "config.yaml")
    demo = settings_of("pddpm", cfg, size)
    print(f"# device {name}; torch {torch.__version__}; {args.steps} timed steps after {args.steps} warm-up; "
          f"demo network {sum(p.numel() for p in build('pddpm', demo).parameters()):,} parameters at {size}^2")
    sections = args.sections.split(",")
    if "demo" in sections:
        section_demo(demo, cfg, args)
    if "loop" in sections:
        section_loop(demo, args, dev)
    if "levers" in sections:
        section_levers(demo, args, dev)
    if "kinds" in sections:
        section_kinds(args, dev, name)


if __name__ == "__main__":
    main()
