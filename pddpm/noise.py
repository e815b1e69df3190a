"""Noise for the forward process: fractal simplex noise (pDDPM's default) or Gaussian, vectorised in torch.

The original (AnoDDPM's `Simplex_CLASS.rand_3d_fixed_T_octaves`) samples 3D simplex noise on the slice's
pixel grid (x / f, y / f, T / f) for `octaves` octaves, halving f (so each octave is twice as fine) and
multiplying the amplitude by `persistence`, summing without normalisation, with a fresh random seed
(permutation table) per call. The same semantics are reproduced here on the whole grid at once with
Gustavson's 3D simplex noise; a per-call random permutation plays the seed and a random third coordinate
plays T. Gustavson's lattice has features about half the size of OpenSimplex's and a larger spread, so
coordinates and values are scaled to match the original's noise: single-octave std 0.317 and the same
pixel autocorrelation (measured against the `opensimplex` package the original's code derives from;
6-octave maps then have std 0.50 and neighbour correlation 0.96, as the original's).
"""

from __future__ import annotations

import torch

_GRAD3 = torch.tensor([[1, 1, 0], [-1, 1, 0], [1, -1, 0], [-1, -1, 0], [1, 0, 1], [-1, 0, 1],
                       [1, 0, -1], [-1, 0, -1], [0, 1, 1], [0, -1, 1], [0, 1, -1], [0, -1, -1]],
                      dtype=torch.float32)
_F3, _G3 = 1.0 / 3.0, 1.0 / 6.0
# calibration to OpenSimplex (see the module docstring): feature size and amplitude
_COORD_SCALE = 0.53
_VALUE_SCALE = 0.747

DEFAULTS = {"type": "simplex", "octaves": 6, "persistence": 0.8, "frequency": 64, "per_sample": False}


def simplex3d(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """3D simplex noise at points (x, y, z) (same shape (B, ...)) with per-map permutations `perm` (B, 512)."""
    b = x.shape[0]
    x, y, z = (v.reshape(b, -1) for v in (x, y, z))
    s = (x + y + z) * _F3
    i, j, k = torch.floor(x + s), torch.floor(y + s), torch.floor(z + s)
    t = (i + j + k) * _G3
    x0, y0, z0 = x - (i - t), y - (j - t), z - (k - t)
    # which of the 6 tetrahedra of the skewed cube holds the point (Gustavson's branch table)
    c1, c2, c3 = x0 >= y0, y0 >= z0, x0 >= z0
    a = c1 & c2
    bb = c1 & ~c2 & c3
    c = c1 & ~c2 & ~c3
    d = ~c1 & ~c2
    e = ~c1 & c2 & ~c3
    f = ~c1 & c2 & c3
    offsets = [
        (0, 0, 0),
        ((a | bb).float(), (e | f).float(), (c | d).float()),
        ((a | bb | c | f).float(), (a | d | e | f).float(), (bb | c | d | e).float()),
        (1, 1, 1),
    ]
    ii, jj, kk = (i.long() & 255), (j.long() & 255), (k.long() & 255)
    grad = _GRAD3.to(x.device)
    total = torch.zeros_like(x)
    for n, (oi, oj, ok) in enumerate(offsets):
        dx, dy, dz = x0 - oi + n * _G3, y0 - oj + n * _G3, z0 - ok + n * _G3
        oi_, oj_, ok_ = (o.long() if torch.is_tensor(o) else o for o in (oi, oj, ok))
        h = torch.gather(perm, 1, kk + ok_)
        h = torch.gather(perm, 1, jj + oj_ + h)
        gi = torch.gather(perm, 1, ii + oi_ + h) % 12
        g = grad[gi]
        tt = (0.6 - dx * dx - dy * dy - dz * dz).clamp_min(0)
        total = total + tt ** 4 * (g[..., 0] * dx + g[..., 1] * dy + g[..., 2] * dz)
    return 32.0 * total


def simplex_octaves(n: int, height: int, width: int, octaves: int = 6, persistence: float = 0.8,
                    frequency: float = 64, generator: torch.Generator | None = None,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """`n` independent fractal simplex maps (n, height, width), float32."""
    # draw on the generator's device (a CUDA generator keeps a training step free of host syncs)
    gdev = generator.device if generator is not None else torch.device("cpu")
    perm = torch.stack([torch.randperm(256, generator=generator, device=gdev) for _ in range(n)])
    perm = torch.cat([perm, perm], dim=1).to(device)
    # the original's third coordinate is the timestep T in [0, 1000)
    tz = torch.randint(0, 1000, (n,), generator=generator, device=gdev).to(device=device, dtype=torch.float32)
    ys = torch.arange(height, device=device, dtype=torch.float32)
    xs = torch.arange(width, device=device, dtype=torch.float32)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    gy, gx = gy.expand(n, -1, -1), gx.expand(n, -1, -1)
    gz = tz.reshape(n, 1, 1).expand(-1, height, width)
    out = torch.zeros(n, height * width, device=device)
    amplitude, freq = 1.0, float(frequency)
    for _ in range(octaves):
        c = _COORD_SCALE / freq
        out += (amplitude * _VALUE_SCALE) * simplex3d(gx * c, gy * c, gz * c, perm)
        freq /= 2
        amplitude *= persistence
    return out.reshape(n, height, width)


def make_noise(shape, noise_cfg: dict | None = None, generator: torch.Generator | None = None,
               device: str | torch.device = "cpu") -> torch.Tensor:
    """Noise of `shape` (B, C, H, W) as configured by `diffusion.noise` (type simplex or gaussian).

    Simplex: one map shared by the whole batch as the original, or one per sample (`per_sample`).
    Random numbers come from `generator` (a torch.Generator on the CPU or on `device`) so that runs are
    reproducible.
    """
    cfg = {**DEFAULTS, **(noise_cfg or {})}
    b, c, h, w = shape
    if cfg["type"] == "gaussian":
        gdev = generator.device if generator is not None else torch.device("cpu")
        return torch.randn(tuple(shape), generator=generator, device=gdev).to(device)
    if cfg["type"] != "simplex":
        raise ValueError(f"diffusion.noise.type must be simplex or gaussian, got {cfg['type']!r}")
    n = b * c if cfg["per_sample"] else c
    maps = simplex_octaves(n, h, w, cfg["octaves"], cfg["persistence"], cfg["frequency"],
                           generator=generator, device=device)
    if cfg["per_sample"]:
        return maps.reshape(b, c, h, w)
    return maps.reshape(1, c, h, w).expand(b, -1, -1, -1).contiguous()
