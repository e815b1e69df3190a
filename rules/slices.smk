# Stage: splits and slices (docs/splits-and-slices.md). Split sheets per data set in the original CSV
# layout, checked for duplicates, leakage and missing files; then one array file per (data set, split) on
# the model grid.


include: "helpers/slices.smk"


# Seconds of work each: on a cluster, queueing them would cost more than running them on the head node.
localrules:
    splits,
    split_defects,
    slices_preview,


# Every setting that changes a sheet: changing one reruns the sheets and the slices, nothing upstream.
SPLIT_PARAMS = dict(
    ds=lambda wc: wc.ds,
    anomalous=lambda wc: is_anomalous(wc.ds),
    files=lambda wc: None if authors_sheets(wc.ds) else subject_files(wc.ds),
    authors=lambda wc: authors_sheets(wc.ds),
    root=lambda wc: ds_cfg(wc.ds)["path"],
    kind=lambda wc: ds_cfg(wc.ds)["kind"],
    folds=config["splits"]["folds"],
    val_fraction=config["splits"]["val_fraction"],
    test_fraction=config["splits"]["healthy_test_fraction"],
    anomalous_val_fraction=lambda wc: anomalous_val_fraction(wc.ds),
    seed=config["seed"],
    drop_defects=config["splits"]["drop_defects"],
)


# One job per sheet: a data set's sheet names depend on its role, which an output list cannot. Every
# job derives the same seeded assignment (cheap: no image is read) and writes its own sheet.
rule splits:
    input:
        unpack(splits_input),
    output:
        artefacts.SPLIT_SHEET,
    log:
        log("splits", "{ds}_{split}"),
    wildcard_constraints:
        split=artefacts.SPLIT_PATTERN,
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        **SPLIT_PARAMS,
    script:
        "../workflow_scripts/splits.py"


use rule splits as split_defects with:
    output:
        report(
            artefacts.SPLIT_DEFECTS,
            caption="../report/splits_defects.rst",
            category="3. Splits and slices",
            subcategory="{ds}",
            labels={"data set": "{ds}", "table": "split sheet defects"},
        ),
    log:
        log("splits", "{ds}_defects"),


rule slices:
    input:
        sheet=artefacts.SPLIT_SHEET,
        # superset of the sheet's rows: the job reads the sheet to pick them
        preprocessed=subject_inputs,
    output:
        artefacts.SLICES,
    log:
        log("slices", "{ds}_{split}"),
    benchmark:
        bench("slices", "{ds}_{split}")
    wildcard_constraints:
        split=artefacts.SPLIT_PATTERN,
    conda:
        "../envs/preprocess.yaml"
    threads: 2
    resources:
        mem_mb=slices_mem_mb,
        runtime=lambda wc: 10 + 2 * len(subjects(wc.ds)),
    params:
        fov_mm=config["slices"]["fov_mm"],
        target_spacing_mm=config["slices"]["target_spacing_mm"],
        percentiles=config["slices"]["percentiles"],
        time_step=config["slices"]["curvature_flow"]["time_step"],
        iterations=config["slices"]["curvature_flow"]["iterations"],
        clip_output=config["slices"]["clip_output"],
    script:
        "../workflow_scripts/slices.py"


rule slices_preview:
    input:
        artefacts.SLICES,
    output:
        report(
            artefacts.SLICES_PREVIEW,
            caption="../report/splits_slices_preview.rst",
            category="3. Splits and slices",
            subcategory="{ds}",
            labels={"data set": "{ds}", "figure": "slices of {split}"},
        ),
    log:
        log("slices_preview", "{ds}_{split}"),
    wildcard_constraints:
        split=artefacts.SPLIT_PATTERN,
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        max_subjects=4,
    script:
        "../workflow_scripts/slices_preview.py"


for _ds in DATASETS:
    TARGETS.append(fill(artefacts.SPLIT_DEFECTS, ds=_ds))
    TARGETS.extend(fill(artefacts.SPLIT_SHEET, ds=_ds, split=s) for s in split_names(_ds))
    TARGETS.extend(fill(artefacts.SLICES, ds=_ds, split=s) for s in slice_splits(_ds))
    TARGETS.append(
        fill(artefacts.SLICES_PREVIEW, ds=_ds, split="test")
    )  # one look per data set, in the report
