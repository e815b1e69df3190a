"""Gaussian diffusion as pDDPM uses it: cosine schedule and forward noising q(x_t | x0) (docs/spec.md, section 5)."""

from __future__ import annotations

import math

import torch


def cosine_alphas_cumprod(timesteps: int, s: float, max_beta: float = 0.999) -> torch.Tensor:
    """alpha-bar_t of the cosine schedule (Nichol & Dhariwal), via betas clipped at `max_beta` as the original."""
    def f(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f((i + 1) / timesteps) / f(i / timesteps), max_beta) for i in range(timesteps)]
    # float64 for the cumulative product, as the original computed it in numpy float64
    return torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), dim=0)


class Diffusion:
    """Forward process q(x_t | x0) of a T-step cosine schedule; the network predicts x0 (`pred_x0`)."""

    objective = "pred_x0"

    def __init__(self, timesteps: int | None = None, cosine_s: float | None = None):
        """`None` takes the schema's `diffusion` default."""
        from pddpm.config import defaults

        self.timesteps = int(timesteps if timesteps is not None else defaults("diffusion", "timesteps"))
        self.cosine_s = float(cosine_s if cosine_s is not None else defaults("diffusion", "cosine_s"))
        self.alphas_cumprod = cosine_alphas_cumprod(self.timesteps, self.cosine_s)
        self.betas = 1 - self.alphas_cumprod / torch.cat([torch.ones(1, dtype=torch.float64),
                                                          self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1 - self.alphas_cumprod).sqrt()
        self._on_device: dict = {}

    @classmethod
    def from_config(cls, cfg: dict | None) -> Diffusion:
        """From the config section `diffusion` (missing keys: schema defaults)."""
        cfg = cfg or {}
        return cls(timesteps=cfg.get("timesteps"), cosine_s=cfg.get("cosine_s"))

    def _coef(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # the tables are copied to a device once, not on every call (a host-device copy per step on CUDA)
        key = (name, like.device)
        if key not in self._on_device:
            self._on_device[key] = getattr(self, name).to(like.device)
        c = self._on_device[key][t.to(like.device).long()].to(like.dtype)
        return c.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, per sample t ((B,) long)."""
        return (self._coef("sqrt_alphas_cumprod", t, x0) * x0
                + self._coef("sqrt_one_minus_alphas_cumprod", t, x0) * noise)
