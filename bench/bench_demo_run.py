"""Where a workflow run's wall time went, by rule: what `make demo` spends on work and on job start-up.

    .venv/bin/python bench/bench_demo_run.py RUN_DIR            # a finished run (e.g. the repo after make demo)
    .venv/bin/python bench/bench_demo_run.py --fresh [CORES]    # run the demo in a new temp dir first, timed

Reads the run's newest Snakemake log (.snakemake/log/) for when each job started and finished, and its
benchmark files (results/benchmarks/, one per job: the job process's seconds and CPU seconds). Per rule it
prints the jobs, the seconds Snakemake held a core for them (log), the seconds their processes ran
(benchmark `s`: interpreter start, imports and work), and their CPU seconds; then the run's wall time,
the core-seconds it had, and what of those no job process used (scheduling, idle cores while waiting
on a long job). The gap between a rule's process seconds and its CPU seconds is mostly waiting for a
core another job held; the import cost per job is printed by `--imports`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def job_times(log: Path) -> pd.DataFrame:
    """jobid, rule, start, end (datetime) of every finished job in a Snakemake log."""
    stamp, rule, starts, rows = None, None, {}, []
    for line in log.read_text().splitlines():
        if m := STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := RULE.match(line):
            rule = m.group(1)
        elif (m := JOBID.match(line)) and rule:
            starts[int(m.group(1))] = (rule, stamp)
            rule = None
        elif m := FINISHED.match(line):
            jid = int(m.group(1))
            r, start = starts.get(jid, (m.group(2), stamp))
            rows.append({"jobid": jid, "rule": r, "start": start, "end": stamp})
    return pd.DataFrame(rows)


def benchmarks(run: Path) -> pd.DataFrame:
    rows = []
    for f in (run / "results/benchmarks").rglob("*.tsv"):
        b = pd.read_csv(f, sep="\t").iloc[-1]
        rows.append({"rule": f.relative_to(run / "results/benchmarks").parts[0], "s": float(b["s"]),
                     "cpu": float(b.get("cpu_time", float("nan")))})
    return pd.DataFrame(rows, columns=["rule", "s", "cpu"])


def report(run: Path, cores: int, wall: float | None = None) -> None:
    logs = sorted((run / ".snakemake/log").glob("*.snakemake.log"))
    if not logs:
        sys.exit(f"{run}: no .snakemake/log/*.snakemake.log; give the directory a workflow ran in")
    # the newest log that ran jobs (a report build or a no-change rerun writes a log without any)
    jobs = next((j for j in map(job_times, reversed(logs)) if not j.empty), None)
    if jobs is None:
        sys.exit(f"{run}/.snakemake/log: no log with finished jobs")
    jobs["held"] = (jobs["end"] - jobs["start"]).dt.total_seconds()
    span = (jobs["end"].max() - jobs["start"].min()).total_seconds()
    wall = wall or span
    bench = benchmarks(run).groupby("rule").agg(process_s=("s", "sum"), cpu_s=("cpu", "sum"))
    table = jobs.groupby("rule").agg(jobs=("jobid", "count"), held_s=("held", "sum"), first=("start", "min"),
                                     last=("end", "max"))
    table = table.join(bench, how="left").sort_values("first")
    table["first"] = (table["first"] - jobs["start"].min()).dt.total_seconds().astype(int)
    table["last"] = (table["last"] - jobs["start"].min()).dt.total_seconds().astype(int)
    pd.set_option("display.width", 160)
    print(table.round(1).to_string())
    tot = table[["jobs", "held_s", "process_s", "cpu_s"]].sum()
    print(f"\n{int(tot['jobs'])} jobs; wall {wall:.0f} s ({wall / 60:.1f} min) on {cores} cores = {cores * wall:.0f} "
          f"core-s; held by jobs {tot['held_s']:.0f} s, job processes ran {tot['process_s']:.0f} s "
          f"(CPU {tot['cpu_s']:.0f} s); per job: held {tot['held_s'] / tot['jobs']:.1f} s, "
          f"process {tot['process_s'] / tot['jobs']:.1f} s")
    print(f"core-seconds no job process used: {cores * wall - tot['process_s']:.0f} "
          f"({100 * (1 - tot['process_s'] / (cores * wall)):.0f} %)")


def import_costs() -> None:
    """Seconds a fresh interpreter needs for each job script's module-level imports."""
    for script in sorted((REPO / "workflow_scripts").glob("*.py")):
        imports = [ln for ln in script.read_text().splitlines() if ln.startswith(("import ", "from "))]
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "\n".join(imports)], check=True, cwd=REPO)
        print(f"{script.stem:20} {time.perf_counter() - t:5.2f} s")


def main(argv: list[str]) -> None:
    if argv[:1] == ["--imports"]:
        return import_costs()
    if argv[:1] == ["--fresh"]:
        cores = int(argv[1]) if len(argv) > 1 else 2
        run = Path(tempfile.mkdtemp(prefix="pddpm_demo_"))
        snakemake = Path(sys.executable).with_name("snakemake")
        t = time.perf_counter()
        subprocess.run([str(snakemake), "-s", str(REPO / "Snakefile"), "-d", str(run), "--profile",
                        str(REPO / "profiles/local"), "--configfile", str(REPO / "config.yaml"), "--cores",
                        str(cores), "--quiet", "rules"], check=True, cwd=REPO)
        wall = time.perf_counter() - t
        print(f"fresh demo run in {run}: {wall:.0f} s")
        return report(run, cores, wall)
    if not argv:
        sys.exit(__doc__)
    report(Path(argv[0]), int(argv[1]) if len(argv) > 1 else 2)


if __name__ == "__main__":
    main(sys.argv[1:])
