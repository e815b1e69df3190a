"""MSLUB: per-patient archives; T2 as `patientNN_T2W.nii.gz`, ground truth `patientNN_consensus_gt.nii.gz`.

The archives hold the raw volumes and co-registered ("preprocessed") versions of the same modalities.
The T2 taken is the one on the ground truth's voxel grid, the raw one first: a segmentation on another
grid than its image would silently ruin every metric."""

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
# the other channels of the archives, not used here
OTHER_RE = re.compile(r"^patient\d{2}_(FLAIR|T1W|T1WKS|brainmask|\w+_gt)\.nii(\.gz)?$|^README|\.txt$|\.pdf$",
                      re.IGNORECASE)
EXPECTED = ("MSLUB files patientNN_T2W.nii.gz and patientNN_consensus_gt.nii.gz (plus the archives' other "
            "channels patientNN_{FLAIR,T1W,T1WKS,brainmask}.nii.gz)")


def _same_grid(a: Path, b: Path) -> bool:
    ha, hb = nib.load(a), nib.load(b)
    return ha.shape[:3] == hb.shape[:3] and np.allclose(ha.affine, hb.affine, atol=1e-3)


def scan(folder: str | os.PathLike) -> list[RawSubject]:
    """Anomalous subjects (label 1) of unpacked MSLUB archives or a folder in their naming."""
    folder = Path(folder)
    t2s: dict[str, list[Path]] = {}
    gts: dict[str, list[Path]] = {}
    unexpected = []
    for path in visible_files(folder):
        if m := T2_RE.match(path.name):
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
            raise PddpmInputError(f"{gts[sub][0]}: no T2 {sub}_T2W.nii.gz for this ground truth; "
                                  f"expected {EXPECTED}")
        if len(gts[sub]) > 1:
            raise PddpmInputError(f"{folder}: several ground truths for {sub}: {[str(p) for p in gts[sub]]}")
        gt = gts[sub][0]
        # raw/ first, then the rest in path order
        candidates = sorted(t2s[sub], key=lambda p: ("raw" not in p.parent.parts, str(p)))
        t2 = next((p for p in candidates if _same_grid(p, gt)), None)
        if t2 is None:
            raise PddpmInputError(f"{gt}: no {sub}_T2W on the same voxel grid (shape and affine) as the "
                                  f"ground truth among {[str(p) for p in candidates]}")
        subjects.append(RawSubject(sub, t2, gt, 1))
    return check_ids(subjects, folder, EXPECTED)
