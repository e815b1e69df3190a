"""Training speed of the dae and fanogan kinds per phase, through pddpm.train.train, at the paper's and the
demo's slice size, for the schema's defaults and any overrides given (e.g. a demo-sized setting).

f-AnoGAN's two phases cost differently per image (a critic step with its gradient penalty and a generator step
every n_critic steps, against an encoder step through the frozen generator and critic), so bench_train's one
figure per kind mixes them; here each phase gets its own timed window: 20 epochs of one step, half of them the
GAN, validation every 5 steps, and images/s of steps 6-10 (GAN, one generator step in them at n_critic 5) and
16-20 (encoder). The DAE has one phase (steps 6-10).

    .venv/bin/python bench/bench_baselines.py                                   # schema defaults
    .venv/bin/python bench/bench_baselines.py --size 48 --batch 10 \\
        --set dae.base_width=16 --set fanogan.widths=[16,32,64,128]              # a demo candidate
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pddpm.models import build  # noqa: E402
from pddpm.train import train  # noqa: E402


def load() -> str:
    return f"[load {os.getloadavg()[0]:.1f}]"


def split(n: int, size: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    image = rng.random((n, 4, size, size), dtype=np.float32).astype(np.float16)
    return {"image": image, "mask": np.ones(image.shape, np.uint8)}


def windows(kind: str, settings: dict, batch: int, device: str) -> list[float]:
    """images/s of the timed windows (steps 6-10 and, for fanogan, 16-20)."""
    size = settings["image_size"][0]
    if kind == "fanogan":
        settings = {**settings, "fanogan": {**settings.get("fanogan", {}), "gan_share": 0.5}}
    epochs = 20 if kind == "fanogan" else 10
    res = train(split(batch, size, 0), split(1, size, 1), settings,
                {"batch_size": batch, "epochs": epochs, "val_every_steps": 5, "checkpoint_every_steps": 10 ** 9},
                seed=0, device=device, progress=False)
    speeds = [r["images_per_s"] for r in res.log if r["images_per_s"]]
    return speeds[1::2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, action="append", help="slice side (default: 96 and 48)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kinds", default="dae,fanogan")
    ap.add_argument("--set", action="append", default=[], help="section.key=YAML value, e.g. dae.depth=3")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sections: dict = {}
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = yaml.safe_load(value)
    print(f"# torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, settings {sections or 'schema defaults'}")
    for size in args.size or [96, 48]:
        for kind in args.kinds.split(","):
            settings = {"kind": kind, "image_size": [size, size], **sections}
            n_par = sum(p.numel() for p in build(kind, settings).parameters())
            speeds = windows(kind, settings, args.batch, args.device)
            phases = (f"GAN phase {speeds[0]:8.2f}, encoder phase {speeds[1]:8.2f} images/s" if kind == "fanogan"
                      else f"{speeds[0]:8.2f} images/s")
            print(f"  {size}^2 {kind:7s}: {n_par:>11,} parameters, {phases} {load()}", flush=True)


if __name__ == "__main__":
    main()
