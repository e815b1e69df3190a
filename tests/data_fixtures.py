"""Tiny real NIfTI files and archives in the real sources' naming, for the data tests."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np


def nifti(path: Path, shape=(6, 7, 4), seed=0, affine=None, dtype=np.float32) -> Path:
    rng = np.random.default_rng(seed)
    data = (rng.random(shape) * 100).astype(dtype)
    aff = np.diag([1.2, 1.0, 3.0, 1.0]) if affine is None else affine
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, aff), path)
    return path


def _members(folder: Path):
    """(file, name in the archive) for every file below `folder`, in a stable order."""
    return [(p, str(p.relative_to(folder))) for p in sorted(folder.rglob("*")) if p.is_file()]


def tar_of(folder: Path, archive: Path) -> Path:
    """Tar the files of `folder` at the archive's top level (as IXI-T2.tar ships them)."""
    with tarfile.open(archive, "w") as tf:
        for p, name in _members(folder):
            tf.add(p, arcname=name)
    return archive


def zip_of(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for p, name in _members(folder):
            zf.write(p, arcname=name)
    return archive


IXI_NAMES = ["IXI002-Guys-0828-T2.nii.gz", "IXI012-HH-1211-T2.nii.gz", "IXI035-IOP-0873-T2.nii.gz"]


def ixi_tar(tmp: Path, names=IXI_NAMES, shape=(6, 7, 4)) -> Path:
    src = tmp / "ixi_src"
    for i, n in enumerate(names):
        nifti(src / n, shape, seed=i)
    return tar_of(src, tmp / "IXI-T2.tar")


def ixi_demographics(path: Path) -> Path:
    # IXI.xls's columns; IXI013 has no T2, IXI012 is listed twice (once without an age), IXI035 not at all
    path.write_text("IXI_ID,SEX_ID,HEIGHT,AGE\n2,2,164,35.8\n12,1,175,\n12,1,175,38.78\n13,1,180,46.7\n")
    return path


MSLUB_ARCHIVES = ["3D-MR-MS_patient01-05.zip", "3D-MR-MS_patient06-10.zip", "3D-MR-MS_patient11-15.zip",
                  "3D-MR-MS_patient16-20.zip", "3D-MR-MS_patient21-25.zip", "3D-MR-MS_patient26-30.zip"]
# the FLAIR grid every co-registered image and the consensus share (192 x 512 x 512 of 0.8 x 0.47 x 0.47 mm
# in the real data), and the raw T2's own grid (another shape, spacing and position)
MSLUB_FLAIR_GRID = ((8, 10, 10), np.diag([0.8, 0.46875, 0.46875, 1.0]))
MSLUB_RAW_GRID = ((6, 12, 5), np.array([[0.45, 0, 0, 3.0], [0, 0.45, 0, -2.0], [0, 0, 3.0, 1.5], [0, 0, 0, 1]]))


def mslub_patient(folder: Path, patient: str, seed: int = 0, t2_grid=None) -> Path:
    """One patient folder as the MSLUB archives hold it (`t2_grid`: the co-registered T2's grid, to plant
    a T2 that does not line up with its ground truth)."""
    shape, aff = MSLUB_FLAIR_GRID
    d = folder / patient
    for i, ch in enumerate(("T1W", "T1WKS", "FLAIR", "brainmask")):
        nifti(d / f"{patient}_{ch}.nii.gz", shape, seed + i, aff)
    t2_shape, t2_aff = t2_grid or (shape, aff)
    nifti(d / f"{patient}_T2W.nii.gz", t2_shape, seed + 10, t2_aff)
    nifti(d / f"{patient}_consensus_gt.nii.gz", shape, seed + 11, aff, dtype=np.uint8)
    for ch in ("T1W", "T1WKS", "T2W"):
        (d / f"{patient}_{ch}_to_FLAIR.txt").write_text("#Insight Transform File V1.0\n")
    raw_shape, raw_aff = MSLUB_RAW_GRID
    for i, ch in enumerate(("T1W", "T1WKS", "T2W", "FLAIR")):
        nifti(d / "raw" / f"{patient}_{ch}.nii.gz", raw_shape, seed + 20 + i, raw_aff)
    return d


def mslub_archive(tmp: Path, name: str = MSLUB_ARCHIVES[0], bad_t2: str | None = None) -> Path:
    """`3D-MR-MS_patientAA-BB.zip`: the five patient folders AA..BB at the archive's top level."""
    first, last = map(int, name.removesuffix(".zip").split("patient")[1].split("-"))
    src = tmp / f"{name}_src"
    for n in range(first, last + 1):
        patient = f"patient{n:02d}"
        mslub_patient(src, patient, seed=n, t2_grid=MSLUB_RAW_GRID if patient == bad_t2 else None)
    return zip_of(src, tmp / name)


def brats_folder(root: Path, ids=("00000", "00002"), seg=True) -> Path:
    for i, n in enumerate(ids):
        case = root / f"BraTS2021_{n}"
        for mod in ("t1", "t1ce", "t2", "flair") + (("seg",) if seg else ()):
            nifti(case / f"BraTS2021_{n}_{mod}.nii.gz", (5, 5, 5), i,
                  dtype=np.uint8 if mod == "seg" else np.float32)
    return root


def sri24_spm8_zip(tmp: Path, shape=(24, 24, 16), t2_mask_shrink: int = 0) -> Path:
    """`sri24_spm8.zip` in its layout: templates/{EPI,PD,T1,T2}{,_brain}.nii and tpm/{csf,grey,white}.nii.
    The `_brain` templates are the whole-head ones cut out with one brain mask (an ellipsoid here, with a
    dark voxel inside it as ventricles can have); `t2_mask_shrink` erodes T2_brain's mask to plant a
    disagreement between the two."""
    from scipy import ndimage

    src = tmp / "sri24_spm8_src"
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    r = ((grid - centre[:, None, None, None]) / (np.array(shape)[:, None, None, None] * 0.35)) ** 2
    brain = r.sum(0) <= 1
    head = r.sum(0) <= 1.6
    aff = np.array([[-1.0, 0, 0, 120], [0, -1, 0, 120], [0, 0, 1, -78], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    for i, ch in enumerate(("EPI", "PD", "T1", "T2")):
        full = np.where(head, 50 + 100 * rng.random(shape) + 10 * i, 0).astype(np.float32)
        mask = brain
        if ch == "T2" and t2_mask_shrink:
            mask = ndimage.binary_erosion(brain, iterations=t2_mask_shrink)
        cut = np.where(mask, full, 0).astype(np.float32)
        cut[tuple(c for c in centre.astype(int))] = 0  # a zero inside the brain: filled in the mask
        (src / "templates").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(full, aff), src / "templates" / f"{ch}.nii")
        nib.save(nib.Nifti1Image(cut, aff), src / "templates" / f"{ch}_brain.nii")
    for t in ("csf", "grey", "white"):
        nifti(src / "tpm" / f"{t}.nii", shape, affine=aff)
    return zip_of(src, tmp / "sri24_spm8.zip")


def hdbet_weights_zip(tmp: Path, wrapped: bool = False) -> Path:
    """HD-BET v2's weights archive as HD-BET unpacks it into its parameter folder: dataset.json,
    plans.json and fold_all/checkpoint_final.pth (`wrapped`: inside one more folder)."""
    src = tmp / "hdbet_src"
    top = src / "release_2.0.0" if wrapped else src
    top.mkdir(parents=True, exist_ok=True)
    (top / "dataset.json").write_text('{"channel_names": {"0": "T1"}, "labels": {"background": 0, "brain": 1}}')
    (top / "plans.json").write_text('{"dataset_name": "Dataset001_HDBET"}')
    (top / "fold_all").mkdir(exist_ok=True)
    (top / "fold_all" / "checkpoint_final.pth").write_bytes(np.random.default_rng(1).bytes(5000))
    return zip_of(src, tmp / "release_v1.5.0.zip")


# The pDDPM authors' sheets: their columns (as pandas wrote them, with an unnamed index column first) and
# their t1-named paths. Generated here in that layout; the published sheets are never copied in.
AUTHORS_COLUMNS = {
    "ixi": ["img_name", "SEX_ID (1=m, 2=f)", "HEIGHT", "WEIGHT", "ETHNIC_ID", "MARITAL_ID", "OCCUPATION_ID",
            "QUALIFICATION_ID", "DATE_AVAILABLE", "STUDY_DATE", "age", "label", "img_path", "mask_path",
            "seg_path", "Agegroup"],
    "mslub": ["img_name", "age", "sex", "ms_type", "label", "img_path", "mask_path", "seg_path", "Agegroup"],
    "brats": ["img_name", "Cohort Name (if publicly available)",
              "Site No (represents the originating institution)", "Local ID ", "age", "label", "img_path",
              "mask_path", "seg_path"],
}


def authors_sheet(path: Path, kind: str, names: list[str], ages=None, sexes=None) -> Path:
    """One sheet in the authors' layout naming `names` (IXI: full names IXI002-Guys-0828; BraTS2021_nnnnn;
    patientNN). `sexes`: 'M'/'F' (IXI rows get the sheet's code 1/2)."""
    import pandas as pd

    rows = []
    for i, n in enumerate(names):
        age = (ages or [40.0 + i] * len(names))[i]
        sex = (sexes or ["F"] * len(names))[i]
        if kind == "ixi":
            row = {"img_name": f"{n}_t1.nii.gz", "SEX_ID (1=m, 2=f)": {"M": 1, "F": 2}[sex], "HEIGHT": 170,
                   "WEIGHT": 70, "ETHNIC_ID": 1, "MARITAL_ID": 2, "OCCUPATION_ID": 1, "QUALIFICATION_ID": 4,
                   "DATE_AVAILABLE": 1, "STUDY_DATE": "2005-08-12", "age": age, "label": 0,
                   "img_path": f"/Train/ixi/t1/{n}_t1.nii.gz", "mask_path": f"/Train/ixi/mask/{n}_mask.nii.gz",
                   "seg_path": None, "Agegroup": 2.0}
        else:
            folder = "Brats21" if kind == "brats" else "MSLUB"
            row = {"img_name": n, "age": age if kind == "mslub" else None, "label": 1,
                   "img_path": f"/Test/{folder}/t1/{n}_t1.nii.gz", "mask_path": f"/Test/{folder}/mask/{n}_mask.nii.gz",
                   "seg_path": f"/Test/{folder}/seg/{n}_seg.nii.gz"}
            if kind == "mslub":
                row.update(sex=sex, ms_type="RR", Agegroup=1.0)
            else:
                row.update({"Cohort Name (if publicly available)": "Private Collection",
                            "Site No (represents the originating institution)": 18, "Local ID ": None})
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a shuffled pandas index, as theirs (written with to_csv's default index)
    index = list(np.random.default_rng(len(names)).permutation(len(names)))
    pd.DataFrame(rows, columns=AUTHORS_COLUMNS[kind], index=index).to_csv(path)
    return path


def stripped_head(path: Path, seed: int = 0, shape=(70, 84, 60), voxel: float = 2.5) -> Path:
    """A skull-stripped brain-like volume (an ellipsoid of tissue on a zero background) in a scanner's
    position, small enough to preprocess in seconds (skull-strip backend none)."""
    rng = np.random.default_rng(seed)
    g = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    radii = np.array([0.36, 0.4, 0.34]) * np.array(shape) * (1 + 0.05 * rng.standard_normal(3))
    r = (((g - c[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0)
    inner = r <= 0.35  # a darker core, so that the volume has some contrast to register on
    data = np.where(r <= 1, np.where(inner, 60.0, 110.0) + rng.normal(0, 4, shape), 0).astype(np.float32)
    aff = np.diag([voxel, voxel, voxel, 1.0])
    aff[:3, 3] = -(np.array(shape) - 1) / 2 * voxel + rng.normal(0, 3, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, aff), path)
    return path
