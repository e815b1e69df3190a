"""Speed of the raw-data stage on this machine: loopback download (hash check included, with and
without one interruption + resume), and IXI tarball -> data/raw conversion per subject.

    python bench/bench_data.py [--mb 200] [--subjects 10]
Prints one line per figure; nothing leaves 127.0.0.1."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from data_fixtures import tar_of  # noqa: E402
from http_server import start  # noqa: E402
from pddpm.data import download, normalise  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--subjects", type=int, default=10)
    args = ap.parse_args()
    state, server = start()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        body = os.urandom(args.mb << 20)
        sha = hashlib.sha256(body).hexdigest()
        url = state.serve("big.tar", body)
        t = time.perf_counter()
        download.fetch(url, tmp / "a.tar", sha, retries=0, progressbar=False)
        dt = time.perf_counter() - t
        print(f"download+sha256 {args.mb} MB: {dt:.2f} s ({args.mb / dt:.0f} MB/s)")
        url = state.serve("cut.tar", body, truncate_at=len(body) // 2, truncate_times=1)
        t = time.perf_counter()
        download.fetch(url, tmp / "b.tar", sha, retries=1, progressbar=False)
        dt = time.perf_counter() - t
        print(f"download {args.mb} MB, cut at half and resumed: {dt:.2f} s "
              f"({sum(1 for _, r in state.requests if r)} range request)")
        # IXI-like volumes: 256 x 256 x 130 int16 (the IXI T2 grid), gzip
        src = tmp / "src"
        src.mkdir()
        rng = np.random.default_rng(0)
        vol = (rng.normal(300, 80, (256, 256, 130)).clip(0)).astype(np.int16)
        for i in range(args.subjects):
            nib.save(nib.Nifti1Image(vol, np.eye(4)), src / f"IXI{i:03d}-HH-{1000 + i}-T2.nii.gz")
        tar = tar_of(src, tmp / "IXI-T2.tar")
        size = tar.stat().st_size / 2**20
        t = time.perf_counter()
        normalise.from_archives("ixi", [tar], tmp / "raw", "healthy")
        dt = time.perf_counter() - t
        print(f"IXI tar ({args.subjects} subjects, {size:.0f} MB) -> raw: {dt:.2f} s "
              f"({dt / args.subjects * 1000:.0f} ms/subject; the full 578-subject tar ~{dt / args.subjects * 578:.0f} s)")
    server.shutdown()


if __name__ == "__main__":
    main()
