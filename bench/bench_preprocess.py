"""Benchmark of the preprocessing chain on demo subjects: seconds per subject per stage, skull-strip
backends (Dice against the demo's truth masks, seconds) and N4 implementations (residual bias, WM CoV,
seconds), at 1 mm and at the demo spacing.

Needs demo raw data and the atlas (run the demo stage first), e.g.:
    snakemake --cores 2 resources/atlas/t2.nii.gz data/raw/demo_ixi/demo_ixi_000_t2.nii.gz ...
    python bench/bench_preprocess.py --root . --subjects demo_ixi/demo_ixi_000 demo_mslub/demo_mslub_000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from pddpm.preprocess import n4, qc, register, stages
from pddpm.preprocess.resample import resample_to


def _now() -> np.ndarray:
    """(wall, CPU) seconds; CPU time of all this process's threads stays honest on a busy machine."""
    return np.array([time.perf_counter(), time.process_time()])


def _dt(t0) -> dict:
    wall, cpu = _now() - t0
    return {"seconds": float(wall), "cpu_s": float(cpu)}


def truth_on(path, ref: nib.Nifti1Image, order=0):
    return resample_to(nib.load(path), ref.shape[:3], ref.affine, order=order, antialias=False)


def bench_subject(root: Path, ds_sub: str, spacing: float, backends, n4_impls, out: Path, args) -> list[dict]:
    ds, sub = ds_sub.split("/")
    raw = root / "data/raw" / ds
    truth = raw / "truth"
    seg = raw / f"{sub}_seg.nii.gz"
    f = {k: out / f"{sub}_{spacing}_{k}.nii.gz" for k in ("res_t2", "res_seg", "ss_t2", "ss_mask", "reg_t2",
                                                           "reg_mask", "reg_seg", "crop_t2", "crop_mask",
                                                           "crop_seg", "n4_t2", "n4_mask", "n4_seg")}
    f["affine"] = out / f"{sub}_{spacing}_affine.mat"
    rows = []
    base = {"subject": ds_sub, "spacing_mm": spacing}
    t0 = _now()
    stages.resample_files(raw / f"{sub}_t2.nii.gz", seg if seg.exists() else None, spacing, f["res_t2"],
                          f["res_seg"])
    rows.append({**base, "stage": "resample", **_dt(t0)})
    res = nib.load(f["res_t2"])
    tmask = truth_on(truth / f"{sub}_mask.nii.gz", res) > 0
    chosen = None
    for backend in backends:
        t0 = _now()
        try:
            stages.skullstrip_files(f["res_t2"], backend, f["ss_t2"], f["ss_mask"], device="cpu",
                                    native_path=raw / f"{sub}_t2.nii.gz" if args.native else None,
                                    hdbet_mode=args.hdbet_mode, tta=False)
        except Exception as exc:  # a backend that cannot run here is reported, not fatal
            rows.append({**base, "stage": f"skullstrip:{backend}", "error": str(exc)[:120]})
            continue
        sec = _dt(t0)
        d = qc.dice(nib.load(f["ss_mask"]).get_fdata(), tmask)
        rows.append({**base, "stage": f"skullstrip:{backend}", **sec, "dice": d})
        if backend == args.chain_backend:
            chosen = True
            os.replace(f["ss_mask"], out / "chosen_mask.nii.gz")
            os.replace(f["ss_t2"], out / "chosen_t2.nii.gz")
    if not chosen:
        return rows
    os.replace(out / "chosen_mask.nii.gz", f["ss_mask"])
    os.replace(out / "chosen_t2.nii.gz", f["ss_t2"])
    atlas = {"image": root / "resources/atlas" / f"{args.modality}.nii.gz",
             "mask": root / "resources/atlas/mask.nii.gz"}
    t0 = _now()
    info = register.register_subject(f["ss_t2"], f["ss_mask"], f["res_seg"], atlas["image"], atlas["mask"],
                                     spacing, args.transform, {"t2": f["reg_t2"], "mask": f["reg_mask"],
                                                               "seg": f["reg_seg"], "affine": f["affine"]})
    err = register.transform_error_mm(f["affine"], np.loadtxt(truth / f"{sub}_native_to_atlas.txt"),
                                      atlas["mask"])
    rows.append({**base, "stage": f"register:{args.transform}", **_dt(t0),
                 "dice": info["mask_dice_atlas"], "transform_error_mm": err})
    t0 = _now()
    stages.crop_files(f["reg_t2"], f["reg_mask"], f["reg_seg"], 0,
                      {"t2": f["crop_t2"], "mask": f["crop_mask"], "seg": f["crop_seg"]})
    rows.append({**base, "stage": "crop", **_dt(t0)})
    # truth WM and bias on the cropped grid, through the same transform
    reg_img, crop_img = nib.load(f["reg_t2"]), nib.load(f["crop_t2"])
    sl = qc.crop_offset(reg_img, crop_img)
    tfs = register.transform_list(f["affine"])
    wm = qc.truth_to_registered(truth / f"{sub}_wm.nii.gz", res, f["reg_t2"], tfs)[sl]
    with tempfile.TemporaryDirectory() as tmp:
        bpath = Path(tmp) / "bias.nii.gz"
        nib.save(nib.Nifti1Image(truth_on(truth / f"{sub}_bias.nii.gz", res, order=1).astype(np.float32),
                                 res.affine), bpath)
        tbias = register.map_to_atlas(bpath, f["reg_t2"], tfs, interpolator="linear")[sl]
    mask = nib.load(f["crop_mask"]).get_fdata() > 0
    lesion = ndimage.binary_dilation(nib.load(f["crop_seg"]).get_fdata() > 0, iterations=2)
    wm = ndimage.binary_erosion(wm & mask) & ~lesion  # lesions are not bias
    data = crop_img.get_fdata(dtype=np.float32)
    cov0 = n4.wm_cov(data, wm)
    for impl in n4_impls:
        t0 = _now()
        corrected, est = n4.n4_correct(crop_img, mask, implementation=impl, levels=args.levels,
                                       iterations=args.iterations, shrink_factor=args.shrink, threads=2)
        sec = _dt(t0)
        inner = ndimage.binary_erosion(mask, iterations=2) & (tbias > 0)
        ratio = tbias[inner] / est[inner]
        rows.append({**base, "stage": f"n4:{impl}", **sec, "wm_cov_before": cov0,
                     "wm_cov_after": n4.wm_cov(corrected, wm),
                     "truth_bias_cov": float(tbias[inner].std() / tbias[inner].mean()),
                     "residual_bias_cov": float(ratio.std() / ratio.mean())})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("."), help="working directory holding data/ and resources/")
    ap.add_argument("--subjects", nargs="+", required=True, help="ds/sub, e.g. demo_ixi/demo_ixi_000")
    ap.add_argument("--spacings", nargs="+", type=float, default=[1.0, 2.0])
    ap.add_argument("--backends", nargs="+", default=["hdbet_v1", "deepbet"])
    ap.add_argument("--chain-backend", default="hdbet_v1", help="backend whose mask feeds registration")
    ap.add_argument("--hdbet-mode", default="fast")
    ap.add_argument("--native", type=int, default=0, help="1: networks see the raw scan, not the working grid")
    ap.add_argument("--n4", nargs="+", default=["sitk", "ants"])
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--shrink", type=int, default=4)
    ap.add_argument("--transform", default="Affine")
    ap.add_argument("--modality", default="t2")
    ap.add_argument("--out", type=Path, default=None, help="keep the intermediate files here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for spacing in args.spacings:
            for s in args.subjects:
                new = bench_subject(args.root, s, spacing, args.backends, args.n4, out, args)
                for r in new:
                    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
                rows += new
    df = pd.DataFrame(rows)
    pd.set_option("display.width", 200)
    print("\nmean per spacing and stage:")
    print(df.drop(columns=["subject"]).groupby(["spacing_mm", "stage"]).mean(numeric_only=True).round(3))


if __name__ == "__main__":
    main()
