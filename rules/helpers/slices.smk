# Functions of rules/slices.smk (kept apart from the rules, as snakemake's linter asks).
from pddpm.data.preprocessed_layout import SHEET_PREFIX as AUTHORS_SHEET_PREFIX
from pddpm.data.preprocessed_layout import data_root as authors_data_root


def subject_files(ds):
    """subject -> {'t2', 'mask', 'seg'} preprocessed paths; a layout without a segmentation leaves it out."""
    return {sub: {k: v for k, v in preprocessed(ds, sub).items() if v} for sub in subjects(ds)}


def subject_inputs(wildcards):
    return sorted({p for files in subject_files(wildcards.ds).values() for p in files.values()})


def authors_sheets(ds):
    """The authors' published sheets (`{Data}/splits/{IXI,Brats21,MSLUB}_{split}.csv`) for a data set
    given in their layout (the job reads them with rules/data.smk's reader); None for data we split."""
    cfg = ds_cfg(ds)
    if cfg["source"] != "preprocessed":
        return None
    root = authors_data_root(cfg["path"])
    prefix = AUTHORS_SHEET_PREFIX[cfg["kind"]]
    return {s: str(root / "splits" / f"{prefix}_{s}.csv") for s in split_names(ds)}


def splits_input(wildcards):
    sheets = authors_sheets(wildcards.ds) or {}
    return {"preprocessed": subject_inputs(wildcards), "authors": list(sheets.values())}


def anomalous_val_fraction(ds):
    return ds_cfg(ds)["val_fraction"] or config["splits"]["anomalous_val_fraction"]


def slices_mem_mb(wildcards):
    # the split arrays (float16 image + uint8 mask and seg per voxel) for every subject of the data set
    # (a superset of the split), plus one subject at preprocessing resolution
    grid = 1
    for f in config["slices"]["fov_mm"]:
        grid *= max(1, round(f / config["slices"]["target_spacing_mm"]))
    return 1500 + int(len(subjects(wildcards.ds)) * grid * 4 * 1.2 / 2**20)


def slice_splits(ds):
    """The splits used downstream: the training set's folds that run and its test set; anomalous val and
    test (threshold and evaluation)."""
    if is_anomalous(ds):
        return list(artefacts.ANOMALOUS_SPLITS)
    if ds != config["train_dataset"]:
        return ["test"]
    return artefacts.fold_splits(config["folds_to_run"]) + ["test"]
