"""Benchmark of the slices stage: the slicing CPU time of a 5-fold run sliced per split (as before)
against each subject sliced once and the split files assembled (as the workflow does now), the start-up
cost of one job, subjects per second for slicing, and the load time of a split file in the chosen
encoding (uncompressed .npz, read or memory-mapped) against a compressed .npz.

    .venv/bin/python bench/bench_slices.py [--subjects 6] [--fold-subjects 12] [--split-subjects 100] [--threads 1]

Synthetic volumes the size of a cropped preprocessed brain (about 140 x 172 x 140 mm), at the demo's
2 mm and the paper's 1 mm spacing.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pddpm.io import save_nifti
from pddpm.slices import assemble_split, build_split, load_split, process_subject, save_split, save_subject

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


def five_fold_splits(rows: list[dict], folds: int = 5) -> dict[str, list[dict]]:
    """A healthy training set's sheets as the workflow draws them: a test set (1/6 here), the rest in
    `folds` folds, each fold's train and val covering the rest once."""
    n_test = max(1, len(rows) // 6)
    test, rest = rows[:n_test], rows[n_test:]
    splits = {"test": test}
    for k in range(folds):
        val = rest[k::folds]
        splits[f"train_fold{k}"] = [r for r in rest if r not in val]
        splits[f"val_fold{k}"] = val
    return splits


def bench_five_folds(folder: Path, n: int, spacing: float, target: float) -> None:
    """CPU seconds (this process) of all split files of a 5-fold run: sliced per split vs once per subject."""
    rng = np.random.default_rng(1)
    rows = [_subject(folder, f"f{spacing:g}_{i}", spacing, rng) for i in range(n)]
    splits = five_fold_splits(rows)
    build_split(rows[:1], target_spacing_mm=target)  # warm-up
    fov = (192, 192, 100)
    t = time.process_time()
    before = {name: build_split(part, target_spacing_mm=target) for name, part in splits.items()}
    cpu_before = time.process_time() - t
    t = time.process_time()
    files = {}
    for r in rows:
        vol = process_subject(r["img_path"], r["mask_path"], r["seg_path"], target_spacing_mm=target)
        files[r["img_name"]] = save_subject(vol, folder / "subjects" / f"{r['img_name']}.npz", fov_mm=fov,
                                            target_spacing_mm=target)
    cpu_slice = time.process_time() - t
    t = time.process_time()
    after = {name: assemble_split(part, files) for name, part in splits.items()}
    cpu_assemble = time.process_time() - t
    same = all(np.array_equal(before[k][a], after[k][a]) for k in splits for a in before[k])
    sliced = sum(len(p) for p in splits.values())
    print(f"5-fold run, {n} subjects {spacing:g} mm -> {target:g} mm ({len(splits)} split files, {sliced} "
          f"subject slicings per split): per split {cpu_before:.1f} CPU s; once per subject "
          f"{cpu_slice:.1f} + assembly {cpu_assemble:.2f} = {cpu_slice + cpu_assemble:.1f} CPU s "
          f"({cpu_before / (cpu_slice + cpu_assemble):.2f}x less); same arrays: {same}")
    per_subject = cpu_slice / n
    print(f"  {per_subject:.2f} CPU s per subject sliced; per slicing before {cpu_before / sliced:.2f}")


def bench_job_startup(repeats: int = 3) -> float:
    """CPU and wall seconds to start a job of rule slice_subject: a fresh interpreter importing what
    the job script and snakemake's script preamble import (snakemake's own scheduling not included)."""
    code = ("import snakemake.script, SimpleITK; from pddpm.runlog import logged; "
            "from pddpm.slices import process_subject, save_subject")
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    print(f"job start-up: {min(cpus):.2f} CPU s, {min(walls):.2f} s wall (best of {repeats})")
    return min(cpus)


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
    ap.add_argument("--fold-subjects", type=int, default=12, help="subjects of the 5-fold run (0: skip it)")
    ap.add_argument("--threads", type=int, default=1, help="SimpleITK threads (the rule uses its threads)")
    args = ap.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"SimpleITK threads: {args.threads}")
        bench_job_startup()
        if args.fold_subjects:
            bench_five_folds(folder, args.fold_subjects, 2.0, 4.0)
            bench_five_folds(folder, args.fold_subjects, 1.0, 2.0)
        bench_slicing(folder, args.subjects, 2.0, 4.0)
        bench_slicing(folder, args.subjects, 1.0, 2.0)
        bench_load(folder, args.split_subjects, (50, 96, 96))


if __name__ == "__main__":
    main()
