"""Run the real workflow from tests: snakemake in a temporary directory with a test config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"


def write_config(workdir: Path, overrides: dict | None = None, base: Path = TINY_CONFIG) -> Path:
    """Copy a test config into `workdir`, with nested `overrides` merged in."""
    config = yaml.safe_load(base.read_text())
    _merge(config, overrides or {})
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def merge_configs(*paths: Path) -> dict:
    """The config that `--configfile a.yaml b.yaml` gives: later files merged into earlier ones (nested
    mappings merged, everything else replaced, as snakemake does)."""
    config: dict = {}
    for path in paths:
        _merge(config, yaml.safe_load(Path(path).read_text()))
    return config


def _merge(base: dict, over: dict) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1500,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """Run snakemake on the repo's Snakefile with `workdir` as working directory and its config.yaml."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-6000:]}\n{proc.stderr[-12000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Job counts per rule of a dry run (`rule -> count`); empty when nothing is to be done."""
    proc = snakemake(workdir, "-n", *args, "--quiet", "rules")
    counts: dict[str, int] = {}
    in_table = False
    for line in (proc.stdout + proc.stderr).splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] != "total":
                    counts[parts[0]] = int(parts[1])
            elif parts and not set(parts[0]) <= {"-"}:
                in_table = False
    return counts


def copy_run(src: Path, dst: Path) -> Path:
    """Copy a finished run (outputs, mtimes and .snakemake metadata) to try changes on it."""
    shutil.copytree(src, dst, symlinks=True)
    return dst
