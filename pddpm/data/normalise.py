"""Downloaded archives -> the raw contract (`data/raw/{ds}/{sub}_t2.nii.gz`, `_seg`, `subjects.tsv`)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from pddpm.artefacts import SUBJECTS_TSV, raw_name
from pddpm.data import archives, ixi, local, mslub
from pddpm.data.raw import RawSubject, write_raw
from pddpm.errors import PddpmInputError

log = logging.getLogger(__name__)

ARCHIVE_EXPECTED = {
    "ixi": "IXI-T2.tar, the IXI T2 tarball of files IXI<nnn>-<site>-<nnnn>-T2.nii.gz",
    "mslub": ("3D-MR-MS_patientAA-BB.zip, an MSLUB archive of patient folders patientNN/ with the co-registered "
              "patientNN_T2W.nii.gz and patientNN_consensus_gt.nii.gz"),
}


def from_archives(kind: str, files: list[str | os.PathLike], raw_dir: str | os.PathLike,
                  role: str) -> list[RawSubject]:
    """Unpack the downloaded `files` of a source, check their naming and move the volumes into
    `raw_dir` in the raw naming; subjects.tsv is written last, so it only exists for a complete set."""
    if kind not in ARCHIVE_EXPECTED:
        raise PddpmInputError(f"no download converter for kind '{kind}' (have: {', '.join(ARCHIVE_EXPECTED)})")
    raw_dir = Path(raw_dir)
    work = raw_dir / ".unpacked"
    shutil.rmtree(work, ignore_errors=True)
    demographics = None
    try:
        for f in map(Path, files):
            if kind == "ixi" and ixi.DEMOGRAPHICS_RE.match(f.name):
                demographics = f
                continue
            archives.extract(f, work / f.name.split(".")[0], ARCHIVE_EXPECTED[kind])
        subjects = ixi.scan(work, demographics) if kind == "ixi" else mslub.scan(work)
        subjects = local.apply_role(subjects, role, work)
        clear_raw(raw_dir)
        write_raw(subjects, raw_dir, mode="move")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # files keep the archive's old modification times; make them as new as the download so that
    # later stages see them as changed when a source is fetched again
    for s in subjects:
        for key in s.files():
            os.utime(raw_dir / raw_name(s.subject, key))
    log.info("%s: %d subjects in %s", kind, len(subjects), raw_dir)
    return subjects


def clear_raw(raw_dir: Path) -> None:
    """Remove volumes of an earlier conversion, so a re-download does not mix old and new subjects."""
    for key in ("t2", "seg"):
        for p in raw_dir.glob(raw_name("*", key)):
            p.unlink()
    (raw_dir / Path(SUBJECTS_TSV).name).unlink(missing_ok=True)
