"""SVAE: the VAE's slice encoder and decoder, linked across a volume's consecutive slices.

The paper's SVAE (Behrendt et al. 2022) joins slice VAEs by a recurrent or self-attention model over the
slices of a volume; its architecture is not published, so the one here is ours (docs/training.md,
"svae"): the VAE's convolutional encoder turns each slice into a feature vector, a small transformer
encoder (pre-norm, sinusoidal positions of the slice within its window) mixes the vectors of
`svae.sequence_length` consecutive slices, and per slice a dense layer gives the posterior mean and
log-variance of its 128-d latent, which the VAE's decoder turns back into that slice. Loss: L1 + beta KL,
as the VAE, over every slice of the window.

Training samples are windows of consecutive slices (`sample_length`); inference gets whole volumes
(`infer_unit = "volume"`) and reconstructs them window by window with the windows of training (the last
one ends at the last slice; a slice in two windows gets the mean of both), from the posterior mean.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pddpm.errors import PddpmInputError
from pddpm.models.autoencoders import ConvDecoder, ConvEncoder, kl_to_standard_normal
from pddpm.models.base import Batch, ModelKind, PassRunner, window_starts
from pddpm.models.checks import raise_problems


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sine/cosine embedding of the positions 0..length-1 (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    out = torch.zeros(length, dim)
    out[:, 0::2] = torch.sin(pos * freqs)
    out[:, 1::2] = torch.cos(pos * freqs[: dim // 2])
    return out


class SVAE(ModelKind):
    infer_unit = "volume"
    sample_length_key = "svae.sequence_length"

    def __init__(self, settings: dict):
        super().__init__(settings)
        s = self.settings["svae"]
        size = self.settings["image_size"]
        raise_problems(self.name, self.settings, size)
        self.sample_length = int(s["sequence_length"])  # training windows (pddpm.train's Sampler)
        arch = (s["widths"], s["kernel_size"], s["leaky_relu_slope"], s["bottleneck_channels"])
        d = s["latent_dim"]
        self.encoder = ConvEncoder(*arch)
        levels = len(s["widths"])
        self.to_features = nn.Linear(s["bottleneck_channels"] * (size[0] >> levels) * (size[1] >> levels), d)
        layer = nn.TransformerEncoderLayer(d, s["heads"], dim_feedforward=s["feedforward"], dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.sequence = nn.TransformerEncoder(layer, s["layers"], enable_nested_tensor=False)
        self.to_posterior = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d))
        self.decoder = ConvDecoder(*arch, d, size)
        self.register_buffer("positions", sinusoidal_positions(self.sample_length, d), persistent=False)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance), each (B, L, latent), of windows x (B, L, H, W) of L = sample_length slices."""
        b, n, h, w = x.shape
        feats = self.to_features(self.encoder(x.reshape(b * n, 1, h, w))).reshape(b, n, -1)
        feats = self.sequence(feats + self.positions.to(feats.dtype))
        return self.to_posterior(feats).chunk(2, dim=-1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L, latent) -> (B, L, H, W)."""
        b, n, _ = z.shape
        return self.decoder(z.reshape(b * n, -1)).reshape(b, n, *self.settings["image_size"])

    def loss(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = batch.image  # (B, L, H, W)
        mu, logvar = self.posterior(x)
        eps = torch.randn(mu.shape, generator=generator, device=generator.device).to(mu.device, mu.dtype)
        l1 = (self.decode(mu + eps * (0.5 * logvar).exp()).float() - x).abs().mean()
        kl = kl_to_standard_normal(mu.float(), logvar.float())  # per slice, mean over the window's slices
        return {"loss": l1 + self.settings["svae"]["beta"] * kl, "l1": l1, "kl": kl}

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None,
                    run: PassRunner) -> torch.Tensor:
        u, z, h, w = image.shape
        length = self.sample_length
        if z < length:
            raise PddpmInputError(f"volumes of {z} slices are shorter than the svae's windows of "
                                  f"svae.sequence_length = {length} slices; lower it to {z} or less and retrain")
        starts = window_starts(z, length)
        windows = torch.stack([image[:, s:s + length] for s in starts], dim=1).reshape(-1, length, h, w)
        recon = run(lambda v: self.decode(self.posterior(v)[0]), windows).reshape(u, len(starts), length, h, w)
        total = torch.zeros_like(image, dtype=torch.float32)
        count = torch.zeros(z, dtype=torch.float32, device=image.device)
        for i, s in enumerate(starts):
            total[:, s:s + length] += recon[:, i]
            count[s:s + length] += 1
        return total / count[None, :, None, None]

    def inference_info(self) -> dict:
        return {"kind": self.name, "latent_dim": self.settings["svae"]["latent_dim"],
                "sequence_length": self.sample_length, "reconstruction": "posterior mean, windows of training"}
