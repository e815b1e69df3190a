"""DDPM: the paper's non-patched diffusion baseline (docs/spec.md, sections 4-6).

The whole slice is noised and predicted, in training and at inference (one forward pass per slice and
noise level). The same UNet as pDDPM without scale-shift conditioning. Settings: `unet`, `diffusion`.
"""

from __future__ import annotations

from pddpm.models.patched import PatchedDiffusion


class DDPM(PatchedDiffusion):
    patched = False
    scale_shift = False
