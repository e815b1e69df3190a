"""A real single-node SLURM cluster on loopback, for tests (docs/cluster.md, "Testing the SLURM setup").

`slurm_cluster(workdir)` installs the Debian packages when they are missing (root + apt-get only),
starts munged, slurmctld and slurmd detached with a config of its own under `workdir`, waits until the
node is idle, yields a `Cluster`, and on exit, also on failure, cancels the jobs on this controller and
stops exactly the daemons it started, by pid. It never touches a SLURM it did not start: when the SLURM
ports are already taken it refuses (`SlurmNotInstallable`), and the caller skips with that reason.

Job state is polled with the plugin's `squeue` status mode (no accounting database needed): that holds
while MinJobAge >= 3 x slurm-init-seconds-before-status-checks. MinJobAge is an hour here, so that the
tests can read every attempt of a job (state, time limit, memory request) with squeue to the end.

The pytest fixture `cluster` (session scope, imported by tests/conftest.py) starts one cluster for all
SLURM tests; `slurm_profile` writes the shipped profile with this node's overlay and `run_profile` runs
snakemake with it, as a user would.

No cgroups here (TaskPlugin=task/none): SLURM records a job's memory request (`sbatch --mem`, shown by
`squeue %m`) but does not enforce it, so no job is ever killed for memory on this cluster.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from workflow_utils import REPO, SNAKEMAKE

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "munged"]
PORTS = (6817, 6818)  # slurmctld, slurmd
PARTITION = "debug"
# The config goes to SLURM's default path: the job steps (srun inside a batch job) read only that one,
# whatever SLURM_CONF said at submission. The marker tells ours apart from a real site config.
CONF_PATH = Path("/etc/slurm/slurm.conf")
MARKER = "# Written by tests/slurm_cluster.py"


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be started here; the message says why."""


class SlurmNotInstallable(SlurmUnavailable):
    """The packages are missing and cannot be installed here (the tests skip with this reason)."""


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)


def ensure_installed(timeout: int = 600) -> None:
    """Install the SLURM and munge packages with apt-get when a binary is missing."""
    missing = [b for b in BINARIES if not _which(b)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmNotInstallable(f"SLURM binaries missing ({', '.join(missing)}) and not root to install them")
    if not shutil.which("apt-get"):
        raise SlurmNotInstallable(f"SLURM binaries missing ({', '.join(missing)}) and no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        # A stale package list is the usual cause on a fresh machine: refresh once and retry.
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=timeout,
                       stdin=subprocess.DEVNULL)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SlurmNotInstallable(f"apt-get install {' '.join(PACKAGES)} failed:\n{proc.stderr[-2000:]}")
    still = [b for b in BINARIES if not _which(b)]
    if still:
        raise SlurmNotInstallable(f"installed {' '.join(PACKAGES)} but still missing: {', '.join(still)}")


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise SlurmUnavailable("cannot read MemTotal from /proc/meminfo")


SLURM_CONF = MARKER + """: a one-node cluster on loopback for the test suite.
ClusterName=pddpmtest
SlurmctldHost=localhost
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
# No cgroups on this machine kind: track processes by parent pid, no task confinement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# Finished jobs stay visible to squeue (the plugin's status mode, the tests) for an hour.
MinJobAge=3600
ReturnToService=2
MailProg=/bin/true
InactiveLimit=0
# At the time limit SLURM sends SIGTERM, then SIGKILL after KillWait seconds (as real clusters do).
KillWait=5
OverTimeLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    """A running cluster: `env` (SLURM_CONF) must be in the environment of every SLURM client call."""

    root: Path
    node: str
    partition: str = PARTITION
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(CONF_PATH)}

    def run(self, *cmd: str, check: bool = True, timeout: int = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller still knows (finished ones for MinJobAge), oldest first: id, name (the
        plugin's run ID), state, time limit, comment (`rule_<rule>_wildcards_...`), memory request."""
        out = self.run("squeue", "-h", "-t", "all", "-o", "%i|%j|%T|%l|%k|%m").stdout
        keys = ("id", "name", "state", "time_limit", "comment", "memory")
        jobs = [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines() if line]
        return sorted(jobs, key=lambda j: int(j["id"]))

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted([*self.root.glob("*.log"), *self.root.glob("*.out")]))


def _spawn(name: str, cmd: list[str], root: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a daemon detached: own session, no stdin, output to a log file, so it never holds the
    caller's terminal or pipes open."""
    log = open(root / f"{name}.out", "ab")  # noqa: SIM115 (kept open by the child only)
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
    finally:
        log.close()


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _wait(what: str, ok, timeout: float, cluster: Cluster | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ok():
            return
        time.sleep(0.3)
    raise SlurmUnavailable(f"timed out after {timeout:.0f} s waiting for {what}\n"
                           + (cluster.logs() if cluster else ""))


@contextlib.contextmanager
def slurm_cluster(root: Path, start_timeout: float = 60.0) -> Iterator[Cluster]:
    """Install if needed, start a one-node SLURM under `root`, yield it, stop what was started."""
    ensure_installed()
    busy = [p for p in PORTS if _port_in_use(p)]
    if busy:
        raise SlurmNotInstallable(f"ports {busy} are in use (another SLURM is running); not touching it")
    root = Path(root)
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    conf = CONF_PATH
    if conf.exists() and not conf.read_text().startswith(MARKER):
        raise SlurmNotInstallable(f"{conf} exists and is not ours (a configured SLURM); not touching it")
    cluster = Cluster(root=root, node=node)
    env = cluster.env
    procs: list[subprocess.Popen] = []
    try:
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(SLURM_CONF.format(d=root, ports=PORTS, node=node, cpus=os.cpu_count() or 1,
                                          mem=int(_mem_total_mb() * 0.9), partition=PARTITION))
        # munge authenticates every SLURM message. Reuse a munged that is already running (a system
        # one); otherwise start our own as user munge, with the socket directory /run (a tmpfs) lacks.
        socket_path = Path("/run/munge/munge.socket.2")
        if not (socket_path.exists() and subprocess.run(
                ["munge", "-n"], capture_output=True, stdin=subprocess.DEVNULL).returncode == 0):
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            if not Path("/etc/munge/munge.key").exists():
                subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
                shutil.chown("/etc/munge/munge.key", "munge", "munge")
            # setpriv execs munged in place, so the pid we keep is munged's own.
            procs.append(_spawn("munged", ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
                                           _which("munged"), "--foreground", "--force"], root, env))
            cluster.pids["munged"] = procs[-1].pid
            _wait("munged", lambda: socket_path.exists() and subprocess.run(
                ["munge", "-n"], capture_output=True, stdin=subprocess.DEVNULL).returncode == 0,
                  start_timeout)
        procs.append(_spawn("slurmctld", [_which("slurmctld"), "-D", "-c", "-f", str(conf)], root, env))
        cluster.pids["slurmctld"] = procs[-1].pid
        procs.append(_spawn("slurmd", [_which("slurmd"), "-D", "-N", node, "-f", str(conf)], root, env))
        cluster.pids["slurmd"] = procs[-1].pid

        def idle() -> bool:
            for p in procs:
                if p.poll() is not None:
                    raise SlurmUnavailable(f"{p.args[0]} exited with {p.returncode}\n{cluster.logs()}")
            proc = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=10)
            return proc.returncode == 0 and proc.stdout.strip() == "idle"

        _wait("the SLURM node to be idle", idle, start_timeout, cluster)
        yield cluster
    finally:
        if "slurmctld" in cluster.pids:
            # The jobs on this controller are ours (it was started here): end them before the daemons.
            with contextlib.suppress(Exception):
                cluster.run("scancel", "--full", "--user", "root", check=False, timeout=15)
                time.sleep(1)
        for proc in reversed(procs):
            _stop(proc)
        with contextlib.suppress(OSError):
            if conf.read_text().startswith(MARKER):
                conf.unlink()


# ---------------------------------------------------------------------------------------------- pytest
@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """One cluster for every SLURM test of the session, stopped at its end (also after failures)."""
    with contextlib.ExitStack() as stack:
        try:
            c = stack.enter_context(slurm_cluster(tmp_path_factory.mktemp("slurm")))
        except SlurmNotInstallable as err:
            # Only a machine that cannot install SLURM (or already runs one) skips; a daemon that
            # fails to start after installing is a failure (SlurmUnavailable propagates).
            print(f"SKIP SLURM tests: {err}")
            pytest.skip(f"SLURM not available here: {err}")
        yield c


SHIPPED = REPO / "profiles" / "slurm" / "config.yaml"
GPU_RULES = ("train", "infer")


def slurm_profile(dst: Path, cluster: Cluster, shipped: Path = SHIPPED, gpu: int = 0, partition: bool = True,
                  **overrides) -> Path:
    """The shipped profile plus this node's overlay, written to `dst/config.yaml`: its partition, fast
    status polling through squeue (no accounting database), GPU requests set to 0 (no GPU here), conda
    off (the venv runs the jobs), `cores` within the node's CPUs. `overrides` replace top-level keys
    (`set_resources={"train": {"runtime": ...}}` merges into that rule's entry)."""
    prof = yaml.safe_load(shipped.read_text())
    if partition:
        prof["default-resources"]["slurm_partition"] = cluster.partition
    for rule in GPU_RULES:
        res = prof["set-resources"][rule]
        res["gpu"] = gpu
        if not gpu:
            res.pop("cpus_per_gpu", None)
    prof.pop("software-deployment-method", None)
    prof.update({
        "cores": min(int(prof["cores"]), os.cpu_count() or 1),  # a group job must fit this node
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-status-command": "squeue",
        "slurm-keep-successful-logs": True,
        "latency-wait": 5,
    })
    for rule, res in overrides.pop("set_resources", {}).items():
        prof["set-resources"].setdefault(rule, {}).update(res)
    prof.update({k.replace("_", "-"): v for k, v in overrides.items()})
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return dst


def snakemake_cmd(workdir: Path, profile: Path, *args: str, snakefile: Path | None = None) -> list[str]:
    """snakemake with `profile`, as users run it (docs/cluster.md); the workflow reads `workdir`/config.yaml."""
    return [SNAKEMAKE, "-s", str(snakefile or REPO / "Snakefile"), "-d", str(workdir), "--profile", str(profile),
            *args]


def run_profile(workdir: Path, profile: Path, *args: str, snakefile: Path | None = None, env=None,
                timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(workdir, profile, *args, snakefile=snakefile), capture_output=True,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def minutes(limit: str) -> int:
    """squeue's %l ([D-]HH:MM:SS, MM:SS) -> minutes."""
    days, _, hms = limit.rpartition("-")
    parts = [int(p) for p in hms.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 1440 + parts[0] * 60 + parts[1] + (parts[2] > 0)


def megabytes(memory: str) -> int:
    """squeue's %m (`2000M`, `4G`) -> MB."""
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 ** 2}
    return round(float(memory[:-1]) * units[memory[-1]]) if memory[-1] in units else int(memory)
