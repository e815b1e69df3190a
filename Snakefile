# pddpm-uad: raw MRI -> preprocessing -> pDDPM training -> patched inference -> the paper's tables.
# Thin entry point: configuration and validation here, everything else in rules/.
import sys

from snakemake.utils import min_version

min_version("9.0")


# `--configfile other.yaml` replaces the demo config instead of being merged into it (merging would
# mix the demo's data sets into a real run); `--config key=value` still overrides single keys.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# The one config check (pddpm/config_checks.py): the schema, then the checks across keys, every problem
# named with its key at once; it fills in the schema's defaults, the only place defaults live.
sys.path.insert(0, workflow.basedir)
from pddpm.config_checks import check_config  # noqa: E402

check_config(config)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/demo.smk"
include: "rules/preprocess.smk"
include: "rules/slices.smk"
include: "rules/train.smk"
include: "rules/infer.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


# Profile mistakes that Snakemake and the SLURM plugin accept silently (a misspelled resource name).
from pddpm.profile_check import check_resource_names, check_set_resources_rules  # noqa: E402

check_resource_names(
    workflow.resource_settings.default_resources, workflow.resource_settings.overwrite_resources
)
check_set_resources_rules(workflow.resource_settings.overwrite_resources, [r.name for r in workflow.rules])


# Every stage file appends its final outputs to TARGETS (see rules/common.smk).
rule all:
    default_target: True
    input:
        TARGETS,
