# pddpm-uad: raw MRI -> preprocessing -> pDDPM training -> patched inference -> the paper's tables.
# Thin entry point: configuration and validation here, everything else in rules/.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/demo.smk"
include: "rules/preprocess.smk"
include: "rules/slices.smk"
include: "rules/train.smk"
include: "rules/infer.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


# Every stage file appends its final outputs to TARGETS (see rules/common.smk).
rule all:
    default_target: True
    input:
        TARGETS,
