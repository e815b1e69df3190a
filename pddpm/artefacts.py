"""Every file that passes between stages (docs/contracts.md): its path pattern and its reader/writer.

The patterns carry the workflow's wildcards (`{ds}` data set, `{sub}` subject, `{split}` split sheet,
`{model}`, `{fold}`), relative to the working directory; the rules take them from here and fill in what
they know with `fill`. Readers name the file and the rule that writes it when it is missing or broken.

Only numpy and pandas besides the standard library: evaluation, tables and figures read these files in
environments without torch or SimpleITK. pandas is imported by the functions that read or write tables:
most per-subject jobs import this module for its path patterns only, and pandas costs them 0.3 s each.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pddpm.errors import PddpmInputError
from pddpm.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd

# --- wildcards --------------------------------------------------------------------------------------------
# What a data set key and a subject id may look like (letters, digits, single '_'; '-' in subject ids)
DATASET_PATTERN = "[A-Za-z0-9]+(_[A-Za-z0-9]+)*"
SUBJECT_PATTERN = "[A-Za-z0-9-]+(_[A-Za-z0-9-]+)*"
# A wildcard regex that matches nothing: the constraint of a rule with no data set to run on.
MATCH_NOTHING = "(?!x)x"

_WILDCARD = re.compile(r"\{(\w+)\}")


def one_of(names: Iterable[str]) -> str:
    """Wildcard regex matching exactly `names` (nothing at all when there are none)."""
    names = list(names)
    return "|".join(re.escape(n) for n in names) if names else MATCH_NOTHING


def fill(pattern: str, **values) -> str:
    """`pattern` with the wildcards named in `values` filled in and every other wildcard kept, e.g.
    `fill(INFERENCE, split="test")` -> `results/infer/{model}/fold{fold}/{ds}_test.npz`."""
    return _WILDCARD.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), pattern)


def path(pattern: str, **values) -> Path:
    """The file of `pattern` for these wildcard values; every wildcard must be given."""
    left = _WILDCARD.findall(fill(pattern, **values))
    if left:
        raise KeyError(f"{pattern}: no value for wildcard(s) {', '.join(left)}")
    return Path(fill(pattern, **values))


# --- path patterns, in stage order --------------------------------------------------------------------------
RESULTS = "results"

# raw: every source ends in this layout (pddpm.data for real data, pddpm.demo for the demo cohort)
RAW_DIR = "data/raw/{ds}"
RAW_NAME = "{sub}_{key}.nii.gz"  # key: t2 | seg; the names subjects.tsv lists, relative to RAW_DIR
RAW_IMAGE = f"{RAW_DIR}/{RAW_NAME}"
SUBJECTS_TSV = f"{RAW_DIR}/subjects.tsv"
# the demo's ground truth beside its raw scans; key: mask | wm | bias | lesions
DEMO_TRUTH_NAME = "truth/{sub}_{key}.nii.gz"
DEMO_TRUTH_MATRIX_NAME = "truth/{sub}_native_to_atlas.txt"  # native world mm -> atlas world mm (4x4)
DEMO_TRUTH = f"{RAW_DIR}/{DEMO_TRUTH_NAME}"
DEMO_TRUTH_MATRIX = f"{RAW_DIR}/{DEMO_TRUTH_MATRIX_NAME}"
DEMO_ANATOMY = "resources/demo/anatomy.npz"
DOWNLOAD_DIR = "data/downloads"
DOWNLOAD = f"{DOWNLOAD_DIR}/{{source}}/{{file}}"
ATLAS = "resources/atlas/{key}.nii.gz"  # key: t1 | t2 | mask
# the atlas brain (image x mask) and its mask on the working grid, made once for every subject's
# registration and QC (rule atlas_grid); key: brain | mask
ATLAS_GRID = "resources/atlas/grid/{key}.nii.gz"
HDBET_WEIGHTS = "resources/weights/hdbet_v2"  # HD-BET v2 weights folder (rule hdbet_weights)

# preprocessing, one folder per step; key: t2 | mask | seg (| warp for SyN registration)
_PREPROCESS = f"{RESULTS}/preprocess/{{ds}}"
RESAMPLED = f"{_PREPROCESS}/1_resampled/{{sub}}_{{key}}.nii.gz"
SKULLSTRIPPED = f"{_PREPROCESS}/2_skullstripped/{{sub}}_{{key}}.nii.gz"
REGISTERED = f"{_PREPROCESS}/3_registered/{{sub}}_{{key}}.nii.gz"
REGISTER_AFFINE = f"{_PREPROCESS}/3_registered/{{sub}}_affine.mat"
CROPPED = f"{_PREPROCESS}/4_cropped/{{sub}}_{{key}}.nii.gz"
PREPROCESSED = f"{_PREPROCESS}/5_n4/{{sub}}_{{key}}.nii.gz"  # after N4: the final state slicing reads
QC_FIGURE = f"{RESULTS}/qc/{{ds}}/{{sub}}.png"
QC_ROW = f"{RESULTS}/qc/{{ds}}/rows/{{sub}}.tsv"
QC_SUMMARY = f"{RESULTS}/qc/{{ds}}/summary.tsv"

# split sheets and the model-grid arrays
SPLIT_SHEET = f"{RESULTS}/splits/{{ds}}_{{split}}.csv"
SPLIT_DEFECTS = f"{RESULTS}/splits/{{ds}}_defects.tsv"
SLICES = f"{RESULTS}/slices/{{ds}}_{{split}}.npz"
# one subject on the model grid (rule slice_subject; pddpm.slices.save_subject/load_subject); split files
# are assembled from these
SUBJECT_SLICES = f"{RESULTS}/slices/subjects/{{ds}}/{{sub}}.npz"
SLICES_PREVIEW = f"{RESULTS}/slices/preview/{{ds}}_{{split}}.png"

# training: the declared outputs, and the resumable state kept outside them (Snakemake never deletes it)
MODEL = f"{RESULTS}/models/{{model}}/fold{{fold}}/model.pt"
TRAIN_LOG = f"{RESULTS}/models/{{model}}/fold{{fold}}/train_log.csv"
RUN_RECORD = f"{RESULTS}/models/{{model}}/fold{{fold}}/run.json"
CHECKPOINT_DIR = f"{RESULTS}/checkpoints/{{model}}/fold{{fold}}"
# the cddpm encoder's masked-image-modelling pre-training (rule pretrain, pddpm.pretrain), one per fold
PRETRAINED_ENCODER = f"{RESULTS}/pretrain/cddpm_encoder/fold{{fold}}/encoder.pt"
PRETRAIN_LOG = f"{RESULTS}/pretrain/cddpm_encoder/fold{{fold}}/pretrain_log.csv"

# inference and evaluation
INFERENCE = f"{RESULTS}/infer/{{model}}/fold{{fold}}/{{ds}}_{{split}}.npz"
THRESHOLD = f"{RESULTS}/eval/{{model}}/fold{{fold}}/{{ds}}_threshold.json"
PER_VOLUME = f"{RESULTS}/eval/{{model}}/fold{{fold}}/{{ds}}_per_volume.csv"

# the report
TABLE1 = f"{RESULTS}/tables/table1.{{ext}}"  # ext: csv | md | tex | html
TABLE1_SUMMARY = f"{RESULTS}/tables/table1_summary.txt"  # per anomalous data set: ordering as in the paper?
FIGURE = f"{RESULTS}/figures/{{name}}.png"  # qualitative_{ds}, pr_{ds}, dice_distribution, ...
# name: the rule, then its wildcards as folders, e.g. train/pddpm/fold0
LOG = f"{RESULTS}/logs/{{name}}.log"
BENCHMARK = f"{RESULTS}/benchmarks/{{name}}.tsv"


def _require(path: Path, what: str, rule: str) -> Path:
    if not path.is_file():
        raise PddpmInputError(f"{path}: {what} not found; run the `{rule}` rule for it (snakemake {path})")
    return path


# --- raw: subjects.tsv ------------------------------------------------------------------------------------
SUBJECTS_COLUMNS = ("subject", "t2", "seg", "label")


def raw_name(subject: str, key: str) -> str:
    """A raw file's name inside its data set folder, as subjects.tsv lists it."""
    return fill(RAW_NAME, sub=subject, key=key)


def subjects_row(subject: str, *, has_seg: bool, label: int, **extra) -> dict:
    """One row of subjects.tsv: subject, t2, seg (empty without one), label, then source columns."""
    return {"subject": subject, "t2": raw_name(subject, "t2"), "seg": raw_name(subject, "seg") if has_seg else "",
            "label": int(label), **extra}


def write_subjects_tsv(rows: Iterable[Mapping], path: str | os.PathLike) -> Path:
    """subjects.tsv of a raw data set folder: `SUBJECTS_COLUMNS`, then any source-specific columns."""
    import pandas as pd

    table = pd.DataFrame(list(rows))
    missing = [c for c in SUBJECTS_COLUMNS if c not in table]
    if missing:
        raise ValueError(f"subjects.tsv rows lack {missing}")
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return Path(path)


def read_subjects_tsv(path: str | os.PathLike) -> list[str]:
    """The subject ids a raw data set folder holds."""
    import pandas as pd

    path = _require(Path(path), "subject sheet", "demo_subjects_tsv, local_subjects or download_raw")
    table = pd.read_csv(path, sep="\t", dtype={"subject": str})
    if "subject" not in table:
        raise PddpmInputError(f"{path}: no 'subject' column; expected columns {', '.join(SUBJECTS_COLUMNS)}")
    return table["subject"].tolist()


# --- split sheets -----------------------------------------------------------------------------------------
# the original CSV layout (docs/spec.md, section 1); read and written by pddpm.splits
SHEET_COLUMNS = ["img_name", "age", "sex", "label", "img_path", "mask_path", "seg_path"]
ANOMALOUS_SPLITS = ("val", "test")
SPLIT_PATTERN = r"train_fold\d+|val_fold\d+|val|test"


def fold_splits(folds: Iterable[int]) -> list[str]:
    """The training and validation sheets of the healthy data set's `folds`."""
    return [f"{s}_fold{k}" for k in folds for s in ("train", "val")]


def split_names(anomalous: bool, folds: int) -> list[str]:
    """The sheets of a data set: k folds of train/val and a test set (healthy), val and test (anomalous)."""
    return list(ANOMALOUS_SPLITS) if anomalous else fold_splits(range(folds)) + ["test"]


# --- slices: results/slices/{ds}_{split}.npz --------------------------------------------------------------
SPLIT_KEYS = ("image", "mask", "seg", "subjects", "label", "spacing_mm", "fov_mm")
_BIG = ("image", "mask", "seg")


def save_split(arrays: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write a split file atomically as an *uncompressed* .npz: each array is stored verbatim in the zip,
    so it loads at disk speed and can be memory-mapped (`load_split(mmap=True)`)."""
    missing = [k for k in SPLIT_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"split arrays lack {missing}")
    with atomic_path(path) as tmp:
        np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    return Path(path)


def _mmap_member(path: Path, info: zipfile.ZipInfo) -> np.ndarray:
    # an uncompressed member is a plain .npy file at a fixed offset of the zip: map it in place
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        fh.seek(start)
        version = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def load_split(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, np.ndarray]:
    """A split file as a dict: `image` float16 (N, Z, H, W) in [0, 1], `mask` and `seg` uint8 (N, Z, H, W),
    `subjects` (N,) str, `label` (N,) int, `spacing_mm` float, `fov_mm` (3,), `orientation` str.

    `mmap=True` maps the big arrays read-only instead of reading them (for splits larger than memory).
    Even without it they are read through a memory map and copied: 3x faster than `np.load` on a zip.
    """
    path = Path(path)
    if not path.exists():
        raise PddpmInputError(f"{path}: split file not found; run the `slices` rule for it")
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = list(npz.files)
            missing = [k for k in SPLIT_KEYS if k not in files]
            if missing:
                raise PddpmInputError(
                    f"{path}: split file lacks {', '.join(missing)}; delete it and rerun `slices`")
            out = {k: npz[k] for k in files if k not in _BIG}
            with zipfile.ZipFile(path) as zf:
                for key in _BIG:
                    info = zf.getinfo(f"{key}.npy")
                    if info.compress_type != zipfile.ZIP_STORED:  # a compressed file cannot be mapped
                        out[key] = npz[key]
                    else:
                        arr = _mmap_member(path, info)
                        out[key] = arr if mmap else np.array(arr)
    except PddpmInputError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise PddpmInputError(f"{path}: not a readable split file ({exc}); delete it and rerun `slices`") from exc
    out["spacing_mm"] = float(out["spacing_mm"])
    if "orientation" in out:
        out["orientation"] = str(out["orientation"])
    return out


# --- inference: results/infer/{model}/fold{fold}/{ds}_{split}.npz -----------------------------------------
INFERENCE_KEYS = ("recon", "anomaly", "subjects")


def save_inference(path: str | os.PathLike, recons: np.ndarray, maps: np.ndarray, subjects: Sequence[str],
                   info: dict) -> Path:
    """Write the inference npz atomically (recon, anomaly float16; subjects; seed; info as JSON)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, recon=np.asarray(recons, np.float16), anomaly=np.asarray(maps, np.float16),
                            subjects=np.asarray(subjects).astype(str), seed=np.int64(info.get("seed", -1)),
                            info=np.asarray(json.dumps(info)))
    return path


def load_inference(path: str | os.PathLike, keys: Iterable[str] | None = None) -> dict:
    """Read an inference npz: recon, anomaly (float16 (N, Z, H, W)), subjects, seed, info (dict).

    `keys` reads only those arrays (a figure that needs the maps alone does not decompress the
    reconstructions); `info` is always there."""
    path = Path(path)
    if not path.exists():
        raise PddpmInputError(f"{path}: inference output not found; run the `infer` rule for it")
    try:
        with np.load(path, allow_pickle=False) as z:
            wanted = list(z.files) if keys is None else [k for k in (*keys, "info") if k in z.files]
            missing = sorted(set(INFERENCE_KEYS if keys is None else keys) - set(z.files))
            if missing:
                raise PddpmInputError(f"{path}: lacks {missing}; delete it and rerun `infer`")
            out = {k: z[k] for k in dict.fromkeys(wanted)}
    except PddpmInputError:
        raise
    except Exception as exc:
        raise PddpmInputError(f"{path}: not a readable inference file ({exc}); delete it and rerun `infer`") from exc
    out["info"] = json.loads(str(out["info"])) if "info" in out else {}
    return out


# --- thresholds: results/eval/{model}/fold{fold}/{ds}_threshold.json --------------------------------------
def write_threshold(result: Mapping, path: str | os.PathLike) -> Path:
    """The threshold search's result (`threshold`, `method`, `val_dice`, ...) as JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(dict(result), indent=2) + "\n")
    return Path(path)


def read_threshold(path: str | os.PathLike) -> float:
    """The binarisation threshold of a data set's test volumes, chosen on its validation split."""
    path = _require(Path(path), "threshold file", "threshold")
    try:
        return float(json.loads(path.read_text())["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PddpmInputError(f"{path}: no readable `threshold` ({exc}); delete it and rerun `threshold`") from exc


# --- per-volume metrics: results/eval/{model}/fold{fold}/{ds}_per_volume.csv ------------------------------
# the columns the `metrics` rule writes, by the data set's role
PER_VOLUME_METRICS = {"anomalous": ("dice", "auprc", "auroc", "best_dice"), "healthy": ("recon_error",)}


def per_volume_columns(anomalous: bool) -> list[str]:
    return ["subject", *PER_VOLUME_METRICS["anomalous" if anomalous else "healthy"]]


def write_per_volume(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """One row per test volume (`per_volume_columns`), six significant digits."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def read_per_volume(path: str | os.PathLike, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """A per-volume table, with `metrics` (default: whatever metric columns it has) checked numeric.

    A file without rows, without a needed column or with a non-numeric metric is an error naming it."""
    import pandas as pd

    path = _require(Path(path), "per-volume results", "metrics")
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise PddpmInputError(f"{path}: not a readable CSV ({exc}); rerun its `metrics` job") from exc
    if metrics is None:
        known = [m for ms in PER_VOLUME_METRICS.values() for m in ms]
        metrics = [m for m in known if m in df.columns]
    need = ["subject", *metrics]
    absent = [c for c in need if c not in df.columns]
    if absent:
        raise PddpmInputError(f"{path}: columns {absent} missing (has {list(df.columns)}); the file needs "
                              f"{need} (docs/contracts.md); rerun its `metrics` job")
    if df.empty:
        raise PddpmInputError(f"{path}: no test volumes in it; check the test split of its data set")
    for metric in metrics:
        try:
            df[metric] = pd.to_numeric(df[metric]).astype(float)
        except (ValueError, TypeError) as exc:
            raise PddpmInputError(f"{path}: column `{metric}` is not numeric ({exc})") from exc
    return df
