# Functions of rules/preprocess.smk (kept apart from the rules, as snakemake's linter asks).


def pp_datasets():
    """Data sets that pass through this stage (the authors' preprocessed layout skips it)."""
    return [ds for ds in DATASETS if ds_cfg(ds)["source"] != "preprocessed"]


def raw_inputs(wildcards):
    files = {"t2": f"data/raw/{wildcards.ds}/{wildcards.sub}_t2.nii.gz"}
    if is_anomalous(wildcards.ds):
        files["seg"] = f"data/raw/{wildcards.ds}/{wildcards.sub}_seg.nii.gz"
    return files


def atlas_files():
    return {
        "image": f"resources/atlas/{config['atlas']['modality']}.nii.gz",
        "mask": "resources/atlas/mask.nii.gz",
    }


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
        extra.update(
            truth_mask=f"{t}_mask.nii.gz", truth_wm=f"{t}_wm.nii.gz", truth_matrix=f"{t}_native_to_atlas.txt"
        )
    return extra
