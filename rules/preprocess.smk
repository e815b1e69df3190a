# Stage: preprocess (docs/preprocessing.md). Per subject: resample -> skull strip -> register -> crop -> N4,
# then QC.
# Every setting that changes a result is a param, so changing it reruns exactly the affected stages.


include: "helpers/preprocess.smk"


PPCFG = config["preprocess"]


rule resample:
    input:
        unpack(raw_inputs),
    output:
        t2=fill(artefacts.RESAMPLED, key="t2"),
        seg=fill(artefacts.RESAMPLED, key="seg"),
    log:
        log("resample", "{ds}", "{sub}"),
    benchmark:
        bench("resample", "{ds}", "{sub}")
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        spacing_mm=PPCFG["spacing_mm"],
    script:
        "../workflow_scripts/resample.py"


rule skullstrip:
    input:
        # HD-BET v2's weights folder where that backend runs: the job reads it and never downloads
        unpack(hdbet_weights_input),
        t2=rules.resample.output.t2,
    output:
        t2=fill(artefacts.SKULLSTRIPPED, key="t2"),
        mask=fill(artefacts.SKULLSTRIPPED, key="mask"),
    log:
        log("skullstrip", "{ds}", "{sub}"),
    benchmark:
        bench("skullstrip", "{ds}", "{sub}")
    conda:
        skullstrip_env
    # one thread: the job's start-up and file I/O are serial, so subjects side by side (one per core)
    # finish sooner than one subject on two cores
    threads: 1
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        backend=lambda wc: skullstrip_backend(wc.ds),
        hdbet_mode=PPCFG["skullstrip"]["hdbet_mode"],
        tta=PPCFG["skullstrip"]["tta"],
        deepbet_size=PPCFG["skullstrip"]["deepbet_size"],
        deepbet_at_1mm=PPCFG["skullstrip"]["deepbet_at_1mm"],
        # the device does not change the result: read from the config by the script, so that changing
        # it reruns nothing
    script:
        "../workflow_scripts/skullstrip.py"


# The atlas brain on the working grid, once (each registration and QC job would resample it again).
rule atlas_grid:
    input:
        image=atlas_files()["image"],
        mask=atlas_files()["mask"],
    output:
        brain=atlas_grid_files()["image"],
        mask=atlas_grid_files()["mask"],
    log:
        log("atlas_grid"),
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        spacing_mm=PPCFG["spacing_mm"],
    script:
        "../workflow_scripts/atlas_grid.py"


rule register:
    input:
        t2=rules.skullstrip.output.t2,
        mask=rules.skullstrip.output.mask,
        # the segmentation comes straight from resampling: skull stripping never touches it
        seg=rules.resample.output.seg,
        atlas_image=atlas_grid_files()["image"],
        atlas_mask=atlas_grid_files()["mask"],
    output:
        **register_outputs(),
    log:
        log("register", "{ds}", "{sub}"),
    benchmark:
        bench("register", "{ds}", "{sub}")
    conda:
        "../envs/preprocess.yaml"
    # one ITK thread: with the fixed seed the transform is then bit-for-bit reproducible (two threads
    # gave a different affine on every run); subjects run side by side instead
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        transform=PPCFG["register"]["transform"],
        optimiser={k: v for k, v in PPCFG["register"].items() if k != "transform"},
        spacing_mm=PPCFG["spacing_mm"],
        seed=config["seed"],
    script:
        "../workflow_scripts/register.py"


rule crop:
    input:
        t2=rules.register.output.t2,
        mask=rules.register.output.mask,
        seg=rules.register.output.seg,
    output:
        t2=fill(artefacts.CROPPED, key="t2"),
        mask=fill(artefacts.CROPPED, key="mask"),
        seg=fill(artefacts.CROPPED, key="seg"),
    log:
        log("crop", "{ds}", "{sub}"),
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        margin_vox=PPCFG["crop"]["margin_vox"],
    script:
        "../workflow_scripts/crop.py"


rule n4:
    input:
        t2=rules.crop.output.t2,
        mask=rules.crop.output.mask,
        seg=rules.crop.output.seg,
    output:
        t2=fill(artefacts.PREPROCESSED, key="t2"),
        mask=fill(artefacts.PREPROCESSED, key="mask"),
        seg=fill(artefacts.PREPROCESSED, key="seg"),
    log:
        log("n4", "{ds}", "{sub}"),
    benchmark:
        bench("n4", "{ds}", "{sub}")
    conda:
        "../envs/preprocess.yaml"
    threads: 1  # as skullstrip: one subject per core
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        implementation=PPCFG["n4"]["implementation"],
        levels=PPCFG["n4"]["levels"],
        iterations=PPCFG["n4"]["iterations"],
        tolerance=PPCFG["n4"]["tolerance"],
        mask_sigma_mm=PPCFG["n4"]["mask_sigma_mm"],
        # the bias is fitted on a grid of about fit_spacing_mm, whatever the working spacing
        shrink_factor=max(1, round(PPCFG["n4"]["fit_spacing_mm"] / PPCFG["spacing_mm"])),
    script:
        "../workflow_scripts/n4.py"


rule qc_subject:
    input:
        unpack(qc_extra_inputs),
        resampled_t2=rules.resample.output.t2,
        skullstrip_mask=rules.skullstrip.output.mask,
        registered_t2=rules.register.output.t2,
        registered_mask=rules.register.output.mask,
        affine=rules.register.output.affine,
        cropped_t2=rules.crop.output.t2,
        final_t2=rules.n4.output.t2,
        final_mask=rules.n4.output.mask,
        final_seg=rules.n4.output.seg,
        atlas_image=atlas_grid_files()["image"],
        atlas_mask=atlas_grid_files()["mask"],
    output:
        png=report(
            artefacts.QC_FIGURE,
            category="2. Preprocessing QC",
            subcategory="{ds}",
            caption="../report/qc_subject.rst",
            labels={"data set": "{ds}", "subject": "{sub}"},
        ),
        row=artefacts.QC_ROW,
    log:
        log("qc_subject", "{ds}", "{sub}"),
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        spacing_mm=PPCFG["spacing_mm"],
    script:
        "../workflow_scripts/qc_subject.py"


rule qc_dataset:
    input:
        rows=lambda wc: [fill(artefacts.QC_ROW, ds=wc.ds, sub=s) for s in subjects(wc.ds)],
    output:
        tsv=report(
            artefacts.QC_SUMMARY,
            category="2. Preprocessing QC",
            subcategory="{ds}",
            caption="../report/qc_dataset.rst",
            labels={"data set": "{ds}", "table": "summary"},
        ),
    log:
        log("qc_dataset", "{ds}"),
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../workflow_scripts/qc_dataset.py"


# a function, so that a download data set's subjects are listed only once its checkpoint has run
for _ds in pp_datasets():
    TARGETS.append(fill(artefacts.QC_SUMMARY, ds=_ds))
    TARGETS.append(lambda wc, ds=_ds: [fill(artefacts.QC_FIGURE, ds=ds, sub=s) for s in subjects(ds)])
