"""The 2D UNet of ADM (guided diffusion) as pDDPM configures it, widths and depths from the config.

Residual blocks with GroupNorm + SiLU, time conditioning by scale-shift (FiLM) or by addition (the DDPM
baseline), down/up-sampling inside residual blocks, self-attention only in the middle block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding of the timesteps (B,) -> (B, dim), as ADM (cos first, then sin)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def zero_module(module: nn.Module) -> nn.Module:
    """ADM initialises the last layer of every residual branch to zero."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: int, groups: int, dropout: float,
                 scale_shift: bool, updown: str | None = None):
        super().__init__()
        self.scale_shift = scale_shift
        self.updown = updown
        self.in_norm = nn.GroupNorm(groups, channels)
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if scale_shift
                                                             else out_channels))
        self.out_norm = nn.GroupNorm(groups, out_channels)
        self.out_rest = nn.Sequential(nn.SiLU(), nn.Dropout(dropout),
                                      zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.updown == "down":
            return F.avg_pool2d(x, 2)
        if self.updown == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.in_norm(x))
        h = self.in_conv(self._resample(h))
        x = self._resample(x)
        e = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + e)
        return self.skip(x) + self.out_rest(h)


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, heads: int, head_channels: int, groups: int):
        super().__init__()
        if channels % head_channels:
            raise ValueError(f"{channels} channels are not divisible into heads of {head_channels} (unet.attention_head_channels)")
        self.heads = channels // head_channels if head_channels else heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))
        # ADM's legacy head layout: (B, heads * 3 * ch, T) -> per head q, k, v
        q, k, v = qkv.reshape(b, self.heads, 3 * c // self.heads, h * w).transpose(2, 3).chunk(3, dim=-1)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, ch)
        a = a.transpose(2, 3).reshape(b, c, h * w)
        return x + self.proj_out(a).reshape(b, c, h, w)


class UNet(nn.Module):
    """net(x_t (B, C, H, W), t (B,)[, cond (B, cond_dim)]) -> x0 prediction (B, C, H, W).

    `cond_dim` > 0 (cDDPM): a conditioning vector per sample is concatenated to the time embedding, so
    every residual block's embedding projection (scale-shift or addition) reads both; 0 builds exactly
    the unconditioned network (same modules, same parameters)."""

    # no defaults here: they live in the schema's `unet` section (build_unet)
    def __init__(self, *, in_channels: int, out_channels: int, base_width: int, channel_mult, num_res_blocks: int,
                 attention_heads: int, attention_head_channels: int, groups: int, dropout: float,
                 scale_shift: bool, cond_dim: int = 0):
        super().__init__()
        self.base_width = base_width
        self.cond_dim = cond_dim
        emb_dim = 4 * base_width
        self.time_embed = nn.Sequential(nn.Linear(base_width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.downsample_factor = 2 ** (len(channel_mult) - 1)

        def res(ch_in, ch_out, updown=None):
            return ResBlock(ch_in, emb_dim + cond_dim, ch_out, groups, dropout, scale_shift, updown)

        self.input_conv = nn.Conv2d(in_channels, base_width, 3, padding=1)
        self.down = nn.ModuleList()
        chans = [base_width]
        ch = base_width
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(res(ch, mult * base_width))
                ch = mult * base_width
                chans.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(res(ch, ch, "down"))
                chans.append(ch)
        self.middle = nn.ModuleList([res(ch, ch), AttentionBlock(ch, attention_heads, attention_head_channels, groups),
                                     res(ch, ch)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                block = [res(ch + chans.pop(), mult * base_width)]
                ch = mult * base_width
                if level and i == num_res_blocks:
                    block.append(res(ch, ch, "up"))
                self.up.append(nn.ModuleList(block))
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.base_width).to(x.dtype))
        if self.cond_dim:
            if cond is None or cond.shape[-1] != self.cond_dim:
                raise ValueError(f"this UNet is conditioned: it needs cond of shape (B, {self.cond_dim})")
            emb = torch.cat([emb, cond.to(emb.dtype)], dim=1)
        elif cond is not None:
            raise ValueError("this UNet has no conditioning input (cond_dim 0)")
        h = self.input_conv(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        h = self.middle[0](h, emb)
        h = self.middle[1](h)
        h = self.middle[2](h, emb)
        for blocks in self.up:
            h = blocks[0](torch.cat([h, skips.pop()], dim=1), emb)
            for b in blocks[1:]:
                h = b(h, emb)
        return self.out(h)


def build_unet(unet: dict, image_size, scale_shift: bool, in_channels: int = 1, out_channels: int = 1,
               cond_dim: int = 0) -> UNet:
    """The UNet of the config section `unet` (complete, e.g. from pddpm.config.with_defaults), after
    checking that slices of `image_size` pass its downsamplings; `cond_dim` > 0 adds cDDPM's conditioning."""
    from pddpm.errors import PddpmInputError

    h, w = image_size
    levels = len(unet["channel_mult"]) - 1
    if h % 2 ** levels or w % 2 ** levels:
        raise PddpmInputError(
            f"slices of {h} x {w} pixels cannot pass the UNet's {levels} downsamplings (sides must be "
            f"divisible by {2 ** levels}); change slices.target_spacing_mm / fov_mm or unet.channel_mult")
    return UNet(in_channels=in_channels, out_channels=out_channels, base_width=unet["base_width"],
                channel_mult=tuple(unet["channel_mult"]), num_res_blocks=unet["num_res_blocks"],
                attention_heads=unet["attention_heads"], attention_head_channels=unet["attention_head_channels"],
                groups=unet["groups"], dropout=unet["dropout"], scale_shift=scale_shift, cond_dim=cond_dim)
