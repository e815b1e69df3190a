# Shared helpers and input functions. Stage files append what `rule all` builds to TARGETS.
import os
import sys

# The workflow and its job scripts import the package `pddpm` from this checkout even where it is not
# installed (a fresh clone on a cluster, a rule's conda env): put the checkout on the import path of
# this process and, through PYTHONPATH, of every job it starts.
sys.path.insert(0, workflow.basedir)
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p)
)

# Every file between stages: its path pattern (and reader/writer) in pddpm/artefacts.py.
from pddpm import artefacts  # noqa: E402
from pddpm.artefacts import fill, one_of  # noqa: E402
from pddpm.demo import subject_ids as demo_subject_ids  # noqa: E402
from pddpm.models import KINDS  # noqa: E402

TARGETS = []
DATASETS = list(config["datasets"])


wildcard_constraints:
    ds=artefacts.DATASET_PATTERN,
    sub=artefacts.SUBJECT_PATTERN,
    fold=r"\d+",
    model=one_of(config["models"]),


def ds_cfg(ds):
    return config["datasets"][ds]


def subjects(ds):
    """Subject ids of data set `ds`: from the config for the demo, else from rules/data.smk."""
    cfg = ds_cfg(ds)
    if cfg["source"] == "demo":
        return demo_subject_ids(ds, cfg["n_subjects"])
    return data_subjects(ds)  # noqa: F821 (rules/data.smk)


def is_anomalous(ds):
    return ds_cfg(ds)["role"] == "anomalous"


def skullstrip_backend(ds):
    return ds_cfg(ds)["skullstrip"] or config["preprocess"]["skullstrip"]["backend"]


def log(rule, *parts):
    """results/logs/{rule}/{parts...}.log (artefacts.LOG): every rule logs."""
    return fill(artefacts.LOG, name=os.path.join(rule, *parts))


def bench(rule, *parts):
    return fill(artefacts.BENCHMARK, name=os.path.join(rule, *parts))


def split_names(ds):
    """Split sheets of a data set: k folds of train/val and a test set (healthy), val and test (anomalous)."""
    return artefacts.split_names(is_anomalous(ds), config["splits"]["folds"])


def preprocessed(ds, sub):
    """The final preprocessed files of one subject: {'t2', 'mask', 'seg'} -> path.

    Data sets given in the authors' preprocessed layout are read in place (rules/data.smk)."""
    if ds_cfg(ds)["source"] == "preprocessed":
        return preprocessed_layout_files(ds, sub)  # noqa: F821 (rules/data.smk)
    return {k: fill(artefacts.PREPROCESSED, ds=ds, sub=sub, key=k) for k in ("t2", "mask", "seg")}


def atlas_outputs():
    """resources/atlas/{t1,t2,mask}.nii.gz: the atlas rule's outputs (the demo stand-in or SRI24)."""
    return {k: fill(artefacts.ATLAS, key=k) for k in ("t1", "t2", "mask")}


def has_network(model):
    """Whether the model kind trains a network (pddpm.models.KINDS; not `thresh`, the intensity baseline)."""
    return KINDS[model].trained


def trained_models():
    """Models with a network to train."""
    return [m for m in config["models"] if has_network(m)]


def eval_datasets():
    """(data set, split) pairs that are inferred and evaluated: anomalous val+test, healthy test."""
    pairs = [(ds, s) for ds in DATASETS if is_anomalous(ds) for s in ("val", "test")]
    return pairs + [(config["train_dataset"], "test")]
