# Functions of rules/data.smk (kept apart from the rules, as snakemake's linter asks).
import functools
import os
import re
from pddpm.data import authors_splits as data_authors
from pddpm.data import brats as data_brats
from pddpm.data import download as data_download
from pddpm.data import local as data_local
from pddpm.data import preprocessed_layout as data_prep
from pddpm.data.raw import read_subjects_tsv, subjects_table
from pddpm.errors import PddpmInputError
from snakemake.exceptions import IncompleteCheckpointException


def _datasets_of(source):
    return [ds for ds in DATASETS if ds_cfg(ds)["source"] == source]


def _one_of(names):
    """Wildcard regex matching exactly `names` (nothing at all when empty), so these rules never
    compete with the demo's rules for the same files."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


@functools.cache
def _source_files(source):
    return data_download.source_files(source, DOWNLOADS)


@functools.cache
def _local_subjects(ds):
    """Subjects of a local folder, listed once per DAG build (errors name the folder and the pattern)."""
    cfg = ds_cfg(ds)
    try:
        return {s.subject: s for s in data_local.scan(cfg["path"], cfg["kind"], cfg["role"])}
    except PddpmInputError as exc:
        raise WorkflowError(f"datasets.{ds}.path (source local, kind {cfg['kind']}): {exc}") from None


@functools.cache
def _prep_files(ds):
    cfg = ds_cfg(ds)
    try:
        return data_prep.files(cfg["path"], cfg["kind"])
    except PddpmInputError as exc:
        raise WorkflowError(f"datasets.{ds} (source preprocessed, kind {cfg['kind']}): {exc}") from None


def data_subjects(ds):
    """Subject ids of a non-demo data set. For `download` they are known only after the download:
    call this inside input functions (it raises Snakemake's IncompleteCheckpointException until then)."""
    source = ds_cfg(ds)["source"]
    if source == "local":
        return list(_local_subjects(ds))
    if source == "preprocessed":
        return list(_prep_files(ds))
    if source == "download":
        return read_subjects_tsv(checkpoints.download_raw.get(ds=ds).output[0])
    raise WorkflowError(f"datasets.{ds}: unknown source '{source}'")


def subject_count(ds, pending=1):
    """How many subjects `ds` has, for resource estimates; `pending` while its download checkpoint has
    not run. Snakemake 9.27 cannot take the checkpoint's exception from a resource function (it turns it
    into a bare 0 and a dry run fails with "'int' object has no attribute 'constrain'"); the job is
    re-evaluated with the real count once the checkpoint is done."""
    try:
        return len(subjects(ds))
    except IncompleteCheckpointException:
        return pending


def preprocessed_layout_files(ds, sub):
    """{'t2', 'mask'[, 'seg' for anomalous sets]} -> path in the authors' package, read in place."""
    files = _prep_files(ds)
    if sub not in files:
        raise WorkflowError(f"datasets.{ds}: no subject '{sub}' in {ds_cfg(ds)['path']}")
    return {k: str(p) for k, p in files[sub].items()}


def preprocessed_layout_sheets(ds):
    """The authors' split sheets of `ds` ({split: DataFrame}, paths absolute and rewritten to t2)."""
    return data_prep.split_sheets(ds_cfg(ds)["path"], ds_cfg(ds)["kind"])


# ------------------------------------------------------------------ split sources (rules/slices.smk)


def split_source(ds):
    """Where the sheets of `ds` come from: 'package' (the authors' preprocessed layout holds its sheets),
    'authors' (the authors' published sheets, downloaded) or 'seeded' (drawn here)."""
    cfg = ds_cfg(ds)
    chosen = cfg.get("split_source") or config["splits"]["source"]
    if cfg["source"] == "preprocessed":
        return "seeded" if cfg.get("split_source") == "seeded" else "package"
    if chosen == "authors" and cfg["source"] == "demo":
        raise WorkflowError(
            f"datasets.{ds}: split source 'authors' (splits.source or datasets.{ds}.split_source) fits only the "
            f"real {cfg['kind']} data, not the demo cohort; set datasets.{ds}.split_source: seeded"
        )
    if chosen == "authors" and not is_anomalous(ds):
        have = data_authors.folds_available(cfg["kind"])
        if config["splits"]["folds"] > have:
            raise WorkflowError(
                f"splits.folds: {config['splits']['folds']}, but the authors' sheets of datasets.{ds} have "
                f"{have} folds; use splits.folds <= {have} or datasets.{ds}.split_source: seeded"
            )
    return chosen


def authors_sheet_downloads(ds):
    """{split: downloaded authors' sheet} of a data set split by the authors' published sheets, else {}."""
    if split_source(ds) != "authors":
        return {}
    kind = ds_cfg(ds)["kind"]
    return {s: f"{DL_DIR}/{data_authors.SOURCE}/{data_authors.sheet_file(kind, s)}" for s in split_names(ds)}


# ------------------------------------------------------------------ HD-BET v2 weights (rule skullstrip)


def hdbet_download_needed():
    """Some data set is skull-stripped with HD-BET v2 and no folder of weights is given."""
    uses = any(
        skullstrip_backend(ds) == "hdbet" for ds in DATASETS if ds_cfg(ds)["source"] != "preprocessed"
    )
    return uses and not config["preprocess"]["skullstrip"]["weights_dir"]


def hdbet_weights_input(wildcards):
    """The weights folder of HD-BET v2 as an input of the skull-strip job (which never downloads): the
    configured folder, or the one rule hdbet_weights fills."""
    if skullstrip_backend(wildcards.ds) != "hdbet":
        return {}
    return {"weights": config["preprocess"]["skullstrip"]["weights_dir"] or HDBET_DIR}
