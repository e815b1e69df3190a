"""Catch profile mistakes that Snakemake and the SLURM plugin accept silently.

Any resource name is a valid custom resource to Snakemake, and the SLURM plugin passes only the names it
knows to sbatch: `gpus: 1` (for `gpu: 1`) or `time: 60` (for `runtime: 60`) in a profile would quietly
give a training job no GPU or the partition's default time limit. Likewise `set-resources` for a rule
that does not exist (a typo) is ignored. These checks turn both into an error before any job starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from pddpm.errors import PddpmInputError

# Standard Snakemake resources (https://snakemake.readthedocs.io, "Resources").
SNAKEMAKE_RESOURCES = {"mem", "mem_mb", "mem_mib", "disk", "disk_mb", "disk_mib", "runtime", "tmpdir",
                       "threads", "_cores", "_nodes", "gpu", "gpu_model", "gpu_manufacturer"}
# What snakemake-executor-plugin-slurm 2.x turns into sbatch options.
SLURM_RESOURCES = {"slurm_partition", "slurm_account", "slurm_extra", "slurm_cluster", "cluster", "clusters",
                   "mem_mb_per_cpu", "cpus_per_task", "cpus_per_gpu", "tasks", "tasks_per_gpu",
                   "tasks_per_node", "nodes", "mpi", "constraint", "qos", "gres"}
KNOWN_RESOURCES = SNAKEMAKE_RESOURCES | SLURM_RESOURCES


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else "."


def check_resource_names(default_resources: Mapping | None, set_resources: Mapping[str, Mapping] | None,
                         extra_known: Iterable[str] = ()) -> None:
    """Raise PddpmInputError for a profile resource name neither Snakemake nor the SLURM plugin knows.

    `default_resources` and `set_resources` are what the run was given (`workflow.resource_settings.
    default_resources`, `.overwrite_resources`); `extra_known`: custom resources the workflow declares."""
    known = KNOWN_RESOURCES | set(extra_known)
    where = [("default-resources", default_resources or {})]
    where += [(f"set-resources: {rule}", res) for rule, res in (set_resources or {}).items()]
    for section, resources in where:
        for name in resources.keys():
            if name not in known:
                raise PddpmInputError(
                    f"profile {section}: unknown resource '{name}'{_hint(name, known)} Snakemake and the "
                    f"SLURM plugin ignore unknown names silently, so it would not reach sbatch. Known: "
                    f"{', '.join(sorted(known))}")


def check_set_resources_rules(set_resources: Mapping[str, Mapping] | None, rule_names: Iterable[str]) -> None:
    """Raise PddpmInputError for `set-resources` of a rule that is not in the workflow."""
    rules = set(rule_names)
    for rule in (set_resources or {}):
        if rule not in rules:
            raise PddpmInputError(f"profile set-resources: no rule named '{rule}' in this workflow"
                                  f"{_hint(rule, rules)} (its settings would be ignored)")
