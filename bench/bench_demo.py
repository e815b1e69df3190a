"""Time the demo generator: the shared anatomy once, then per subject (synthesis and writing) per kind.

    .venv/bin/python bench/bench_demo.py [subjects per kind, default 3]

Prints wall and CPU seconds (CPU is what matters on a shared machine) and peak memory; the target is
< 3 s per subject on one core."""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pddpm.demo import anatomy, cohort


def timed(fn, *args):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w, time.process_time() - c


def main(n: int = 3) -> None:
    ref_img, w, c = timed(anatomy.build_reference)
    print(f"reference anatomy (template load + head): wall {w:.2f} s, cpu {c:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "anatomy.npz"
        _, w, c = timed(anatomy.save_reference, ref_img, path)
        print(f"save anatomy.npz ({path.stat().st_size / 1e6:.0f} MB): wall {w:.2f} s, cpu {c:.2f} s")
        ref, w, c = timed(anatomy.load_reference, path)
        print(f"load anatomy.npz (every subject job): wall {w:.2f} s, cpu {c:.2f} s")
        print(f"{'kind':6} {'grid':>16} {'voxels':>8} {'make cpu':>9} {'write cpu':>10} {'total cpu':>10} {'total wall':>11}")
        for kind in cohort.KINDS:
            rows = []
            for i in range(n):
                seed = cohort.subject_seed(42, f"demo_{kind}", i)
                subject, mw, mc = timed(cohort.make_subject, ref, kind, seed)
                paths = cohort.subject_paths(Path(tmp) / kind, f"demo_{kind}_{i:03d}")
                _, ww, wc = timed(cohort.write_subject, subject, paths)
                rows.append((mc, wc, mw + ww))
                shape = subject.t2.shape
            mc, wc, wall = np.mean(rows, axis=0)
            print(f"{kind:6} {str(shape):>16} {np.prod(shape) / 1e6:7.1f}M {mc:8.2f}s {wc:9.2f}s "
                  f"{mc + wc:9.2f}s {wall:10.2f}s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB (all of the above in one process)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
