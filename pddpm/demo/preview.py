"""A one-page picture of the demo cohort for the report: per data set, one subject as generated."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pddpm.io import atomic_path, load_nifti  # noqa: E402


def _axial(volume: np.ndarray, z: int) -> np.ndarray:
    return np.rot90(volume[:, :, z])  # nibabel x right, y up on screen (axes may be flipped: raw grid)


def plot_cohort(subjects: dict[str, dict[str, str | os.PathLike]], out: str | os.PathLike) -> None:
    """`subjects`: data set -> {'t2', 'mask', 'lesions', 'bias'} paths of one subject; one row each:
    raw axial slice with the truth brain mask (red) and lesions (yellow), a sagittal slice, the bias
    field, and raw / bias."""
    rows = len(subjects)
    fig, axes = plt.subplots(rows, 4, figsize=(13, 3.4 * rows), squeeze=False)
    for row, (ds, files) in zip(axes, subjects.items(), strict=True):
        img = load_nifti(files["t2"])
        t2 = np.asarray(img.dataobj, dtype=np.float32)
        mask = np.asarray(load_nifti(files["mask"]).dataobj) > 0
        lesions = np.asarray(load_nifti(files["lesions"]).dataobj) > 0
        bias = np.asarray(load_nifti(files["bias"]).dataobj, dtype=np.float32)
        # the axial slice with the most lesion, else through the brain's centre
        z = int(np.argmax(lesions.sum(axis=(0, 1)))) if lesions.any() else int(np.argwhere(mask)[:, 2].mean())
        x = int(np.argwhere(mask)[:, 0].mean())
        zooms = img.header.get_zooms()[:3]
        vmax = np.percentile(t2[mask], 99.5) if mask.any() else t2.max()
        row[0].imshow(_axial(t2, z), cmap="gray", vmin=0, vmax=vmax)
        row[0].contour(_axial(mask, z), [0.5], colors="r", linewidths=0.6)
        if lesions[:, :, z].any():
            row[0].contour(_axial(lesions, z), [0.5], colors="yellow", linewidths=0.6)
        row[0].set_title(f"{ds}: {os.path.basename(files['t2'])}\n{t2.shape} at "
                         f"{' x '.join(f'{v:.2f}' for v in zooms)} mm, axial {z}", fontsize=8)
        row[1].imshow(np.rot90(t2[x]), cmap="gray", vmin=0, vmax=vmax, aspect=zooms[2] / zooms[1])
        row[1].set_title(f"sagittal {x}", fontsize=8)
        im = row[2].imshow(_axial(bias, z), cmap="coolwarm", vmin=0.5, vmax=1.5)
        fig.colorbar(im, ax=row[2], fraction=0.046)
        row[2].set_title(f"bias field (truth) {bias.min():.2f}-{bias.max():.2f}", fontsize=8)
        row[3].imshow(_axial(t2 / bias, z), cmap="gray", vmin=0, vmax=vmax)
        row[3].set_title("raw / bias", fontsize=8)
        for ax in row:
            ax.set_axis_off()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
