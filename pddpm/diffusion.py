"""Gaussian diffusion as pDDPM uses it: cosine schedule, forward noising, x0-prediction with L1 loss."""

from __future__ import annotations

import math

import torch


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """alpha-bar_t of the cosine schedule (Nichol & Dhariwal), via betas clipped at `max_beta` as the original."""
    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f((i + 1) / timesteps) / f(i / timesteps), max_beta) for i in range(timesteps)]
    # float64 for the cumulative product, as the original computed it in numpy float64
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), dim=0)


class Diffusion:
    """Forward process q(x_t | x0) of a T-step cosine schedule; the network predicts x0 (`pred_x0`)."""

    objective = "pred_x0"

    def __init__(self, timesteps: int = 1000, cosine_s: float = 0.008):
        self.timesteps = int(timesteps)
        self.cosine_s = float(cosine_s)
        self.alphas_cumprod = cosine_alphas_cumprod(self.timesteps, self.cosine_s)
        self.betas = 1 - self.alphas_cumprod / torch.cat([torch.ones(1, dtype=torch.float64),
                                                          self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1 - self.alphas_cumprod).sqrt()

    @classmethod
    def from_config(cls, cfg: dict | None) -> Diffusion:
        cfg = cfg or {}
        return cls(timesteps=cfg.get("timesteps", 1000), cosine_s=cfg.get("cosine_s", 0.008))

    def _coef(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        c = table.to(like.device)[t.to(like.device).long()].to(like.dtype)
        return c.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, per sample t ((B,) long)."""
        return (self._coef(self.sqrt_alphas_cumprod, t, x0) * x0
                + self._coef(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None,
                         device: str | torch.device = "cpu") -> torch.Tensor:
        """t ~ U{0, ..., T-1}, one per sample."""
        return torch.randint(0, self.timesteps, (n,), generator=generator).to(device)

    @staticmethod
    def loss(pred_x0: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """L1 between the predicted and the clean image, mean over all pixels."""
        return (pred_x0 - x0).abs().mean()
