"""Benchmark of the evaluation: seconds per volume of each post-processing and metrics step, before (the
plain scipy/scikit-learn path, tests/evaluate_reference.py) and after (pddpm.evaluate), measured
interleaved in one process; the threshold search over a validation split; a whole test split from its
files on 1 and 2 threads, with the peak memory of the job.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python bench/bench_eval.py          # everything (~15 min)
    .venv/bin/python bench/bench_eval.py --parts steps                            # per-step tables only
    .venv/bin/python bench/bench_eval.py --split-volumes 200 --val-volumes 20     # a smaller split

Synthetic volumes (brain ellipsoid, irregular lesion, smooth residual) at the paper's 96 x 96 x 50 and
the demo's 48 x 48 x 25 grid, with each grid's post-processing sizes (pddpm.evaluate.postprocess.
voxel_settings). Prints the numbers, not a verdict; run `uptime` beside it on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the reference implementation lives with the tests

import evaluate_reference as ref  # noqa: E402
from pddpm.evaluate import metrics, postprocess  # noqa: E402
from pddpm.evaluate.histogram import ScoreHistogram  # noqa: E402
from pddpm.evaluate.threshold import choose_threshold, interval_search  # noqa: E402

GRIDS = {"paper": ((50, 96, 96), 2.0), "demo": ((25, 48, 48), 4.0)}


def synthetic_volume(shape, seed):
    """(image float16, reconstruction float32, brain mask, lesion) of one synthetic subject."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    brain = (z / 1.15) ** 2 + (y / 0.85) ** 2 + (x / 0.7) ** 2 < 1
    smooth = ndimage.gaussian_filter(rng.standard_normal(shape), max(1.0, shape[1] / 48))
    image = brain * (0.45 + 0.25 * smooth)
    centre = np.array(shape) * rng.uniform(0.35, 0.6, 3)
    dist = np.sqrt(sum(((g - c) / (n * 0.12)) ** 2 for g, c, n in zip(np.indices(shape), centre, shape,
                                                                        strict=True)))
    rough = ndimage.gaussian_filter(rng.standard_normal(shape), max(1.0, shape[1] / 32)) > 0
    lesion = brain & (dist < 1) & (rough | (dist < 0.6))
    image[lesion] = 0.85
    recon = image.copy()
    recon[lesion] = 0.45
    recon += 0.3 * ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) * brain
    return np.clip(image, 0, 1).astype(np.float16), recon.astype(np.float32), brain, lesion


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def bench_steps(grid: str, n_volumes: int, reps: int) -> None:
    shape, spacing = GRIDS[grid]
    vox = postprocess.voxel_settings(spacing_mm=spacing)
    er, med, comp = vox["erosion_iterations"], vox["median_size"], vox["min_component_voxels"]
    vols = [synthetic_volume(shape, seed) for seed in range(n_volumes)]
    steps = ["erosion", "median", "component filter", "Dice", "histogram (shared)", "AUPRC", "AUROC",
             "best Dice", "total: map + metrics"]
    times = {(s, w): [] for s in steps for w in ("before", "after")}
    for _ in range(reps):
        for image, recon, mask, seg in vols:
            residual = np.abs(image.astype(np.float32) - recon)
            before, after = {}, {}
            # interleaved: each step before, then after, on the same volume
            t, eroded = timed(ref.erode, mask, er)
            before["erosion"] = t
            after["erosion"], eroded_fast = timed(postprocess.erode_mask_slices, mask, er)
            masked = residual * eroded
            before["median"], amap32 = timed(ref.median, masked, med)
            after["median"], amap = timed(postprocess.median_filter, masked.astype(np.float16), med)
            assert np.array_equal(amap, amap32.astype(np.float16)) and np.array_equal(eroded, eroded_fast)
            a32 = amap.astype(np.float32)
            thr = float(np.quantile(a32[a32 > 0], 0.98))
            before["component filter"], b_ref = timed(ref.remove_small_components, a32 > thr, comp)
            after["component filter"], b_fast = timed(metrics.binarise, amap, thr, comp)
            before["Dice"], _ = timed(ref.dice, b_ref, seg)
            after["Dice"], _ = timed(metrics.dice, b_fast, seg)
            before["histogram (shared)"] = 0.0
            after["histogram (shared)"], hist = timed(ScoreHistogram.of, amap, seg)
            before["AUPRC"], ap_ref = timed(ref.auprc, a32, seg)
            after["AUPRC"], ap = timed(hist.average_precision)
            before["AUROC"], auc_ref = timed(ref.auroc, a32, seg)
            after["AUROC"], auc = timed(hist.roc_auc)
            before["best Dice"], bd_ref = timed(ref.best_dice, a32, seg)
            after["best Dice"], bd = timed(lambda h=hist: interval_search(h, steps=10)[1])
            assert abs(ap - ap_ref) < 1e-6 and abs(auc - auc_ref) < 1e-6 and abs(bd - bd_ref) < 1e-6
            # end to end, as the workflow calls them (the map stored as float16, read back)
            t0 = time.perf_counter()
            m_ref = ref.anomaly_map(image, recon, mask, er, med).astype(np.float16)
            r_ref = ref.volume_metrics(m_ref, seg, thr, comp)
            before["total: map + metrics"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            m = postprocess.anomaly_map(image, recon, mask, erosion_iterations=er, median_size=med,
                                        dtype=np.float16)
            r = metrics.volume_metrics(m, seg, thr, min_component_voxels=comp)
            after["total: map + metrics"] = time.perf_counter() - t0
            assert all(abs(r[k] - r_ref[k]) < 1e-6 for k in r), (r, r_ref)
            for s in steps:
                times[s, "before"].append(before[s])
                times[s, "after"].append(after[s])
    print(f"\n{grid} grid {shape[2]}x{shape[1]}x{shape[0]} (erosion {er}, median {med}^3, components <= "
          f"{comp} voxels): seconds per volume, median of {reps} x {n_volumes} volumes")
    print("| step | before | after | speed-up |\n|---|---|---|---|")
    for s in steps:
        b, a = np.median(times[s, "before"]), np.median(times[s, "after"])
        print(f"| {s} | {b:.4f} | {a:.4f} | {b / a:.1f}x |" if b > 0 else f"| {s} | - | {a:.4f} | |")


def bench_search(n_volumes: int, reps: int) -> tuple[np.ndarray, np.ndarray]:
    """The search's before/after table (reps > 0); returns the 8 distinct paper-sized maps and labels."""
    shape, spacing = GRIDS["paper"]
    vox = postprocess.voxel_settings(spacing_mm=spacing)
    base = [synthetic_volume(shape, 100 + s) for s in range(8)]
    maps = np.stack([postprocess.anomaly_map(i, r, m, erosion_iterations=vox["erosion_iterations"],
                                             median_size=vox["median_size"], dtype=np.float16)
                     for i, r, m, _ in base])
    segs = np.stack([v[3] for v in base])
    if reps <= 0:
        return maps, segs
    idx = np.arange(n_volumes) % len(base)
    val_maps, val_segs = maps[idx], segs[idx]
    print(f"\nthreshold search over a validation split of {n_volumes} paper-sized volumes (seconds, median of "
          f"{reps}; arrays in memory)")
    print("| search | before | after | speed-up | same threshold |\n|---|---|---|---|---|")
    for method in ("interval", "exact"):
        tb, ta, same = [], [], True
        for _ in range(reps if method == "interval" else 1):
            t, (thr_ref, d_ref) = timed(ref.choose_threshold, val_maps, val_segs, method)
            tb.append(t)
            t, res = timed(choose_threshold, val_maps, val_segs, method)
            ta.append(t)
            same &= res["threshold"] == thr_ref and abs(res["val_dice"] - d_ref) < 1e-12
        b, a = np.median(tb), np.median(ta)
        print(f"| {method} | {b:.3f} | {a:.3f} | {b / a:.1f}x | {same} |")
    return maps, segs


def _write_member(zf: zipfile.ZipFile, name: str, shape, dtype, volumes) -> None:
    """An .npy member written one volume at a time (the bench's split does not fit in memory twice)."""
    with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": tuple(shape)})
        for v in volumes:
            fh.write(np.ascontiguousarray(v, dtype=dtype).tobytes())


def write_split(tmp: Path, maps: np.ndarray, segs: np.ndarray, n: int) -> tuple[Path, Path]:
    shape = (n, *maps.shape[1:])
    subjects = np.array([f"sub{i:04d}" for i in range(n)])
    cycle = [i % len(maps) for i in range(n)]
    infer, slices = tmp / "infer_test.npz", tmp / "slices_test.npz"
    with zipfile.ZipFile(infer, "w", zipfile.ZIP_DEFLATED) as zf:
        _write_member(zf, "recon", shape, np.float16, (np.zeros(maps.shape[1:]) for _ in cycle))
        _write_member(zf, "anomaly", shape, np.float16, (maps[i] for i in cycle))
        for key, value in {"subjects": subjects, "seed": np.int64(1), "info": np.asarray("{}")}.items():
            _write_member(zf, key, np.shape(value), np.asarray(value).dtype, [value])
    with zipfile.ZipFile(slices, "w", zipfile.ZIP_STORED) as zf:
        _write_member(zf, "image", shape, np.float16, (maps[i] for i in cycle))
        _write_member(zf, "mask", shape, np.uint8, (np.ones(maps.shape[1:]) for _ in cycle))
        _write_member(zf, "seg", shape, np.uint8, (segs[i] for i in cycle))
        small = {"subjects": subjects, "label": np.ones(n, np.int64), "spacing_mm": np.float64(2.0),
                 "fov_mm": np.array([192.0, 192.0, 100.0])}
        for key, value in small.items():
            _write_member(zf, key, np.shape(value), np.asarray(value).dtype, [value])
    return infer, slices


JOB = """
import json, os, sys, time
infer, slices, threads, job = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
os.sched_setaffinity(0, set(range(min(threads, os.cpu_count()))))  # one core per thread, as a job gets
from pddpm.evaluate.split import per_volume, split_threshold
t0 = time.perf_counter()
if job == "metrics":
    table = per_volume(infer, slices, anomalous=True, threshold=0.2, min_component_voxels=7, threads=threads)
    n = len(table)
else:
    n = split_threshold(infer, slices, threads=threads)["n_volumes"]
# VmHWM: this process's peak resident memory (ru_maxrss would keep the parent's across exec)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
# the largest worker process (forked: it shares the job's pages, so this counts them again)
import resource
own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": time.perf_counter() - t0, "n": n, "peak_rss_mb": hwm / 1024,
                  "worker_rss_mb": kids.ru_maxrss / 1024, "cpu_job": own.ru_utime + own.ru_stime,
                  "cpu_workers": kids.ru_utime + kids.ru_stime}))
"""


def bench_split(maps: np.ndarray, segs: np.ndarray, n: int, tmp: Path) -> None:
    t, (infer, slices) = timed(write_split, tmp, maps, segs, n)
    size = (infer.stat().st_size + slices.stat().st_size) / 1e9
    print(f"\nwhole test split: {n} paper-sized volumes from their files ({size:.1f} GB on disk, written in "
          f"{t:.0f} s); each run a fresh process (its peak RSS), its progress bar on stderr")
    print("CPU s: of the job's own process / of its workers (on a machine with free cores the wall time "
          "tends to the larger of the job's and workers / threads)")
    print("| job | threads | seconds | volumes/s | CPU s job / workers | peak RSS of the job (MB) | "
          "largest worker (MB) |\n|---|---|---|---|---|---|---|")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for job in ("metrics", "threshold"):
        for threads in (1, 2):
            proc = subprocess.run([sys.executable, "-c", JOB, str(infer), str(slices), str(threads), job],
                                  capture_output=True, text=True, env=env, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            worker = f"{res['worker_rss_mb']:.0f}" if threads > 1 else "-"
            print(f"| {job} | {threads} | {res['seconds']:.1f} | {res['n'] / res['seconds']:.1f} | "
                  f"{res['cpu_job']:.1f} / {res['cpu_workers']:.1f} | {res['peak_rss_mb']:.0f} | {worker} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", type=int, default=4, help="distinct synthetic volumes per grid")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--val-volumes", type=int, default=100, help="the paper's BraTS validation split: 100")
    ap.add_argument("--split-volumes", type=int, default=1151, help="the paper's BraTS test split: 1151")
    ap.add_argument("--parts", default="steps,search,split", help="comma-separated: steps, search, split")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    print(f"load: {os.getloadavg()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"CPUs allowed: {len(os.sched_getaffinity(0))}")
    if "steps" in parts:
        for grid in ("paper", "demo"):
            bench_steps(grid, args.volumes, args.reps)
    if parts & {"search", "split"}:
        with tempfile.TemporaryDirectory() as tmp:
            maps, segs = bench_search(args.val_volumes, args.reps if "search" in parts else 0)
            if "split" in parts:
                bench_split(maps, segs, args.split_volumes, Path(tmp))
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
