"""BraTS 2021: registration-gated, so never downloaded here; a folder the user obtained is checked."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pddpm.data.raw import RawSubject, check_ids, reject_unexpected, visible_files
from pddpm.errors import PddpmInputError

DIR_RE = re.compile(r"^BraTS2021_\d{5}$")
MODALITIES = ("t1", "t1ce", "t2", "flair", "seg")
EXPECTED = ("one folder per case BraTS2021_<nnnnn>/ holding BraTS2021_<nnnnn>_t2.nii.gz and "
            "BraTS2021_<nnnnn>_seg.nii.gz (t1, t1ce, flair may be there too)")
HOW_TO = """BraTS 2021 cannot be downloaded automatically (registration required). To obtain it:
  1. create a Synapse account (https://www.synapse.org) and register for the RSNA-ASNR-MICCAI BraTS 2021
     challenge (Synapse id syn25829067), accepting its data use terms;
  2. download the training data, BraTS2021_Training_Data.tar (about 12 GB; 1251 cases);
  3. unpack it: tar -xf BraTS2021_Training_Data.tar -C /data/BraTS2021
  4. in the config set datasets.<name>: {source: local, kind: brats, role: anomalous, skullstrip: none,
     path: /data/BraTS2021}   (the folder that holds the BraTS2021_<nnnnn>/ folders)"""


def scan(folder: str | os.PathLike) -> list[RawSubject]:
    """Anomalous subjects (label 1) of a BraTS 2021 training folder; missing folder -> how to get it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PddpmInputError(f"{folder}: BraTS 2021 folder not found.\n{HOW_TO}")
    subjects, unexpected = [], []
    files = visible_files(folder)
    by_case: dict[Path, dict[str, Path]] = {}
    for path in files:
        case = path.parent
        mod = path.name.removeprefix(case.name + "_").removesuffix(".nii.gz")
        if case.parent == folder and DIR_RE.match(case.name) and mod in MODALITIES \
                and path.name == f"{case.name}_{mod}.nii.gz":
            by_case.setdefault(case, {})[mod] = path
        elif path.parent == folder and path.suffix.lower() in (".csv", ".xlsx", ".txt", ".md"):
            continue  # the challenge's name mapping sheets and readmes
        else:
            unexpected.append(path)
    reject_unexpected(unexpected, folder, EXPECTED)
    for case, mods in sorted(by_case.items()):
        for need in ("t2", "seg"):
            if need not in mods:
                raise PddpmInputError(f"{case}: missing {case.name}_{need}.nii.gz; expected {EXPECTED}")
        subjects.append(RawSubject(case.name, mods["t2"], mods["seg"], 1))
    if not subjects:
        raise PddpmInputError(f"{folder}: no BraTS2021_<nnnnn>/ case folders; expected {EXPECTED}.\n{HOW_TO}")
    return check_ids(subjects, folder, EXPECTED)
