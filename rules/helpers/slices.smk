# Functions of rules/slices.smk (kept apart from the rules, as snakemake's linter asks).
from pddpm.data.preprocessed_layout import SHEET_PREFIX as AUTHORS_SHEET_PREFIX
from pddpm.data.preprocessed_layout import data_root as authors_data_root


def subject_file(ds, sub):
    """{'t2', 'mask', 'seg'} preprocessed paths of one subject; a layout without a segmentation leaves it out."""
    return {k: v for k, v in preprocessed(ds, sub).items() if v}


def subject_files(ds):
    """subject -> subject_file(ds, subject)."""
    return {sub: subject_file(ds, sub) for sub in subjects(ds)}


def subject_slice_inputs(wildcards):
    return subject_file(wildcards.ds, wildcards.sub)


def subject_slices(ds):
    return [fill(artefacts.SUBJECT_SLICES, ds=ds, sub=sub) for sub in subjects(ds)]


def subject_inputs(wildcards):
    return sorted({p for files in subject_files(wildcards.ds).values() for p in files.values()})


def authors_sheets(ds):
    """The authors' sheets in their package (`{Data}/splits/{IXI,Brats21,MSLUB}_{split}.csv`) for a data
    set given in their layout (the job reads them with rules/data.smk's reader); None otherwise (the
    downloaded ones of the raw route: rules/helpers/data.smk authors_sheet_downloads)."""
    cfg = ds_cfg(ds)
    if split_source(ds) != "package":
        return None
    root = authors_data_root(cfg["path"])
    prefix = AUTHORS_SHEET_PREFIX[cfg["kind"]]
    return {s: str(root / "splits" / f"{prefix}_{s}.csv") for s in split_names(ds)}


def split_sheet_inputs(wildcards):
    """The authors' sheets a data set is split by: those of their package or the downloaded ones."""
    return list((authors_sheets(wildcards.ds) or authors_sheet_downloads(wildcards.ds)).values())


def anomalous_val_fraction(ds):
    return ds_cfg(ds)["val_fraction"] or config["splits"]["anomalous_val_fraction"]


def _grid_voxels():
    grid = 1
    for f in config["slices"]["fov_mm"]:
        grid *= max(1, round(f / config["slices"]["target_spacing_mm"]))
    return grid


def slices_mem_mb(wildcards, attempt):
    # the split arrays (float16 image + uint8 mask and seg per voxel) for every subject of the data set
    # (a superset of the split), plus one subject file; times the attempt, so that a job killed for
    # memory is resubmitted with more (docs/cluster.md, "Troubleshooting")
    return (1000 + int(subject_count(wildcards.ds) * _grid_voxels() * 4 * 1.2 / 2**20)) * attempt


def subject_slice_mem_mb(wildcards, attempt):
    # one subject at preprocessing resolution: the field of view at 1 mm in float32, a few copies;
    # times the attempt, as slices_mem_mb
    return (1000 + int(_grid_voxels() * config["slices"]["target_spacing_mm"] ** 3 * 4 * 8 / 2**20)) * attempt


def slice_splits(ds):
    """The splits used downstream: the training set's folds that run and its test set; anomalous val and
    test (threshold and evaluation)."""
    if is_anomalous(ds):
        return list(artefacts.ANOMALOUS_SPLITS)
    if ds != config["train_dataset"]:
        return ["test"]
    return artefacts.fold_splits(config["folds_to_run"]) + ["test"]
