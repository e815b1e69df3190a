# Functions of rules/preprocess.smk (kept apart from the rules, as snakemake's linter asks).


def pp_datasets():
    """Data sets that pass through this stage (the authors' preprocessed layout skips it)."""
    return [ds for ds in DATASETS if ds_cfg(ds)["source"] != "preprocessed"]


def raw_inputs(wildcards):
    keys = ("t2", "seg") if is_anomalous(wildcards.ds) else ("t2",)
    return {k: fill(artefacts.RAW_IMAGE, ds=wildcards.ds, sub=wildcards.sub, key=k) for k in keys}


def atlas_files():
    atlas = atlas_outputs()
    return {"image": atlas[config["atlas"]["modality"]], "mask": atlas["mask"]}


def atlas_grid_files():
    """The atlas brain and mask on the working grid (rule atlas_grid), what registration and QC read."""
    return {"image": fill(artefacts.ATLAS_GRID, key="brain"), "mask": fill(artefacts.ATLAS_GRID, key="mask")}


def register_outputs():
    out = {k: fill(artefacts.REGISTERED, key=k) for k in ("t2", "mask", "seg")}
    out["affine"] = artefacts.REGISTER_AFFINE
    if PPCFG["register"]["transform"] == "SyN":
        out["warp"] = fill(artefacts.REGISTERED, key="warp")
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
        wc = {"ds": wildcards.ds, "sub": wildcards.sub}
        extra.update(
            truth_mask=fill(artefacts.DEMO_TRUTH, key="mask", **wc),
            truth_wm=fill(artefacts.DEMO_TRUTH, key="wm", **wc),
            truth_matrix=fill(artefacts.DEMO_TRUTH_MATRIX, **wc),
        )
    return extra
