"""DAE: the denoising autoencoder of Kascenas et al. 2022 (docs/training.md, "Model kind `dae`").

Training adds coarse Gaussian noise inside the brain and the U-Net learns to return the clean slice:
noise N(0, dae.noise_std) is drawn on a grid of one value per `dae.noise_cell_px` pixels (the original's
16 x 16 for 128 px slices), upsampled bilinearly (corners aligned, as `F.upsample_bilinear`), shifted
circularly by one random offset per batch, and multiplied by the brain mask. The loss is the squared error
inside the mask averaged over all pixels, in the [0, 1] intensity scale of the slices (the original's
`(pow(pred - y, 2) * mask).mean()`); validation computes it with noise too, as the original's validation
step. At inference the clean slice goes in and the reconstruction is the network's output.

The U-Net follows the public code (AntanasKascenas/DenoisingAE, src/unet.py): `dae.depth` levels of two
3 x 3 weight-standardised convolutions with reflection padding, each followed by swish and GroupNorm,
average-pooling down, 2 x 2 transposed convolutions up, skip connections by concatenation, a 1 x 1 output
convolution; level i has base_width * 2^i channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pddpm.models.base import Batch, ModelKind, PassRunner
from pddpm.models.checks import raise_problems


def norm_groups(channels: int) -> int:
    """GroupNorm groups of the public code: the middle divisor of `channels` (8 for 64, 16 for 256)."""
    divisors = sorted({d for i in range(1, math.isqrt(channels) + 1) if channels % i == 0
                       for d in (i, channels // i)})
    return divisors[len(divisors) // 2]


class WSConv2d(nn.Conv2d):
    """Convolution with weight standardisation: each filter zero-mean and unit (unbiased) standard
    deviation, + 1e-5, before it is applied (as the public code's `WNConv2d`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        w = w / (w.flatten(1).std(dim=1)[:, None, None, None] + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(1), WSConv2d(cin, cout, 3), nn.SiLU(), nn.GroupNorm(norm_groups(cout), cout),
                         nn.ReflectionPad2d(1), WSConv2d(cout, cout, 3), nn.SiLU(), nn.GroupNorm(norm_groups(cout), cout))


class DenoisingUNet(nn.Module):
    """net(x (B, C, H, W)) -> (B, C, H, W); sides divisible by 2^(depth - 1)."""

    def __init__(self, *, channels: int, base_width: int, depth: int):
        super().__init__()
        widths = [base_width * 2 ** i for i in range(depth)]
        self.down = nn.ModuleList()
        prev = channels
        for w in widths:
            self.down.append(conv_block(prev, w))
            prev = w
        self.up_convs = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up_convs.append(nn.ConvTranspose2d(prev, w, kernel_size=2, stride=2))
            self.up_blocks.append(conv_block(2 * w, w))
            prev = w
        self.out = nn.Conv2d(prev, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, block in zip(self.up_convs, self.up_blocks, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.out(x)


class DAE(ModelKind):
    def __init__(self, settings: dict):
        super().__init__(settings)
        raise_problems(self.name, self.settings, self.settings["image_size"])
        s = self.settings["dae"]
        self.net = DenoisingUNet(channels=1, base_width=s["base_width"], depth=s["depth"])

    # ------------------------------------------------------------------------------------- training
    def coarse_noise(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Noise of (B, L, H, W) in the [-1, 1] scale of the batch: N(0, noise_std) per cell of the [0, 1]
        scale (so twice that here), upsampled to the slice and rolled by one random (dy, dx) of the batch."""
        s = self.settings["dae"]
        b, length, h, w = shape
        cell, dev = s["noise_cell_px"], generator.device
        coarse = torch.randn((b, length, h // cell, w // cell), generator=generator, device=dev)
        noise = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True) * (2 * s["noise_std"])
        # torch.roll by a random shift, as index arithmetic on the device (no host sync for the shift)
        dy, dx = (torch.randint(0, n, (1,), generator=generator, device=dev) for n in (h, w))
        rows = (torch.arange(h, device=dev) - dy) % h
        cols = (torch.arange(w, device=dev) - dx) % w
        return noise[:, :, rows[:, None], cols[None, :]]

    def loss(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x, mask = batch.image, batch.mask
        noisy = x + self.coarse_noise(tuple(x.shape), generator).to(x.device) * mask
        pred = self.net(noisy).float()
        return {"loss": ((pred - x) / 2).square().mul(mask).mean()}  # / 2: error in the [0, 1] scale

    def configure_optimisers(self, adam):
        s = self.settings["dae"]
        return {"adam": adam(self.parameters(), amsgrad=s["amsgrad"], weight_decay=s["weight_decay"])}

    # ------------------------------------------------------------------------------------ inference
    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None,
                    run: PassRunner) -> torch.Tensor:
        return run(self.net, image)
