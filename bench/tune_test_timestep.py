"""Choose `infer.test_timestep` and the post-processing sizes (`evaluate.erosion_mm`, `median_radius_mm`)
on validation volumes only: a finished run's model, several noise levels, erosion depths and median windows.

    .venv/bin/python bench/tune_test_timestep.py RUN_DIR MODEL DATASET T1,T2,... [FOLD]
                     [--erosion-mm E1,E2,...] [--median-mm R1,R2,...]
    e.g. bench/tune_test_timestep.py . pddpm demo_brats 500,700,800,900,1000
         bench/tune_test_timestep.py . pddpm demo_mslub 900 --erosion-mm 6,8,12 --median-mm 0,4

For each t it reconstructs the data set's validation split with the run's trained model (the same seed
and noise stream as the infer rule; MODEL thresh has no t, give any one value), then for each erosion
depth and median radius (default: the run's `evaluate` values) post-processes the residuals as the infer
rule would, searches the Dice-optimal threshold there (the threshold rule's search) and prints that
validation Dice and the validation AUPRC. Test volumes are never read: pick the setting with the best
validation Dice and set it in the config; the workflow then reruns inference and evaluation.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pddpm.artefacts import load_split
from pddpm.config_checks import check_config
from pddpm.evaluate.metrics import auprc
from pddpm.evaluate.postprocess import voxel_settings
from pddpm.evaluate.threshold import choose_threshold
from pddpm.infer import infer_arrays, postprocess_split
from pddpm.models import kind


def main(run: Path, model: str, ds: str, timesteps: list[int], fold: int = 0,
         erosions_mm: list[float] | None = None, medians_mm: list[float] | None = None) -> None:
    torch.set_num_threads(1)
    config_file = run / "config.yaml" if (run / "config.yaml").exists() else Path(__file__).parents[1] / "config.yaml"
    config = check_config(yaml.safe_load(config_file.read_text()))
    ev, spacing = config["evaluate"], config["slices"]["target_spacing_mm"]
    erosions_mm = [ev["erosion_mm"]] if erosions_mm is None else erosions_mm
    medians_mm = [ev["median_radius_mm"]] if medians_mm is None else medians_mm
    # one reconstruction per noise level; thresh has none
    runs = [{"test_timestep": t} for t in timesteps] if kind(model).trained else [{}]
    split = load_split(run / f"results/slices/{ds}_val.npz")
    truth = split["seg"] > 0
    print(f"{model} on {ds} validation ({len(split['image'])} volumes, {int(truth.sum())} lesion voxels), fold {fold}")
    brain = split["mask"] > 0
    for options in runs:
        t0 = time.perf_counter()
        recons, _, _ = infer_arrays(split["image"], split["mask"], model=model,
                                    model_path=run / f"results/models/{model}/fold{fold}/model.pt",
                                    seed=config["seed"] + fold, stream=f"{ds}_val", progress=False,
                                    erosion_iterations=0, median_size=1, device="cpu", **options)
        for erosion, radius in itertools.product(erosions_mm, medians_mm):
            vox = voxel_settings({**ev, "erosion_mm": erosion, "median_radius_mm": radius}, spacing)
            maps = postprocess_split(split["image"], recons, split["mask"], erosion_iterations=vox["erosion_iterations"],
                                     median_size=vox["median_size"]).astype(np.float32)
            th = choose_threshold(maps, truth, method=ev["threshold_search"], steps=ev["interval_steps"])
            print(f"  {''.join(f'test_timestep {t:4d}, ' for t in options.values())}erosion_mm {erosion:g} "
                  f"({vox['erosion_iterations']} steps), median_radius_mm {radius:g} ({vox['median_size']}^3): "
                  f"validation Dice {th['val_dice']:.3f} at threshold {th['threshold']:.3f}, "
                  f"AUPRC {auprc(maps[brain], truth[brain]):.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    def floats(text: str) -> list[float]:
        return [float(v) for v in text.split(",")]

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("model")
    ap.add_argument("dataset")
    ap.add_argument("timesteps", type=lambda text: [int(v) for v in text.split(",")],
                    help="comma-separated test_timestep values")
    ap.add_argument("fold", nargs="?", type=int, default=0)
    ap.add_argument("--erosion-mm", type=floats, help="comma-separated evaluate.erosion_mm values (default: the run's)")
    ap.add_argument("--median-mm", type=floats, help="comma-separated evaluate.median_radius_mm values (default: the run's)")
    a = ap.parse_args()
    main(a.run, a.model, a.dataset, a.timesteps, a.fold, a.erosion_mm, a.median_mm)
