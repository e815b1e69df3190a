"""Noise for the forward process: fractal simplex noise (pDDPM's default) or Gaussian, vectorised in torch.

The original draws its noise with AnoDDPM's `Simplex_CLASS.rand_2d_octaves` (docs/spec.md section 5):
2D OpenSimplex noise (Kurt Spencer's algorithm as the `opensimplex` package implements it) sampled at
pixel (row y, column x) as noise2(x / f, y / f), summed over `octaves` octaves with f halved and the
amplitude multiplied by `persistence` each octave (no normalisation), with a fresh random permutation
table per call, and returned as fp16. `opensimplex2` below is that 2D algorithm, point for point, on whole
grids at once: every branch of the scalar code becomes a `torch.where`, the permutation lookups are
`gather`s, all octaves and maps are one batch. Given the same permutation it gives the package's values
(to float rounding; tests/test_noise.py checks it). The permutation itself is drawn from the torch
generator (a uniformly random permutation of 0..255, as the original's seeded shuffle is), so a run is
reproducible from its seed and a CUDA generator keeps a training step on the GPU.
"""

from __future__ import annotations

import functools

import torch

from pddpm.config import defaults

# OpenSimplex 2D constants: the lattice skew and its inverse, (1/sqrt(3) - 1)/2 and (sqrt(3) - 1)/2
_STRETCH = -0.211324865405187
_SQUISH = 0.366025403784439
_NORM = 47.0
# the 8 gradients of the 2D lattice (directions to an octagon's vertices), as OpenSimplex's GRADIENTS2
_GRADIENTS = ((5, 2), (2, 5), (-5, 2), (-2, 5), (5, -2), (2, -5), (-5, -2), (-2, -5))


@functools.cache
def _gradient_table(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # made once per device: a host-to-device copy every training step would stall the GPU queue
    return torch.tensor(_GRADIENTS, dtype=dtype, device=device)


def _vertex(gx: torch.Tensor, gy: torch.Tensor, perm: torch.Tensor, xsb: torch.Tensor, ysb: torch.Tensor,
            dx0: torch.Tensor, dy0: torch.Tensor, i, j) -> torch.Tensor:
    """Kernel of the lattice vertex (xsb + i, ysb + j): max(0, 2 - |d|^2)^4 * (gradient . d), d the point's
    offset from the vertex. The geometry (xsb, ..., i, j: (1, P)) is shared by all N maps; only the hash
    of the vertex, and with it the gradient (`gx`, `gy`: (N, 256), one per permuted hash value), is per map."""
    n = perm.shape[0]
    ij = i + j
    skew = (ij.to(dx0.dtype) if torch.is_tensor(ij) else ij) * _SQUISH
    dx, dy = dx0 - i - skew, dy0 - j - skew
    attn = (2 - dx * dx - dy * dy).clamp_min(0)
    attn = attn * attn
    h = torch.gather(perm, 1, ((xsb + i) & 0xFF).expand(n, -1))
    h = (h + (ysb + j)) & 0xFF
    return (attn * attn) * (torch.gather(gx, 1, h) * dx + torch.gather(gy, 1, h) * dy)


def opensimplex2(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """2D OpenSimplex noise (N, P) at the points (x, y), each (1, P) (the same points in every map), for
    N permutation tables `perm` (N, 256) of the integers 0..255. Same dtype as x; in float64 the values
    are the package's.

    The scalar algorithm sums the kernels of four lattice vertices: (1, 0) and (0, 1) of the point's
    rhombus, the base vertex of its triangle ((0, 0) or (1, 1)) and one extra vertex chosen by the
    point's position; here the two chosen vertices are picked per point as integer offsets."""
    perm = perm.long()
    # gradient of hash value p: GRADIENTS2[p & 14 : +2] in the flat table, i.e. gradient (p & 14) / 2
    table = _gradient_table(x.device, x.dtype)[(perm & 0x0E) >> 1]
    gx, gy = table[..., 0].contiguous(), table[..., 1].contiguous()
    # the skewed lattice cell (rhombus) holding each point and the point's position in it
    stretch = (x + y) * _STRETCH
    xs, ys = x + stretch, y + stretch
    xsb, ysb = torch.floor(xs), torch.floor(ys)
    squish = (xsb + ysb) * _SQUISH
    dx0, dy0 = x - (xsb + squish), y - (ysb + squish)
    xins, yins = xs - xsb, ys - ysb
    in_sum = xins + yins
    xsb, ysb = xsb.long(), ysb.long()

    lower = in_sum <= 1  # the triangle at (0, 0); else the one at (1, 1)
    x_gt_y = xins > yins
    # lower triangle: (0, 0) one of the two closest vertices -> extra vertex (1, -1) or (-1, 1), else (1, 1)
    zl = 1 - in_sum
    near_l = (zl > xins) | (zl > yins)
    # upper triangle: (0, 0) one of the two closest -> extra vertex (2, 0) or (0, 2), else (0, 0)
    zu = 2 - in_sum
    near_u = (zu < xins) | (zu < yins)
    one = torch.ones_like(xsb)
    i_lo = torch.where(near_l, torch.where(x_gt_y, one, -one), one)
    j_lo = torch.where(near_l, -i_lo, one)
    i_up = torch.where(near_u & x_gt_y, 2 * one, 0 * one)
    j_up = torch.where(near_u & ~x_gt_y, 2 * one, 0 * one)
    i_ext = torch.where(lower, i_lo, i_up)
    j_ext = torch.where(lower, j_lo, j_up)
    base = (~lower).long()  # (0, 0) below, (1, 1) above

    value = _vertex(gx, gy, perm, xsb, ysb, dx0, dy0, 1, 0)
    value = value + _vertex(gx, gy, perm, xsb, ysb, dx0, dy0, 0, 1)
    value = value + _vertex(gx, gy, perm, xsb, ysb, dx0, dy0, base, base)
    value = value + _vertex(gx, gy, perm, xsb, ysb, dx0, dy0, i_ext, j_ext)
    return value / _NORM


def random_permutations(n: int, generator: torch.Generator | None = None,
                        device: str | torch.device | None = None) -> torch.Tensor:
    """(n, 256) independent uniformly random permutations of 0..255 (the original's fresh seed per call),
    drawn in one call on the generator's device: argsort of 62-bit random keys (ties have probability
    ~1e-14, and argsort still returns a permutation)."""
    gdev = generator.device if generator is not None else torch.device(device or "cpu")
    keys = torch.randint(0, 2**62, (n, 256), generator=generator, device=gdev)
    return keys.argsort(dim=1)


def simplex_octaves(n: int, height: int, width: int, octaves: int, persistence: float, frequency: float,
                    generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                    perm: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`n` independent fractal simplex maps (n, height, width) in `dtype`, as the original's
    `rand_2d_octaves`: map[y, x] = sum_o persistence^o * noise2(x / f_o, y / f_o), f_o = frequency / 2^o.

    The permutations (n, 256) are drawn from `generator` unless given as `perm`."""
    if perm is None:
        perm = random_permutations(n, generator, device)
    perm = perm.to(device)
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    freqs = float(frequency) / 2.0 ** torch.arange(octaves, device=device, dtype=dtype)
    amps = float(persistence) ** torch.arange(octaves, device=device, dtype=dtype)
    # all octaves in one batch: (O * H * W) points, the same for every map
    cx = (gx.reshape(1, -1) / freqs[:, None]).reshape(1, -1)
    cy = (gy.reshape(1, -1) / freqs[:, None]).reshape(1, -1)
    values = opensimplex2(cx, cy, perm).reshape(n, octaves, height * width)
    return (values * amps[None, :, None]).sum(dim=1).reshape(n, height, width)


@functools.cache
def _defaults() -> dict:
    # once per process: make_noise runs every training step
    return defaults("diffusion", "noise")


def make_noise(shape, noise_cfg: dict | None = None, generator: torch.Generator | None = None,
               device: str | torch.device = "cpu") -> torch.Tensor:
    """Noise of `shape` (B, C, H, W), float32, as configured by `diffusion.noise` (type simplex or gaussian).

    Simplex: one map per call shared by the whole batch as the original, or one per sample (`per_sample`),
    rounded to float16 as the original returned it (values exactly the fp16 ones, dtype float32).
    Random numbers come from `generator` (a torch.Generator on the CPU or on `device`) so that runs are
    reproducible.
    """
    cfg = {**_defaults(), **(noise_cfg or {})}
    b, c, h, w = shape
    if cfg["type"] == "gaussian":
        gdev = generator.device if generator is not None else torch.device("cpu")
        return torch.randn(tuple(shape), generator=generator, device=gdev).to(device)
    if cfg["type"] != "simplex":
        raise ValueError(f"diffusion.noise.type must be simplex or gaussian, got {cfg['type']!r}")
    n = b * c if cfg["per_sample"] else c
    maps = simplex_octaves(n, h, w, cfg["octaves"], cfg["persistence"], cfg["frequency"],
                           generator=generator, device=device)
    maps = maps.to(torch.float16).to(torch.float32)
    if cfg["per_sample"]:
        return maps.reshape(b, c, h, w)
    return maps.reshape(1, c, h, w).expand(b, -1, -1, -1).contiguous()
