"""AE and VAE: the convolutional autoencoders of the paper's Table 1, after Baur et al. (2021).

As the cDDPM paper (arXiv 2312.04215, section 4.4) describes the same group's baselines: an encoder of
5 x 5 stride-2 convolutions, each followed by batch norm and a leaky ReLU, a dense bottleneck of 128 and
a mirrored decoder of stride-2 transposed convolutions; L1 reconstruction loss, plus beta x KL for the
VAE. The layer layout follows Baur et al.'s public code: a 1 x 1 convolution narrows the last feature
map before the dense layer (and widens it back after the decoder's dense layer), the decoder starts
with batch norm + ReLU and ends with a 1 x 1 convolution to one channel, no output activation. Sizes
live in the config sections `ae` / `vae` (schemas/config.schema.yaml, with their sources).

The anomaly map is the residual of the reconstruction (pddpm.infer). The VAE reconstructs from the
posterior mean at inference: no sampling, so a volume's map does not depend on a random draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pddpm.models.base import Batch, ModelKind, PassRunner
from pddpm.models.checks import raise_problems


class ConvEncoder(nn.Module):
    """(N, 1, H, W) -> (N, features) flattened bottleneck map, features = bottleneck_channels x
    H / 2^levels x W / 2^levels."""

    def __init__(self, widths: Sequence[int], kernel_size: int, slope: float, bottleneck_channels: int):
        super().__init__()
        layers, c_in = [], 1
        for width in widths:
            layers += [nn.Conv2d(c_in, width, kernel_size, stride=2, padding=kernel_size // 2),
                       nn.BatchNorm2d(width), nn.LeakyReLU(slope)]
            c_in = width
        layers += [nn.Conv2d(c_in, bottleneck_channels, 1), nn.Flatten()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ConvDecoder(nn.Module):
    """(N, latent) -> (N, 1, H, W): dense to the bottleneck map, then the encoder's levels mirrored."""

    def __init__(self, widths: Sequence[int], kernel_size: int, slope: float, bottleneck_channels: int,
                 latent_dim: int, image_size: Sequence[int]):
        super().__init__()
        levels = len(widths)
        self.map_shape = (bottleneck_channels, image_size[0] // 2 ** levels, image_size[1] // 2 ** levels)
        self.dense = nn.Linear(latent_dim, bottleneck_channels * self.map_shape[1] * self.map_shape[2])
        layers = [nn.Conv2d(bottleneck_channels, widths[-1], 1), nn.BatchNorm2d(widths[-1]), nn.ReLU()]
        c_in = widths[-1]
        for width in reversed(widths):
            # padding k // 2 and output_padding 1: exactly twice the size, as TF's 'same' transposed convolution
            layers += [nn.ConvTranspose2d(c_in, width, kernel_size, stride=2, padding=kernel_size // 2,
                                          output_padding=1),
                       nn.BatchNorm2d(width), nn.LeakyReLU(slope)]
            c_in = width
        layers.append(nn.Conv2d(c_in, 1, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(self.dense(z).reshape(len(z), *self.map_shape))


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent dimensions, mean over the samples."""
    return (0.5 * (mu.square() + logvar.exp() - 1 - logvar)).sum(-1).mean()


class ConvAutoencoder(ModelKind):
    """Base of AE and VAE: one slice in, its reconstruction out; settings in the section `section`."""

    section: str = "ae"
    variational: bool = False

    def __init__(self, settings: dict):
        super().__init__(settings)
        s = self.settings[self.section]
        size = self.settings["image_size"]
        raise_problems(self.name, self.settings, size)
        arch = (s["widths"], s["kernel_size"], s["leaky_relu_slope"], s["bottleneck_channels"])
        self.encoder = ConvEncoder(*arch)
        features = s["bottleneck_channels"] * (size[0] // 2 ** len(s["widths"])) * (size[1] // 2 ** len(s["widths"]))
        # the VAE's dense layer gives mean and log-variance side by side
        self.to_latent = nn.Linear(features, s["latent_dim"] * (2 if self.variational else 1))
        self.decoder = ConvDecoder(*arch, s["latent_dim"], size)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance) of (N, 1, H, W) slices; the AE's code and None."""
        h = self.to_latent(self.encoder(x))
        return h.chunk(2, dim=-1) if self.variational else (h, None)

    def loss(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = batch.image  # (B, 1, H, W)
        mu, logvar = self.encode(x)
        if not self.variational:
            return {"loss": (self.decoder(mu).float() - x).abs().mean()}
        eps = torch.randn(mu.shape, generator=generator, device=generator.device).to(mu.device, mu.dtype)
        z = mu + eps * (0.5 * logvar).exp()
        l1 = (self.decoder(z).float() - x).abs().mean()
        kl = kl_to_standard_normal(mu.float(), logvar.float())
        return {"loss": l1 + self.settings[self.section]["beta"] * kl, "l1": l1, "kl": kl}

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None,
                    run: PassRunner) -> torch.Tensor:
        # the posterior mean for the VAE (no sampling at inference)
        return run(lambda x: self.decoder(self.encode(x)[0]), image)

    def inference_info(self) -> dict:
        return {"kind": self.name, "latent_dim": self.settings[self.section]["latent_dim"],
                **({"reconstruction": "posterior mean"} if self.variational else {})}


class AE(ConvAutoencoder):
    section = "ae"
    variational = False


class VAE(ConvAutoencoder):
    section = "vae"
    variational = True
