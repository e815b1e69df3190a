"""MSLUB: six archives of five patients (`3D-MR-MS_patient01-05.zip` ... `26-30.zip`), one folder each.

Layout of a patient folder (the data set's README):
    patientNN/patientNN_{T1W,T1WKS,T2W,FLAIR,brainmask,consensus_gt}.nii.gz   co-registered to FLAIR
    patientNN/patientNN_{T1W,T1WKS,T2W}_to_FLAIR.txt                           the rigid transforms
    patientNN/raw/patientNN_{T1W,T1WKS,T2W,FLAIR}.nii.gz                        each on its own grid
The consensus ground truth lies on the FLAIR grid, so the T2 taken is the co-registered
`patientNN_T2W.nii.gz`; `raw/` is never used (a segmentation on another grid than its image would
silently ruin every metric), and the T2 is checked to share the ground truth's grid."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from pddpm.data.raw import RawSubject, check_ids, reject_unexpected, visible_files
from pddpm.errors import PddpmInputError

T2_RE = re.compile(r"^(?P<subject>patient\d{2})_T2W\.nii(\.gz)?$")
GT_RE = re.compile(r"^(?P<subject>patient\d{2})_consensus_gt\.nii(\.gz)?$")
# the other channels and files of the archives, not used here
OTHER_RE = re.compile(r"^patient\d{2}_(FLAIR|T1W|T1WKS|brainmask|\w+_gt)\.nii(\.gz)?$|^README|\.txt$|\.pdf$",
                      re.IGNORECASE)
RAW_DIR = "raw"
EXPECTED = ("MSLUB patient folders patientNN/ holding the co-registered patientNN_T2W.nii.gz and "
            "patientNN_consensus_gt.nii.gz (plus the archives' other channels patientNN_{FLAIR,T1W,T1WKS,"
            "brainmask}.nii.gz, the *_to_FLAIR.txt transforms and raw/, which is not used)")


def _same_grid(a: Path, b: Path) -> bool:
    ha, hb = nib.load(a), nib.load(b)
    return ha.shape[:3] == hb.shape[:3] and np.allclose(ha.affine, hb.affine, atol=1e-3)


def _in_raw(path: Path, folder: Path) -> bool:
    return RAW_DIR in path.relative_to(folder).parts[:-1]


def scan(folder: str | os.PathLike) -> list[RawSubject]:
    """Anomalous subjects (label 1) of unpacked MSLUB archives or a folder in their naming."""
    folder = Path(folder)
    t2s: dict[str, list[Path]] = {}
    gts: dict[str, list[Path]] = {}
    unexpected = []
    for path in visible_files(folder):
        if _in_raw(path, folder):
            if not (T2_RE.match(path.name) or OTHER_RE.search(path.name)):
                unexpected.append(path)
        elif m := T2_RE.match(path.name):
            t2s.setdefault(m["subject"], []).append(path)
        elif m := GT_RE.match(path.name):
            gts.setdefault(m["subject"], []).append(path)
        elif not OTHER_RE.search(path.name):
            unexpected.append(path)
    reject_unexpected(unexpected, folder, EXPECTED)
    subjects = []
    for sub in sorted(set(t2s) | set(gts)):
        if sub not in gts:
            raise PddpmInputError(f"{t2s[sub][0]}: no ground truth {sub}_consensus_gt.nii.gz beside it; "
                                  f"expected {EXPECTED}")
        if sub not in t2s:
            raise PddpmInputError(f"{gts[sub][0]}: no co-registered T2 {sub}_T2W.nii.gz for this ground truth "
                                  f"(the one in {RAW_DIR}/ lies on another grid and is not used); expected "
                                  f"{EXPECTED}")
        for name, found in (("ground truths", gts[sub]), ("co-registered T2s", t2s[sub])):
            if len(found) > 1:
                raise PddpmInputError(f"{folder}: several {name} for {sub}: {[str(p) for p in found]}; "
                                      f"keep one")
        t2, gt = t2s[sub][0], gts[sub][0]
        if not _same_grid(t2, gt):
            raise PddpmInputError(f"{t2}: not on the voxel grid (shape and affine) of its ground truth {gt}; "
                                  f"MSLUB's co-registered images and the consensus share the FLAIR grid, so "
                                  f"this file is not the one the data set ships")
        subjects.append(RawSubject(sub, t2, gt, 1))
    return check_ids(subjects, folder, EXPECTED)
