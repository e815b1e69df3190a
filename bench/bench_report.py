"""Speed and memory of the report stage at the paper's grid (96 x 96 x 50 per volume).

Prints: exact PR counting (PRAccumulator) against scikit-learn on the same voxels, and the time of each
figure and the table on synthetic files. Run: .venv/bin/python bench/bench_report.py [n_volumes]
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pddpm.report import figures, table  # noqa: E402
from test_report import per_volume_files, synthetic_run, two_fold_config  # noqa: E402


def timed(label, fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    dt = time.perf_counter() - t0
    print(f"{label:<48s} {dt:8.3f} s")
    return out, dt


def main(n_volumes: int = 40) -> None:
    rng = np.random.default_rng(0)
    shape = (n_volumes, 50, 96, 96)
    labels = rng.random(shape) < 0.02
    scores = (rng.random(shape) * 0.6 + labels * rng.random(shape) * 0.4).astype(np.float16)
    n = labels.size
    print(f"precision-recall over {n_volumes} volumes of 50 x 96 x 96 ({n / 1e6:.1f} M voxels)")

    def accumulate():
        acc = figures.PRAccumulator()
        for v in range(n_volumes):
            acc.add(scores[v], labels[v])
        return acc.curve()[3]

    ap_ours, t_ours = timed("  PRAccumulator, streamed per volume", accumulate)
    ap_sk, t_sk = timed("  sklearn average_precision_score, all at once",
                        average_precision_score, labels.ravel(), scores.ravel().astype(np.float32))
    print(f"  AP ours {ap_ours:.12f}  sklearn {ap_sk:.12f}  |diff| {abs(ap_ours - ap_sk):.2e}")
    print(f"  voxels/s ours {n / t_ours / 1e6:.1f} M, sklearn {n / t_sk / 1e6:.1f} M; "
          f"ours {t_sk / t_ours:.1f}x faster, O(65536) memory instead of O(voxels)")
    print(f"  paper BraTS21 test (1151 volumes) per model and fold: ~{1151 / n_volumes * t_ours:.0f} s")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = two_fold_config()
        synthetic_run(root, config, n_test=n_volumes, shape=(50, 96, 96))
        res = root / "results"
        models = config["models"]
        print(f"figures on synthetic files: {len(models)} models x 2 folds, {n_volumes} test volumes of 50x96x96")
        timed("  qualitative grid (3 volumes)", figures.qualitative_from_files,
              res / "slices" / "demo_brats_test.npz",
              {m: res / "infer" / m / "fold0" / "demo_brats_test.npz" for m in models},
              {m: res / "eval" / m / "fold0" / "demo_brats_threshold.json" for m in models},
              3, "bench", root / "q.png")
        keys = [(m, f) for m in models for f in (0, 1)]
        timed("  precision-recall figure (6 inference files)", figures.pr_curves_from_files,
              res / "slices" / "demo_brats_test.npz",
              {k: res / "infer" / k[0] / f"fold{k[1]}" / "demo_brats_test.npz" for k in keys},
              {k: res / "eval" / k[0] / f"fold{k[1]}" / "demo_brats_threshold.json" for k in keys},
              "bench", root / "pr.png")
        ds = [d for d in table.datasets_from_config(config) if d.role == "anomalous"]
        pv = table.load_per_volume(per_volume_files(root, config), ds)
        timed("  per-volume Dice figure", figures.dice_distribution_figure, pv, [d.key for d in ds], root / "d.png")
        logs = {(m, f): figures.read_train_log(res / "models" / m / f"fold{f}" / "train_log.csv")
                for m in ("pddpm", "ddpm") for f in (0, 1)}
        timed("  training curves", figures.training_curves_figure, logs, root / "t.png")
        t1, _ = timed("  Table 1 (load, aggregate, build)", table.make_table1, per_volume_files(root, config), config)
        timed("  Table 1 written as csv, md, tex, html", table.write_table1, t1, root / "t.csv", root / "t.md",
              root / "t.tex", root / "t.html")
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
