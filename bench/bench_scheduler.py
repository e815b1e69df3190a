"""What Snakemake's own process costs while jobs wait for cores: its CPU seconds per rate-limit setting.

    .venv/bin/python bench/bench_scheduler.py [SETTING ...]     # default: 100/1s (Snakemake's) and profiles/local's

A synthetic workflow shaped like the demo's training phase: 100 short jobs, then two 30 s jobs that hold
both cores while 20 ready jobs wait for them. Snakemake arms a timer of the rate limit's timespan after
every scheduling round, and each timer's firing starts another round, so the rounds per second grow
with every job finished; with many jobs ready, each round costs. Prints, per `--max-jobs-per-timespan`
setting, the snakemake process's own CPU seconds (its job processes excluded) and the wall time (a
longer timespan may keep the process alive up to one timespan after the last job, waiting for its timer).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = textwrap.dedent("""
    rule all:
        input: expand("o{i}.txt", i=range(100)), expand("w{i}.txt", i=range(20)), "l0.txt", "l1.txt"
    rule short:
        output: "o{i}.txt"
        shell: "sleep 0.2; touch {output}"
    rule long:
        input: expand("o{i}.txt", i=range(100))
        output: "l{j}.txt"
        priority: 10
        shell: "sleep 30; touch {output}"
    rule waiting:
        input: expand("o{i}.txt", i=range(100))
        output: "w{i}.txt"
        shell: "sleep 0.2; touch {output}"
""")
# runs snakemake in a child interpreter that reports its own CPU time, apart from its jobs'
DRIVER = ("import resource, sys; from snakemake.cli import main\n"
          "sys.argv = ['snakemake'] + sys.argv[1:]\n"
          "try:\n    main()\nexcept SystemExit:\n    pass\n"
          "r = resource.getrusage(resource.RUSAGE_SELF)\n"
          "print('SELF_CPU', r.ru_utime + r.ru_stime, file=sys.stderr)\n")


def measure(setting: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "Snakefile").write_text(SNAKEFILE)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", DRIVER, "--cores", "2", "--scheduler", "greedy", "--quiet",
                               "--max-jobs-per-timespan", setting], cwd=d, capture_output=True, text=True,
                              check=True)
        wall = time.perf_counter() - t0
    cpu = next(float(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("SELF_CPU"))
    return cpu, wall


def main(settings: list[str]) -> None:
    if not settings:
        local = yaml.safe_load((REPO / "profiles/local/config.yaml").read_text())
        settings = ["100/1s", local["max-jobs-per-timespan"]]
    print("# synthetic workflow: 122 jobs on 2 cores, 20 ready jobs waiting 30 s")
    for s in settings:
        cpu, wall = measure(s)
        print(f"  --max-jobs-per-timespan {s:>8}: snakemake's own CPU {cpu:5.1f} s, wall {wall:5.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
