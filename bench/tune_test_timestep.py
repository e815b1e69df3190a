"""Choose `infer.test_timestep` on validation volumes only: a finished run's model, several noise levels.

    .venv/bin/python bench/tune_test_timestep.py RUN_DIR MODEL DATASET T1,T2,... [FOLD]
    e.g. bench/tune_test_timestep.py . pddpm demo_brats 500,700,800,900,1000

For each t it reconstructs the data set's validation split with the run's trained model (the same seed,
noise stream and post-processing sizes as the infer rule), searches the Dice-optimal threshold there
(the threshold rule's search) and prints that validation Dice. Test volumes are never read: pick the t
with the best validation Dice and set it in the config; the workflow then reruns inference and evaluation.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pddpm.artefacts import load_split
from pddpm.config_checks import check_config
from pddpm.evaluate.postprocess import voxel_settings
from pddpm.evaluate.threshold import choose_threshold
from pddpm.infer import infer_arrays


def main(run: Path, model: str, ds: str, timesteps: list[int], fold: int = 0) -> None:
    torch.set_num_threads(1)
    config = check_config(yaml.safe_load((run / "config.yaml").read_text())) if (run / "config.yaml").exists() \
        else check_config(yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text()))
    vox = voxel_settings(config["evaluate"], config["slices"]["target_spacing_mm"])
    split = load_split(run / f"results/slices/{ds}_val.npz")
    ev = config["evaluate"]
    print(f"{model} on {ds} validation ({len(split['image'])} volumes), fold {fold}")
    for t in timesteps:
        t0 = time.perf_counter()
        _, maps, _ = infer_arrays(split["image"], split["mask"], model=model,
                                  model_path=run / f"results/models/{model}/fold{fold}/model.pt",
                                  seed=config["seed"] + fold, stream=f"{ds}_val", progress=False,
                                  erosion_iterations=vox["erosion_iterations"], median_size=vox["median_size"],
                                  test_timestep=t, device="cpu")
        th = choose_threshold(maps.astype(np.float32), split["seg"] > 0, method=ev["threshold_search"],
                              steps=ev["interval_steps"])
        print(f"  test_timestep {t:5d}: validation Dice {th['val_dice']:.3f} at threshold {th['threshold']:.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], [int(t) for t in sys.argv[4].split(",")],
         int(sys.argv[5]) if len(sys.argv) > 5 else 0)
