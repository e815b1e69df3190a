# Stage: preprocess (issue 3). Per subject: resample -> skull strip -> register -> crop -> N4, then QC.
# Every setting that changes a result is a param, so changing it reruns exactly the affected stages.

PP = f"{RES}/preprocess"
PPCFG = config["preprocess"]


def pp_datasets():
    """Data sets that pass through this stage (the authors' preprocessed layout skips it)."""
    return [ds for ds in DATASETS if ds_cfg(ds)["source"] != "preprocessed"]


def raw_inputs(wildcards):
    files = {"t2": f"data/raw/{wildcards.ds}/{wildcards.sub}_t2.nii.gz"}
    if is_anomalous(wildcards.ds):
        files["seg"] = f"data/raw/{wildcards.ds}/{wildcards.sub}_seg.nii.gz"
    return files


def atlas_files():
    return {"image": f"resources/atlas/{config['atlas']['modality']}.nii.gz",
            "mask": "resources/atlas/mask.nii.gz"}


def register_outputs():
    out = {k: f"{PP}/{{ds}}/3_registered/{{sub}}_{k}.nii.gz" for k in ("t2", "mask", "seg")}
    out["affine"] = f"{PP}/{{ds}}/3_registered/{{sub}}_affine.mat"
    if PPCFG["register"]["transform"] == "SyN":
        out["warp"] = f"{PP}/{{ds}}/3_registered/{{sub}}_warp.nii.gz"
    return out


def skullstrip_env(wildcards):
    # HD-BET v2 needs torch >= 2 with torchvision and nnU-Net: only in its own env
    return "../envs/hdbet.yaml" if skullstrip_backend(wildcards.ds) == "hdbet" else "../envs/preprocess.yaml"


def qc_extra_inputs(wildcards):
    """The SyN warp when there is one, and the demo's ground truth where the data set has one."""
    extra = {}
    if "warp" in register_outputs():
        extra["warp"] = register_outputs()["warp"].format(ds=wildcards.ds, sub=wildcards.sub)
    if ds_cfg(wildcards.ds)["source"] == "demo":
        t = f"data/raw/{wildcards.ds}/truth/{wildcards.sub}"
        extra.update(truth_mask=f"{t}_mask.nii.gz", truth_wm=f"{t}_wm.nii.gz",
                     truth_matrix=f"{t}_native_to_atlas.txt")
    return extra


rule resample:
    input:
        unpack(raw_inputs),
    output:
        t2=f"{PP}/{{ds}}/1_resampled/{{sub}}_t2.nii.gz",
        seg=f"{PP}/{{ds}}/1_resampled/{{sub}}_seg.nii.gz",
    params:
        spacing_mm=PPCFG["spacing_mm"],
    log:
        log("resample", "{ds}", "{sub}"),
    benchmark:
        bench("resample", "{ds}", "{sub}")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    conda:
        "../envs/preprocess.yaml"
    script:
        "../workflow_scripts/resample.py"


rule skullstrip:
    input:
        t2=rules.resample.output.t2,
    output:
        t2=f"{PP}/{{ds}}/2_skullstripped/{{sub}}_t2.nii.gz",
        mask=f"{PP}/{{ds}}/2_skullstripped/{{sub}}_mask.nii.gz",
    params:
        backend=lambda wc: skullstrip_backend(wc.ds),
        hdbet_mode=PPCFG["skullstrip"]["hdbet_mode"],
        tta=PPCFG["skullstrip"]["tta"],
        # device and weights_dir do not change the result: read from the config by the script, so that
        # changing them reruns nothing
    log:
        log("skullstrip", "{ds}", "{sub}"),
    benchmark:
        bench("skullstrip", "{ds}", "{sub}")
    threads: 2
    resources:
        mem_mb=6000,
        runtime=30,
    conda:
        skullstrip_env
    script:
        "../workflow_scripts/skullstrip.py"


rule register:
    input:
        t2=rules.skullstrip.output.t2,
        mask=rules.skullstrip.output.mask,
        # the segmentation comes straight from resampling: skull stripping never touches it
        seg=rules.resample.output.seg,
        atlas_image=atlas_files()["image"],
        atlas_mask=atlas_files()["mask"],
    output:
        **register_outputs(),
    params:
        transform=PPCFG["register"]["transform"],
        spacing_mm=PPCFG["spacing_mm"],
        seed=config["seed"],
    log:
        log("register", "{ds}", "{sub}"),
    benchmark:
        bench("register", "{ds}", "{sub}")
    # one ITK thread: with the fixed seed the transform is then bit-for-bit reproducible (two threads
    # gave a different affine on every run); subjects run side by side instead
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    conda:
        "../envs/preprocess.yaml"
    script:
        "../workflow_scripts/register.py"


rule crop:
    input:
        t2=rules.register.output.t2,
        mask=rules.register.output.mask,
        seg=rules.register.output.seg,
    output:
        t2=f"{PP}/{{ds}}/4_cropped/{{sub}}_t2.nii.gz",
        mask=f"{PP}/{{ds}}/4_cropped/{{sub}}_mask.nii.gz",
        seg=f"{PP}/{{ds}}/4_cropped/{{sub}}_seg.nii.gz",
    params:
        margin_vox=PPCFG["crop"]["margin_vox"],
    log:
        log("crop", "{ds}", "{sub}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../envs/preprocess.yaml"
    script:
        "../workflow_scripts/crop.py"


rule n4:
    input:
        t2=rules.crop.output.t2,
        mask=rules.crop.output.mask,
        seg=rules.crop.output.seg,
    output:
        t2=f"{PP}/{{ds}}/5_n4/{{sub}}_t2.nii.gz",
        mask=f"{PP}/{{ds}}/5_n4/{{sub}}_mask.nii.gz",
        seg=f"{PP}/{{ds}}/5_n4/{{sub}}_seg.nii.gz",
    params:
        implementation=PPCFG["n4"]["implementation"],
        levels=PPCFG["n4"]["levels"],
        iterations=PPCFG["n4"]["iterations"],
        tolerance=PPCFG["n4"]["tolerance"],
        mask_sigma_mm=PPCFG["n4"]["mask_sigma_mm"],
        # the bias is fitted on a grid of about fit_spacing_mm, whatever the working spacing
        shrink_factor=max(1, round(PPCFG["n4"]["fit_spacing_mm"] / PPCFG["spacing_mm"])),
    log:
        log("n4", "{ds}", "{sub}"),
    benchmark:
        bench("n4", "{ds}", "{sub}")
    threads: 2
    resources:
        mem_mb=3000,
        runtime=20,
    conda:
        "../envs/preprocess.yaml"
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
        atlas_image=atlas_files()["image"],
        atlas_mask=atlas_files()["mask"],
    output:
        png=report(f"{RES}/qc/{{ds}}/{{sub}}.png", category="2. Preprocessing QC",
                   subcategory="{ds}", caption="../report/qc_subject.rst",
                   labels={"data set": "{ds}", "subject": "{sub}"}),
        row=f"{RES}/qc/{{ds}}/rows/{{sub}}.tsv",
    params:
        spacing_mm=PPCFG["spacing_mm"],
    log:
        log("qc_subject", "{ds}", "{sub}"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/preprocess.yaml"
    script:
        "../workflow_scripts/qc_subject.py"


rule qc_dataset:
    input:
        rows=lambda wc: expand(f"{RES}/qc/{wc.ds}/rows/{{sub}}.tsv", sub=subjects(wc.ds)),
    output:
        tsv=report(f"{RES}/qc/{{ds}}/summary.tsv", category="2. Preprocessing QC", subcategory="{ds}",
                   caption="../report/qc_dataset.rst", labels={"data set": "{ds}", "table": "summary"}),
    log:
        log("qc_dataset", "{ds}"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/preprocess.yaml"
    script:
        "../workflow_scripts/qc_dataset.py"


for _ds in pp_datasets():
    TARGETS.append(f"{RES}/qc/{_ds}/summary.tsv")
    TARGETS.extend(f"{RES}/qc/{_ds}/{_sub}.png" for _sub in subjects(_ds))
