"""pDDPM: the patched diffusion model of the paper (docs/spec.md, sections 4-6).

Per training sample one patch of the `patch` grid is noised and predicted, with the rest of the slice as
clean context; at inference every patch is noised on its own and the predictions tile the slice. The
UNet has scale-shift (FiLM) time conditioning. Settings: `unet`, `diffusion`, `patch`.
"""

from __future__ import annotations

from pddpm.models.patched import PatchedDiffusion


class PDDPM(PatchedDiffusion):
    patched = True
    scale_shift = True
