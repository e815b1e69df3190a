# Stage: splits and slices. Split sheets per data set in the original CSV layout, checked for
# duplicates, leakage and missing files; each subject on the model grid once; then one array file per
# (data set, split) assembled from those.


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
    # the authors' published sheets, downloaded, on the raw route (split -> file)
    downloaded=lambda wc: authors_sheet_downloads(wc.ds),
    root=lambda wc: ds_cfg(wc.ds).get("path"),
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
        preprocessed=subject_inputs,
        # apart from the subjects, so that the downloaded sheets are planned before the download checkpoint
        authors=split_sheet_inputs,
    output:
        f"{RES}/splits/{{ds}}_{{split}}.csv",
    log:
        log("splits", "{ds}_{split}"),
    wildcard_constraints:
        split=SPLIT_PATTERN,
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
            f"{RES}/splits/{{ds}}_defects.tsv",
            caption="../report/splits_defects.rst",
            category="3. Splits and slices",
            subcategory="{ds}",
            labels={"data set": "{ds}", "table": "split sheet defects"},
        ),
    log:
        log("splits", "{ds}_defects"),


# Each subject is sliced once, whatever the splits and folds it is in; changing one subject re-slices
# only that subject (the split files of its data set are then reassembled, which is only I/O).
rule slice_subject:
    input:
        unpack(subject_slice_inputs),
    output:
        SUBJECT_SLICES,
    log:
        log("slice_subject", "{ds}", "{sub}"),
    benchmark:
        bench("slice_subject", "{ds}", "{sub}")
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=subject_slice_mem_mb,
        runtime=15,
    params:
        fov_mm=config["slices"]["fov_mm"],
        target_spacing_mm=config["slices"]["target_spacing_mm"],
        percentiles=config["slices"]["percentiles"],
        time_step=config["slices"]["curvature_flow"]["time_step"],
        iterations=config["slices"]["curvature_flow"]["iterations"],
        clip_output=config["slices"]["clip_output"],
    script:
        "../workflow_scripts/slice_subject.py"


# One split file from the sheet and the subjects' slice files: no slicing here, so no slicing setting
# is a param (they reach it through its inputs).
rule slices:
    input:
        sheet=f"{RES}/splits/{{ds}}_{{split}}.csv",
        # superset of the sheet's rows: the job reads the sheet to pick them
        subjects=lambda wc: subject_slices(wc.ds),
    output:
        f"{RES}/slices/{{ds}}_{{split}}.npz",
    log:
        log("slices", "{ds}_{split}"),
    benchmark:
        bench("slices", "{ds}_{split}")
    wildcard_constraints:
        split=SPLIT_PATTERN,
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=slices_mem_mb,
        runtime=lambda wc: 10 + subject_count(wc.ds) // 20,
    script:
        "../workflow_scripts/slices.py"


rule slices_preview:
    input:
        f"{RES}/slices/{{ds}}_{{split}}.npz",
    output:
        report(
            f"{RES}/slices/preview/{{ds}}_{{split}}.png",
            caption="../report/splits_slices_preview.rst",
            category="3. Splits and slices",
            subcategory="{ds}",
            labels={"data set": "{ds}", "figure": "slices of {split}"},
        ),
    log:
        log("slices_preview", "{ds}_{split}"),
    wildcard_constraints:
        split=SPLIT_PATTERN,
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
    TARGETS.append(f"{RES}/splits/{_ds}_defects.tsv")
    TARGETS.extend(f"{RES}/splits/{_ds}_{s}.csv" for s in split_names(_ds))
    TARGETS.extend(f"{RES}/slices/{_ds}_{s}.npz" for s in slice_splits(_ds))
    TARGETS.append(f"{RES}/slices/preview/{_ds}_test.png")  # one look per data set, in the report
