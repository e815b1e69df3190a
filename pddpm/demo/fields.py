"""Random smooth fields of the demo: pose, anatomical deformation, bias field, Rician noise.

Everything is built from 1D profiles and broadcasting so that a 6-million-voxel volume costs tens of
milliseconds per field (the target is < 3 s per subject on one core)."""

from __future__ import annotations

import numpy as np


def rotation_matrix(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rodrigues: rotation by `angle_rad` about unit `axis`."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)


def random_pose(rng: np.random.Generator, max_rot_deg: float = 15.0, max_trans_mm: float = 10.0,
                max_scale: float = 0.08) -> dict:
    """A head pose: rotation about a random axis by up to `max_rot_deg`, a translation of up to
    `max_trans_mm` (inside a ball) and a per-axis head size factor within 1 +- `max_scale`."""
    axis = rng.normal(size=3)
    angle = np.deg2rad(rng.uniform(0, max_rot_deg))
    direction = rng.normal(size=3)
    trans = direction / np.linalg.norm(direction) * max_trans_mm * rng.uniform() ** (1 / 3)
    scale = rng.uniform(1 - max_scale, 1 + max_scale, size=3)
    return {"rotation": rotation_matrix(axis, angle), "angle_deg": float(np.rad2deg(angle)),
            "translation": trans, "scale": scale}


def native_to_atlas(pose: dict, brain_centre: np.ndarray) -> np.ndarray:
    """4x4 map from scanner (native world, mm) to atlas world: the scanner's isocentre sits on the
    brain centre shifted by the pose's translation; a head `scale` times the atlas brain in native
    space is shrunk back by 1/scale."""
    m = np.eye(4)
    m[:3, :3] = pose["rotation"] @ np.diag(1.0 / pose["scale"])
    m[:3, 3] = np.asarray(brain_centre, float) + pose["translation"]
    return m


def _profile(rng: np.random.Generator, n: int, spacing: float, wavelengths=(60.0, 160.0),
             modes: int = 3) -> np.ndarray:
    """A smooth random 1D function on `n` samples, normalised to max |f| = 1."""
    x = np.arange(n, dtype=np.float32) * spacing
    f = np.zeros(n, np.float32)
    for _ in range(modes):
        lam = rng.uniform(*wavelengths)
        f += rng.normal() * np.cos(2 * np.pi * x / lam + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return f / max(float(np.abs(f).max()), 1e-6)


def smooth_displacement(rng: np.random.Generator, shape, spacing, amplitude_mm: float = 3.0,
                        rank: int = 3) -> list[np.ndarray]:
    """Three displacement components (mm) over a grid: each a sum of `rank` separable products of
    smooth 1D profiles (wavelengths 60-160 mm), so a smooth, invertible warp of a few mm."""
    comps = []
    for _ in range(3):
        u = np.zeros(shape, np.float32)
        for _ in range(rank):
            fx, fy, fz = (_profile(rng, n, s) for n, s in zip(shape, spacing, strict=True))
            u += rng.normal() * fx[:, None, None] * fy[None, :, None] * fz[None, None, :]
        comps.append(u * np.float32(amplitude_mm / np.sqrt(rank)))
    return comps


def bias_field(rng: np.random.Generator, shape, max_gain: float = 0.3, order: int = 3) -> np.ndarray:
    """Multiplicative low-frequency bias: exp of a random polynomial of degree `order` over the field
    of view scaled to [-1, 1]^3 (as TorchIO's RandomBiasField). Rescaled so that over the central 60 %
    of the field of view (where the brain is) it spans about 1/(1 + g) .. 1 + g, g uniform in
    [max_gain / 2, max_gain]; the corners, where a cubic runs away, are capped at x2."""
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    log_b = np.zeros(shape, np.float32)
    for i in range(order + 1):
        for j in range(order + 1 - i):
            # sum over the z powers first: one full-volume multiply-add per (i, j)
            zpoly = np.zeros_like(z)
            for k in range(order + 1 - i - j):
                zpoly += np.float32(rng.uniform(-1, 1)) * z ** k
            log_b += (x[:, None] ** i * y[None, :] ** j)[:, :, None] * zpoly[None, None, :]
    centre = tuple(slice(int(n * 0.2), int(np.ceil(n * 0.8)), 2) for n in shape)
    log_b -= np.float32(np.median(log_b[centre]))  # neither brightens nor darkens the brain on average
    log_b *= np.float32(np.log1p(rng.uniform(max_gain / 2, max_gain)) / max(float(np.abs(log_b[centre]).max()), 1e-6))
    np.clip(log_b, -np.log(2), np.log(2), out=log_b)
    return np.exp(log_b, dtype=np.float32)


def rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise: Rician inside, Rayleigh in the air."""
    real = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(real * real + imag * imag)
