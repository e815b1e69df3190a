# Functions of rules/data.smk (kept apart from the rules, as snakemake's linter asks).
import functools
import os
from pddpm.artefacts import read_subjects_tsv
from pddpm.data import download as data_download
from pddpm.data import local as data_local
from pddpm.data import preprocessed_layout as data_prep
from pddpm.data.raw import subject_rows
from pddpm.errors import PddpmInputError


def _datasets_of(source):
    return [ds for ds in DATASETS if ds_cfg(ds)["source"] == source]


def _source_files(source):
    return data_download.source_files(source, DOWNLOADS)


@functools.cache
def _local_subjects(ds):
    """Subjects of a local folder, listed once per DAG build (errors name the folder and the pattern)."""
    cfg = ds_cfg(ds)
    try:
        return {s.subject: s for s in data_local.scan(cfg["path"], cfg["kind"], cfg["role"])}
    except PddpmInputError as exc:
        raise WorkflowError(f"datasets.{ds} (source local, kind {cfg['kind']}): {exc}") from None


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


def preprocessed_layout_files(ds, sub):
    """{'t2', 'mask'[, 'seg' for anomalous sets]} -> path in the authors' package, read in place."""
    files = _prep_files(ds)
    if sub not in files:
        raise WorkflowError(f"datasets.{ds}: no subject '{sub}' in {ds_cfg(ds)['path']}")
    return {k: str(p) for k, p in files[sub].items()}


def preprocessed_layout_sheets(ds):
    """The authors' split sheets of `ds` ({split: DataFrame}, paths absolute and rewritten to t2)."""
    return data_prep.split_sheets(ds_cfg(ds)["path"], ds_cfg(ds)["kind"])
