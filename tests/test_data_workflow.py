"""Real snakemake runs of the raw stage: a local folder of NIfTI files (linked, not copied) and a download
source served from 127.0.0.1 (checkpoint, then the subjects are known)."""

from __future__ import annotations

import hashlib
import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from data_fixtures import ixi_tar, nifti, zip_of
from http_server import start
from test_data_preprocessed_layout import IXI, make_tree
from workflow_utils import TINY_CONFIG, planned_jobs, snakemake

pytestmark = pytest.mark.workflow


def _planned(work, *targets):
    # planned_jobs appends its args after `--quiet rules` (nargs *): an option in between ends that list
    return planned_jobs(work, "--cores", "2", *targets)


def _config(workdir, datasets, train="loc_ixi", extra=None):
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["datasets"] = datasets
    config["train_dataset"] = train
    config.update(extra or {})
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_local_folders_linked_into_raw(tmp_path):
    healthy, lesions = tmp_path / "mine" / "ixi", tmp_path / "mine" / "ms"
    for i in range(3):
        nifti(healthy / f"IXI00{i}-Guys-0828-T2.nii.gz", seed=i)  # the IXI tarball's naming
    for s in ("p01", "p02"):
        nifti(lesions / f"{s}_t2.nii.gz")  # the raw naming
        nifti(lesions / f"{s}_seg.nii.gz")
    work = tmp_path / "run"
    _config(work, {
        "loc_ixi": {"source": "local", "kind": "ixi", "role": "healthy", "path": str(healthy)},
        "loc_ms": {"source": "local", "kind": "mslub", "role": "anomalous", "path": str(lesions)},
    })
    targets = ["data/raw/loc_ixi/subjects.tsv", "data/raw/loc_ms/subjects.tsv"]
    snakemake(work, *targets)

    raw = work / "data/raw/loc_ixi"
    link = raw / "IXI001_t2.nii.gz"
    assert link.is_symlink() and os.path.realpath(link) == str(healthy / "IXI001-Guys-0828-T2.nii.gz")
    table = pd.read_csv(raw / "subjects.tsv", sep="\t", keep_default_na=False)
    assert table["subject"].tolist() == ["IXI000", "IXI001", "IXI002"]
    assert table["site"].tolist() == ["Guys"] * 3 and table["label"].tolist() == [0, 0, 0]
    ms = pd.read_csv(work / "data/raw/loc_ms/subjects.tsv", sep="\t")
    assert ms["seg"].tolist() == ["p01_seg.nii.gz", "p02_seg.nii.gz"] and ms["label"].tolist() == [1, 1]
    assert (work / "results/logs/link_local/loc_ms/p02_seg.log").exists()

    # up to date: nothing to do; the next stage reads the links
    assert _planned(work, *targets) == {}
    resampled = "results/preprocess/loc_ms/1_resampled/p01_t2.nii.gz"
    counts = _planned(work, resampled)
    assert counts.get("resample") == 1 and "link_local" not in counts
    snakemake(work, resampled)  # the next stage reads the source file through the link
    assert nib.load(work / resampled).header.get_zooms() == (2.0, 2.0, 2.0)

    # a subject added to the folder: only its link and the sheet are made
    nifti(healthy / "IXI007-HH-1000-T2.nii.gz")
    assert _planned(work, *targets) == {"link_local": 1, "local_subjects": 1}

    # a misnamed file stops the DAG with the file and the expected pattern
    nifti(healthy / "IXI008-HH-1000-PD.nii.gz")
    proc = snakemake(work, "-n", *targets, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "IXI008-HH-1000-PD.nii.gz" in out and "IXI<nnn>-<site>-<nnnn>-T2.nii.gz" in out


# Subjects of a download source are known only after its checkpoint: a stage that lists them at parse
# time (outside an input function) stops the DAG. Remove this marker once none does.
def test_download_source_through_checkpoint(tmp_path):
    state, server = start()
    try:
        tar = ixi_tar(tmp_path, shape=(40, 40, 40)).read_bytes()  # ~0.7 MB: several download chunks
        sheet = b"IXI_ID,SEX_ID,AGE\n2,1,40.1\n12,2,50.2\n35,1,60.3\n"
        urls = {"ixi/IXI-T2.tar": state.serve("IXI-T2.tar", tar, truncate_at=300_000, truncate_times=1),
                "ixi/IXI.xls": state.serve("IXI.csv", sheet)}
        work = tmp_path / "run"
        _config(work, {
            "ixi": {"source": "download", "kind": "ixi", "role": "healthy"},
        }, train="ixi", extra={"downloads": {"urls": urls, "retries": 1, "timeout_s": 10,
                                             "sha256": {"ixi/IXI-T2.tar": hashlib.sha256(tar).hexdigest()}}})
        snakemake(work, "data/raw/ixi/subjects.tsv")
    finally:
        server.shutdown()
        server.server_close()
    raw = work / "data/raw/ixi"
    table = pd.read_csv(raw / "subjects.tsv", sep="\t")
    assert table["subject"].tolist() == ["IXI002", "IXI012", "IXI035"]
    assert table["age"].tolist() == [40.1, 50.2, 60.3]
    assert (raw / "IXI035_t2.nii.gz").is_file() and not (raw / ".unpacked").exists()
    # the truncated first transfer was resumed, the sheet's hash recorded on first use
    assert ("/IXI-T2.tar", "bytes=0-") not in state.requests
    assert any(p == "/IXI-T2.tar" and r and r.startswith("bytes=") for p, r in state.requests)
    tofu = (work / "data/downloads/sha256_first_use.tsv").read_text()
    assert urls["ixi/IXI.xls"] in tofu and urls["ixi/IXI-T2.tar"] not in tofu


def test_sri24_atlas_downloaded_and_converted(tmp_path):
    src = tmp_path / "sri24_src" / "sri24"
    for name in ("T1.nii", "T2.nii"):
        nifti(src / name, (24, 24, 16))
    nifti(src / "brainmask_nos.nii", (24, 24, 16), dtype=np.uint8)
    body = zip_of(src.parent, tmp_path / "sri24.zip").read_bytes()
    data = tmp_path / "mine"
    nifti(data / "h01_t2.nii.gz")
    nifti(data / "h02_t2.nii.gz")
    state, server = start()
    try:
        url = state.serve("sri24_anatomy_nifti.zip", body)
        work = tmp_path / "run"
        _config(work, {"loc_ixi": {"source": "local", "kind": "ixi", "role": "healthy", "path": str(data)}},
                extra={"atlas": {"source": "sri24", "modality": "t1"},
                       "downloads": {"urls": {"sri24/sri24_anatomy_nifti.zip": url}, "retries": 0}})
        atlas = [f"resources/atlas/{k}.nii.gz" for k in ("t1", "t2", "mask")]
        snakemake(work, *atlas)
    finally:
        server.shutdown()
        server.server_close()
    t1 = nib.load(work / atlas[0])
    assert t1.shape == (24, 24, 16) and t1.get_data_dtype() == np.float32
    assert nib.load(work / atlas[2]).get_data_dtype() == np.uint8
    assert url in (work / "data/downloads/sha256_first_use.tsv").read_text()
    assert not list((work / "resources").glob("tmp*"))  # the unpacked archive is gone


def test_unknown_urls_stop_before_any_job(tmp_path):
    data = tmp_path / "mine"
    nifti(data / "h01_t2.nii.gz")
    work = tmp_path / "run"
    _config(work, {"loc_ixi": {"source": "local", "kind": "ixi", "role": "healthy", "path": str(data)},
                   "mslub": {"source": "download", "kind": "mslub", "role": "anomalous"}})
    proc = snakemake(work, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "no download URL known for 30 file(s)" in out
    assert 'downloads: {urls: {"mslub/patient01.zip"' in out
    assert not (work / "data").exists()


def test_preprocessed_package_enters_at_slicing(tmp_path):
    pkg = make_tree(tmp_path / "pkg")
    work = tmp_path / "run"
    _config(work, {
        "ixi": {"source": "preprocessed", "kind": "ixi", "role": "healthy", "path": str(tmp_path / "pkg")},
        "brats": {"source": "preprocessed", "kind": "brats", "role": "anomalous", "path": str(pkg)},
    }, train="ixi")
    targets = ["results/slices/ixi_train_fold0.npz", "results/slices/brats_test.npz"]
    counts = _planned(work, *targets)
    assert counts.get("slices") == 2 and not {"resample", "link_local", "n4"} & set(counts)
    snakemake(work, *targets)
    assert not (work / "data").exists() and not (work / "results/preprocess").exists()
    sheet = pd.read_csv(work / "results/splits/ixi_train_fold0.csv")
    # the authors' t1 paths, rewritten to their t2 images, read in place
    assert sheet["img_path"].tolist() == [str(pkg / f"Train/ixi/t2/{IXI[0]}_t2.nii.gz")]
    with np.load(work / "results/slices/brats_test.npz") as npz:
        assert npz["subjects"].tolist() == ["BraTS2021_00002"]
