"""Thresh: the intensity baseline of the paper's Table 1 (no network, nothing to train).

Its reconstruction is 0 (black), so the anomaly map is the image intensity itself, post-processed and
thresholded like every other model's residual.
"""

from __future__ import annotations

import torch

from pddpm.models.base import ModelKind, PassRunner


class Thresh(ModelKind):
    inputs_per_slice = 0

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None,
                    run: PassRunner) -> torch.Tensor:
        return torch.full_like(image, -1.0)  # 0 in the [0, 1] scale of the slices

    def inference_info(self) -> dict:
        return {}  # no settings of its own
