"""Diffusion models that noise a region of the slice and keep the x0 prediction inside it.

The patch mechanism of pDDPM lives here once, for training and inference (docs/spec.md, sections 5-6):
a region is noised to x_t = q_sample(x0, t, noise) while the rest of the slice stays clean context, and
the network's x0 prediction replaces only that region. pDDPM's regions are the patches of the
`patch.size`/`patch.stride` grid; the DDPM baseline's one region is the whole slice.

Training: per sample one t ~ U[0, T) and (pDDPM) one patch chosen uniformly; loss = mean L1 over the
whole slice (for pDDPM 1/P of the patch L1). Inference: every region of every slice is noised on its
own at each ensemble member's t, with the member's noise map of the volume; the predictions of
overlapping regions and of the members are averaged per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from pddpm.diffusion import Diffusion
from pddpm.errors import PddpmInputError
from pddpm.models.base import Batch, ModelKind, PassRunner
from pddpm.models.unet import build_unet
from pddpm.noise import make_noise
from pddpm.patches import patch_masks


def member_timesteps(test_timestep: int, ensemble_timesteps: Sequence[int] | None = None,
                     total: int | None = None) -> list[int]:
    """Noise levels t of the ensemble members: `test_timestep - 1` (the original) or one per ensemble entry."""
    ts = [int(v) - 1 for v in (ensemble_timesteps or [test_timestep])]
    if total is not None and any(t >= total or t < 0 for t in ts):
        raise PddpmInputError(f"infer.test_timestep/ensemble_timesteps {ts} must lie in 1..{total} "
                              "(the model's diffusion.timesteps)")
    return ts


class PatchedDiffusion(ModelKind):
    """x0-predicting diffusion UNet trained and applied on regions of the slice (see the module docstring).

    `network` replaces the UNet built from the settings (any module net(x_t, t) -> x0 prediction)."""

    patched: ClassVar[bool]  # regions = the patch grid (pDDPM) or the whole slice (DDPM)
    scale_shift: ClassVar[bool]  # FiLM time conditioning (pDDPM) or additive (the DDPM baseline)

    def __init__(self, settings: dict, network: torch.nn.Module | None = None):
        super().__init__(settings)
        s = self.settings
        h, w = s["image_size"]
        self.net = network if network is not None else self.build_network((h, w))
        self.diffusion = Diffusion.from_config(s["diffusion"])
        # the patch grid of training; None = the whole slice
        self.train_regions = (patch_masks(h, w, s["patch"]["size"], s["patch"]["stride"]) if self.patched
                              else None)
        self._on_device: dict = {}
        self.configure_inference()

    def build_network(self, image_size) -> torch.nn.Module:
        """The UNet of the settings (a subclass adds inputs, e.g. cDDPM's conditioning)."""
        return build_unet(self.settings["unet"], image_size, self.scale_shift)

    def _to(self, name: str, device: torch.device) -> torch.Tensor:
        """A region tensor on `device`, copied once (bool masks are not module buffers: an EMA copy of the
        model averages floating tensors only)."""
        key = (name, device)
        if key not in self._on_device:
            self._on_device[key] = getattr(self, name).to(device)
        return self._on_device[key]

    # ------------------------------------------------------------------------------------- training
    def noised(self, x0: torch.Tensor, generator: torch.Generator, noise: torch.Tensor | None = None):
        """(x_t, t, region) of a batch x0 (B, 1, H, W) in [-1, 1]: t per sample and, for pDDPM, one patch
        per sample, noised only there (region (B, 1, H, W) bool; None = the whole slice)."""
        n, dev, gdev = x0.shape[0], x0.device, generator.device
        t = torch.randint(0, self.diffusion.timesteps, (n,), generator=generator, device=gdev).to(dev)
        region = None
        if self.train_regions is not None:
            idx = torch.randint(0, len(self.train_regions), (n,), generator=generator, device=gdev).to(dev)
            region = self._to("train_regions", dev)[idx][:, None]
        if noise is None:
            noise = make_noise(tuple(x0.shape), self.noise_config, generator=generator, device=dev)
        x_t = self.diffusion.q_sample(x0, t, noise)
        if region is not None:
            x_t = torch.where(region, x_t, x0)
        return x_t, t, region

    @staticmethod
    def patch_l1(pred: torch.Tensor, x0: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor:
        """Mean L1 over the whole slice; the prediction counts only inside the region."""
        pred = pred.float()
        if region is not None:
            pred = torch.where(region, pred, x0)
        return (pred - x0).abs().mean()

    def loss(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x0 = batch.image
        x_t, t, region = self.noised(x0, generator)
        return {"loss": self.patch_l1(self.net(x_t, t), x0, region)}

    # ------------------------------------------------------------------------------------ inference
    @property
    def noise_config(self) -> dict:
        return self.settings["diffusion"]["noise"]

    def configure_inference(self, test_timestep: int | None = None, ensemble_timesteps: Sequence[int] | None = None,
                            stride: int | None = None) -> PatchedDiffusion:
        """t of each ensemble member and the regions; None: the schema's `infer` default (stride: the
        training grid's `patch.stride`)."""
        from pddpm.config import defaults

        if test_timestep is None:
            test_timestep = defaults("infer", "test_timestep")
        self.timesteps = member_timesteps(test_timestep, ensemble_timesteps, self.diffusion.timesteps)
        h, w = self.settings["image_size"]
        if self.patched:
            size = self.settings["patch"]["size"]
            self.stride = int(stride or self.settings["patch"]["stride"])
            self.regions = patch_masks(h, w, size, self.stride)
        else:
            self.stride = None
            self.regions = torch.ones(1, h, w, dtype=torch.bool)
        if (self.regions.sum(0) == 0).any():
            raise PddpmInputError("the patch grid leaves pixels of the slice uncovered; check patch.size/stride")
        self._on_device = {k: v for k, v in self._on_device.items() if k[0] != "regions"}
        self.noise_members = len(self.timesteps)
        self.inputs_per_slice = len(self.regions) * len(self.timesteps)
        return self

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None,
                    run: PassRunner) -> torch.Tensor:
        s, _, h, w = image.shape
        dev = image.device
        regions = self._to("regions", dev)
        n_p, n_e = len(regions), len(self.timesteps)
        t_of_member = torch.as_tensor(self.timesteps, dtype=torch.long, device=dev)
        # items in (slice, member, region) order
        x0_i = image[:, None, None].expand(s, n_e, n_p, 1, h, w).reshape(-1, 1, h, w)
        noise_i = noise[:, :, None].expand(s, n_e, n_p, 1, h, w).reshape(-1, 1, h, w)
        t_i = t_of_member[None, :, None].expand(s, n_e, n_p).reshape(-1)
        mask_i = regions[None, None, :, None].expand(s, n_e, n_p, 1, h, w).reshape(-1, 1, h, w)
        xt = torch.where(mask_i, self.diffusion.q_sample(x0_i, t_i, noise_i), x0_i)
        pred = run(self.net, xt, t_i).reshape(s, n_e, n_p, h, w)
        weight = (regions.sum(0) * n_e).to(torch.float32)  # predictions averaged per pixel
        return ((pred * regions[None, None]).sum(dim=(1, 2)) / weight)[:, None]

    def inference_info(self) -> dict:
        info = {"kind": self.name, "timesteps": list(self.timesteps), "n_regions": int(len(self.regions))}
        if self.patched:
            info.update(patch_size=int(self.settings["patch"]["size"]), stride=int(self.stride))
        return info
