"""Benchmark of the slices stage: subjects per second for slicing, and the load time of a split file in
the chosen encoding (uncompressed .npz, read or memory-mapped) against a compressed .npz.

    .venv/bin/python bench/bench_slices.py [--subjects 6] [--split-subjects 100] [--threads 1]

Synthetic volumes the size of a cropped preprocessed brain (about 140 x 172 x 140 mm), at the demo's
2 mm and the paper's 1 mm spacing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pddpm.io import save_nifti
from pddpm.slices import build_split, load_split, save_split

BRAIN_MM = (140, 172, 140)


def _subject(folder: Path, name: str, spacing: float, rng: np.random.Generator) -> dict:
    shape = tuple(int(round(m / spacing)) for m in BRAIN_MM)
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    mask = (zz**2 + yy**2 + xx**2 < 0.9).astype(np.uint8)
    img = (mask * (100 + 20 * rng.standard_normal(shape))).astype(np.float32)
    aff = np.diag([-spacing, -spacing, spacing, 1.0])
    paths = {"t2": save_nifti(img, aff, folder / f"{name}_t2.nii.gz"),
             "mask": save_nifti(mask, aff, folder / f"{name}_mask.nii.gz"),
             "seg": save_nifti(np.zeros(shape, np.uint8), aff, folder / f"{name}_seg.nii.gz")}
    return {"img_name": name, "label": 0, "img_path": paths["t2"], "mask_path": paths["mask"],
            "seg_path": paths["seg"]}


def bench_slicing(folder: Path, n: int, spacing: float, target: float) -> None:
    rng = np.random.default_rng(0)
    rows = [_subject(folder, f"s{spacing:g}_{i}", spacing, rng) for i in range(n)]
    build_split(rows[:1], target_spacing_mm=target)  # warm-up (imports, ITK factories)
    t = time.perf_counter()
    arrays = build_split(rows, target_spacing_mm=target)
    dt = time.perf_counter() - t
    print(f"slicing {spacing:g} mm -> {target:g} mm, grid {arrays['image'].shape[1:]}: {n / dt:.2f} subjects/s "
          f"({dt / n * 1000:.0f} ms/subject)")


def bench_load(folder: Path, n: int, grid: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    shape = (n, *grid)
    ball = np.zeros(grid, bool)
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, g) for g in grid), indexing="ij")
    ball[zz**2 + yy**2 + xx**2 < 0.8] = True
    image = np.where(ball, rng.random(shape, dtype=np.float32), 0).astype(np.float16)
    arrays = {"image": image, "mask": np.broadcast_to(ball, shape).astype(np.uint8),
              "seg": np.zeros(shape, np.uint8), "subjects": np.array([f"s{i}" for i in range(n)]),
              "label": np.zeros(n, np.int64), "spacing_mm": np.float64(2.0),
              "fov_mm": np.array([192.0, 192, 100]), "orientation": np.array("LPS")}
    plain = save_split(arrays, folder / "plain.npz")
    packed = folder / "packed.npz"
    np.savez_compressed(packed, **arrays)
    print(f"split file of {n} subjects {grid}: uncompressed {plain.stat().st_size / 2**20:.0f} MiB, "
          f"compressed {packed.stat().st_size / 2**20:.0f} MiB")
    for label, fn in (("uncompressed, read", lambda: load_split(plain)),
                      ("uncompressed, memory-mapped", lambda: load_split(plain, mmap=True)),
                      ("uncompressed, mmap + copy all", lambda: [np.array(v) for k, v in
                                                                 load_split(plain, mmap=True).items()
                                                                 if k in ("image", "mask", "seg")]),
                      ("compressed, read", lambda: load_split(packed))):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        print(f"  load {label:32s} {min(times) * 1000:8.1f} ms (best of 3, warm page cache)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=6, help="subjects to slice per resolution")
    ap.add_argument("--split-subjects", type=int, default=100, help="subjects in the split file to load")
    ap.add_argument("--threads", type=int, default=1, help="SimpleITK threads (the rule uses its threads)")
    args = ap.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"SimpleITK threads: {args.threads}")
        bench_slicing(folder, args.subjects, 2.0, 4.0)
        bench_slicing(folder, args.subjects, 1.0, 2.0)
        bench_load(folder, args.split_subjects, (50, 96, 96))


if __name__ == "__main__":
    main()
