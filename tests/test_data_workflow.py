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

from data_fixtures import (
    MSLUB_ARCHIVES,
    authors_sheet,
    brats_folder,
    hdbet_weights_zip,
    ixi_tar,
    mslub_archive,
    nifti,
    sri24_spm8_zip,
    stripped_head,
)
from http_server import start
from pddpm.data import download
from test_data_preprocessed_layout import IXI, make_tree
from workflow_utils import REPO, TINY_CONFIG, planned_jobs, snakemake

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
        # the tar is checked by md5, as IXI publishes it; the sheet by sha256
        _config(work, {
            "ixi": {"source": "download", "kind": "ixi", "role": "healthy"},
        }, train="ixi", extra={"downloads": {"urls": urls, "retries": 1, "timeout_s": 10,
                                             "md5": {"ixi/IXI-T2.tar": hashlib.md5(tar).hexdigest()},
                                             "sha256": {"ixi/IXI.xls": hashlib.sha256(sheet).hexdigest()}}})
        snakemake(work, "data/raw/ixi/subjects.tsv")
    finally:
        server.shutdown()
        server.server_close()
    raw = work / "data/raw/ixi"
    table = pd.read_csv(raw / "subjects.tsv", sep="\t")
    assert table["subject"].tolist() == ["IXI002", "IXI012", "IXI035"]
    assert table["age"].tolist() == [40.1, 50.2, 60.3]
    assert (raw / "IXI035_t2.nii.gz").is_file() and not (raw / ".unpacked").exists()
    # the truncated first transfer was resumed; both files pinned, so nothing was trusted on first use
    assert ("/IXI-T2.tar", "bytes=0-") not in state.requests
    assert any(p == "/IXI-T2.tar" and r and r.startswith("bytes=") for p, r in state.requests)
    assert not (work / "data/downloads/sha256_first_use.tsv").exists()
    assert "md5 verified" in (work / "results/logs/download_file/ixi/IXI-T2.tar.log").read_text()


def test_sri24_atlas_downloaded_and_converted(tmp_path):
    body = sri24_spm8_zip(tmp_path).read_bytes()
    data = tmp_path / "mine"
    nifti(data / "h01_t2.nii.gz")
    nifti(data / "h02_t2.nii.gz")
    state, server = start()
    try:
        url = state.serve("frs/download.php/4841/sri24_spm8.zip", body)
        work = tmp_path / "run"
        _config(work, {"loc_ixi": {"source": "local", "kind": "ixi", "role": "healthy", "path": str(data)}},
                extra={"atlas": {"source": "sri24", "modality": "t1"},
                       "downloads": {"urls": {"sri24/sri24_spm8.zip": url}, "retries": 0}})
        atlas = [f"resources/atlas/{k}.nii.gz" for k in ("t1", "t2", "mask")]
        snakemake(work, *atlas)
    finally:
        server.shutdown()
        server.server_close()
    t1 = nib.load(work / atlas[0])
    ref = nib.load(tmp_path / "sri24_spm8_src/templates/T1_brain.nii")
    assert t1.get_data_dtype() == np.float32
    np.testing.assert_array_equal(t1.get_fdata(), ref.get_fdata())  # T1_brain, as the original
    mask = nib.load(work / atlas[2])
    assert mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(t1.get_fdata() * mask.get_fdata(), ref.get_fdata())
    assert url in (work / "data/downloads/sha256_first_use.tsv").read_text()
    log_text = (work / "results/logs/atlas_sri24.log").read_text()
    assert "Dice with T2_brain's non-zero region 1.0000" in log_text
    # the fixture's templates are not the authors' copies: said in the log, not fatal
    assert "differs from the original pDDPM repository's copy" in log_text
    assert not list((work / "resources").glob("tmp*"))  # the unpacked archive is gone


def test_mslub_six_archives_downloaded_through_checkpoint(tmp_path):
    state, server = start()
    try:
        urls = {f"mslub/{n}": state.serve(f"data/research/resources/3D-MR-MS/{n}",
                                          mslub_archive(tmp_path, n).read_bytes()) for n in MSLUB_ARCHIVES}
        data = tmp_path / "mine"
        nifti(data / "h01_t2.nii.gz")
        work = tmp_path / "run"
        _config(work, {"loc_ixi": {"source": "local", "kind": "ixi", "role": "healthy", "path": str(data)},
                       "mslub": {"source": "download", "kind": "mslub", "role": "anomalous"}},
                extra={"downloads": {"urls": urls, "retries": 0}})
        snakemake(work, "data/raw/mslub/subjects.tsv")
    finally:
        server.shutdown()
        server.server_close()
    table = pd.read_csv(work / "data/raw/mslub/subjects.tsv", sep="\t")
    assert table["subject"].tolist() == [f"patient{n:02d}" for n in range(1, 31)]
    # the co-registered T2 on the consensus' FLAIR grid, not raw/
    t2 = nib.load(work / "data/raw/mslub/patient17_t2.nii.gz")
    ref = nib.load(tmp_path / "3D-MR-MS_patient16-20.zip_src/patient17/patient17_T2W.nii.gz")
    np.testing.assert_array_equal(t2.get_fdata(), ref.get_fdata())
    # no hash published: all six trusted on first use, recorded for the next download
    tofu = (work / "data/downloads/sha256_first_use.tsv").read_text()
    assert all(u in tofu for u in urls.values())


def test_unknown_urls_stop_before_any_job(tmp_path):
    data = tmp_path / "mine"
    nifti(data / "h01_t2.nii.gz")
    work = tmp_path / "run"
    # an empty URL: the file must be put in place by hand
    _config(work, {"loc_ixi": {"source": "local", "kind": "ixi", "role": "healthy", "path": str(data)},
                   "mslub": {"source": "download", "kind": "mslub", "role": "anomalous"}},
            extra={"downloads": {"urls": {f"mslub/{n}": "" for n in MSLUB_ARCHIVES[:2]}}})
    proc = snakemake(work, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "no download URL known for 2 file(s)" in out
    assert 'downloads: {urls: {"mslub/3D-MR-MS_patient01-05.zip"' in out
    assert not (work / "data").exists()
    # the file put there by hand is used as it is
    (work / "data/downloads/mslub").mkdir(parents=True)
    for n in MSLUB_ARCHIVES[:2]:
        (work / "data/downloads/mslub" / n).write_bytes(b"x")
    counts = _planned(work, "data/raw/mslub/subjects.tsv")
    assert counts["download_file"] == 4 and counts["download_raw"] == 1


def test_hdbet_weights_rule_feeds_the_skull_strip_job(tmp_path):
    data = tmp_path / "mine"
    nifti(data / "h01_t2.nii.gz")
    nifti(data / "h02_t2.nii.gz")
    body = hdbet_weights_zip(tmp_path).read_bytes()
    state, server = start()
    try:
        url = state.serve("records/14445620/files/release_v1.5.0.zip", body)
        work = tmp_path / "run"
        _config(work, {"loc_ixi": {"source": "local", "kind": "ixi", "role": "healthy", "path": str(data)}},
                extra={"preprocess": {"skullstrip": {"backend": "hdbet"}},
                       "downloads": {"urls": {"hdbet_v2/release_v1.5.0.zip": url}, "retries": 0}})
        target = "results/preprocess/loc_ixi/2_skullstripped/h01_t2.nii.gz"
        proc = snakemake(work, "-n", target)
        counts = _planned(work, target)
        assert counts == {"link_local": 1, "resample": 1, "download_file": 1, "hdbet_weights": 1, "skullstrip": 1}
        # the weights folder is the skull-strip job's input
        job = proc.stdout[proc.stdout.index("rule skullstrip:"):]
        assert "input: " in job and "resources/weights/hdbet_v2" in job.split("output:")[0]
        # on a login node: everything the run downloads, and nothing else
        snakemake(work, "download_all")
    finally:
        server.shutdown()
        server.server_close()
    folder = work / "resources/weights/hdbet_v2"
    assert (folder / "fold_all/checkpoint_final.pth").is_file() and (folder / "plans.json").is_file()
    assert _planned(work, target) == {"link_local": 1, "resample": 1, "skullstrip": 1}
    # a folder of one's own instead: no download is planned at all
    (work / "config.yaml").write_text((work / "config.yaml").read_text().replace(
        "backend: hdbet", f"backend: hdbet\n    weights_dir: {folder}"))
    assert "download_file" not in _planned(work, target) and "hdbet_weights" not in _planned(work, target)


def _serve_sheets(state, tmp, sheets):
    """Serve sheets in the authors' layout where sources.yaml has them; `downloads` overrides pointing
    there (their sha256: the published ones would not match these generated sheets)."""
    urls, sha = {}, {}
    for name, (kind, names) in sheets.items():
        body = authors_sheet(tmp / "sheets" / name, kind, names).read_bytes()
        key = f"pddpm_splits/{name}"
        urls[key] = state.serve(f"FinnBehrendt/patched-Diffusion-Models-UAD/da14cd0/Data/splits/{name}", body)
        sha[key] = hashlib.sha256(body).hexdigest()
    return {"urls": urls, "sha256": sha}


def test_authors_sheets_split_the_raw_route(tmp_path):
    ours = {"IXI002": "Guys-0828", "IXI012": "HH-1211", "IXI035": "IOP-0873", "IXI040": "HH-1000",
            "IXI050": "Guys-0900"}
    data = tmp_path / "IXI-T2"
    for i, (sub, rest) in enumerate(ours.items()):
        stripped_head(data / f"{sub}-{rest}-T2.nii.gz", seed=i)  # the tarball's naming
    state, server = start()
    try:
        downloads = _serve_sheets(state, tmp_path, {
            # a duplicated row and a test subject in training, as the published IXI folds have
            "IXI_train_fold0.csv": ("ixi", ["IXI002-Guys-0828", "IXI012-HH-1211", "IXI012-HH-1211",
                                            "IXI035-IOP-0873"]),
            "IXI_val_fold0.csv": ("ixi", ["IXI040-HH-1000"]),
            # a volume this data set does not have; IXI050 is in no sheet
            "IXI_test.csv": ("ixi", ["IXI035-IOP-0873", "IXI999-Guys-0000"]),
            "IXI_train_fold1.csv": ("ixi", ["IXI002-Guys-0828"]),  # served, not needed with one fold
        })
        work = tmp_path / "run"
        _config(work, {"ixi": {"source": "local", "kind": "ixi", "role": "healthy", "path": str(data),
                               "skullstrip": "none"}},
                train="ixi", extra={"splits": {"folds": 1, "source": "authors"},
                                    "downloads": {**downloads, "retries": 0}})
        targets = [f"results/splits/ixi_{s}.csv" for s in ("train_fold0", "val_fold0", "test")]
        snakemake(work, *targets, "results/splits/ixi_defects.tsv")
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(p.rsplit("/", 1)[1] for p, _ in state.requests) == [
        "IXI_test.csv", "IXI_train_fold0.csv", "IXI_val_fold0.csv"]
    sheet = {s: pd.read_csv(work / f"results/splits/ixi_{s}.csv", keep_default_na=False)
             for s in ("train_fold0", "val_fold0", "test")}
    assert sheet["train_fold0"]["img_name"].tolist() == ["IXI002", "IXI012"]
    assert sheet["val_fold0"]["img_name"].tolist() == ["IXI040"] and sheet["test"]["img_name"].tolist() == ["IXI035"]
    # our preprocessed volumes, the authors' demographics
    assert sheet["test"]["img_path"].tolist() == ["results/preprocess/ixi/5_n4/IXI035_t2.nii.gz"]
    assert sheet["train_fold0"]["sex"].tolist() == ["F", "F"]
    defects = pd.read_csv(work / "results/splits/ixi_defects.tsv", sep="\t")
    assert sorted(zip(defects["sheet"], defects["img_name"], defects["defect"], defects["action"], strict=True)) == [
        ("-", "IXI050", "not_in_sheets", "unused"),
        ("test", "IXI999-Guys-0000", "missing_subject", "dropped"),
        ("train_fold0", "IXI012", "duplicate", "dropped"),
        ("train_fold0", "IXI035", "leakage", "dropped")]


def test_paper_config_plans_the_whole_run_with_only_the_brats_path_set(tmp_path):
    """configs/paper.yaml as shipped plus the BraTS path: download_all fetches every file from
    (loopback stand-ins of) the real addresses, the archives unpack, and the dry run plans the paper's
    DAG: every stage, 5 folds of pDDPM and DDPM, all three data sets split by the authors' sheets."""
    import urllib.parse

    paper = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    brats = brats_folder(tmp_path / "BraTS2021", ids=("00000", "00002", "00003"))
    work = tmp_path / "run"
    work.mkdir()
    # without the BraTS path the error names that key and says how to obtain the data
    (work / "config.yaml").write_text(yaml.safe_dump(paper))
    proc = snakemake(work, "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "datasets.brats21.path" in out and "BraTS2021_Training_Data.tar" in out

    ixi_names = ["IXI002-Guys-0828", "IXI012-HH-1211", "IXI035-IOP-0873"]
    bodies = {"ixi/IXI-T2.tar": ixi_tar(tmp_path).read_bytes(),
              "ixi/IXI.xls": b"IXI_ID,SEX_ID,AGE\n2,1,40.1\n12,2,50.2\n35,1,60.3\n",
              "sri24/sri24_spm8.zip": sri24_spm8_zip(tmp_path).read_bytes(),
              **{f"mslub/{n}": mslub_archive(tmp_path, n).read_bytes() for n in MSLUB_ARCHIVES}}
    sheets = {**{f"IXI_{s}_fold{k}.csv": ("ixi", ixi_names) for k in range(5) for s in ("train", "val")},
              "IXI_test.csv": ("ixi", ixi_names[:1]),
              "Brats21_val.csv": ("brats", ["BraTS2021_00000"]),
              "Brats21_test.csv": ("brats", ["BraTS2021_00002", "BraTS2021_00003"]),
              "MSLUB_val.csv": ("mslub", ["patient01", "patient03"]),
              "MSLUB_test.csv": ("mslub", [f"patient{n:02d}" for n in range(4, 31)])}
    sources = download.load_sources()
    state, server = start()
    try:
        downloads = _serve_sheets(state, tmp_path, sheets)
        for key, body in bodies.items():
            source, name = key.split("/")
            # the real address's path, on 127.0.0.1
            downloads["urls"][key] = state.serve(urllib.parse.urlsplit(sources[source]["files"][name]["url"]).path,
                                                 body)
        downloads["sha256"].update({k: hashlib.sha256(bodies[k]).hexdigest() for k in ("ixi/IXI.xls",)})
        downloads["md5"] = {"ixi/IXI-T2.tar": hashlib.md5(bodies["ixi/IXI-T2.tar"]).hexdigest()}
        (work / "overlay.yaml").write_text(yaml.safe_dump(
            {"datasets": {"brats21": {"path": str(brats)}}, "downloads": {**downloads, "retries": 0}}))
        # targets before --configfile, which takes every name after it
        over = ["--configfile", str(work / "config.yaml"), str(work / "overlay.yaml")]
        assert _planned(work, "download_all", *over) == {"download_file": 24, "download_all": 1}
        snakemake(work, "download_all", *over)
    finally:
        server.shutdown()
        server.server_close()
    assert len(state.requests) == 24  # every file once: nothing left to the internet
    snakemake(work, "data/raw/ixi/subjects.tsv", "data/raw/mslub/subjects.tsv", *over)

    counts = _planned(work, *over)
    n_sub = 3 + 30 + 3  # IXI, MSLUB, BraTS
    assert counts["resample"] == counts["skullstrip"] == counts["register"] == counts["n4"] == n_sub
    assert counts["atlas_sri24"] == 1 and counts["link_local"] == 6 and "download_file" not in counts
    assert counts["splits"] == 11 + 2 + 2 and counts["split_defects"] == 3
    assert counts["train"] == 2 * 5  # pDDPM and DDPM, folds 0-4
    for stage in ("slices", "infer", "threshold", "metrics", "table", "pr_curves", "qualitative"):
        assert counts.get(stage, 0) > 0, stage


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
