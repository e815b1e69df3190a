"""Synthetic lesions, hyperintense in T2: brain tumours (BraTS-like) and MS white-matter lesions."""

from __future__ import annotations

import numpy as np

from pddpm.demo.fields import rotation_matrix

# BraTS label values
NECROTIC, OEDEMA, ENHANCING = 1, 2, 4


def _random_direction_field(rng: np.random.Generator, amplitude: float, modes: int = 4):
    """h(unit direction) -> relative radius change: a few random low-frequency waves on the sphere,
    so that tumour outlines are lumpy rather than spheres."""
    vs = rng.normal(size=(modes, 3))
    vs /= np.linalg.norm(vs, axis=1, keepdims=True)
    freq = rng.uniform(0.5, 2.0, size=modes)
    phase = rng.uniform(0, 2 * np.pi, size=modes)
    amp = rng.normal(0, amplitude, size=modes)

    def h(dx, dy, dz, r):
        out = np.zeros_like(r)
        inv = 1.0 / np.maximum(r, 1e-3)
        for v, f, p, a in zip(vs, freq, phase, amp, strict=True):
            out += np.float32(a) * np.cos(np.float32(np.pi * f) * (dx * v[0] + dy * v[1] + dz * v[2]) * inv + np.float32(p))
        return out
    return h


def tumour_params(rng: np.random.Generator, centre_world: np.ndarray) -> dict:
    """Size, shape and mass effect of one tumour centred at `centre_world` (mm)."""
    r_core = float(rng.uniform(5.0, 15.0))
    return {"centre": np.asarray(centre_world, float), "r_core": r_core,
            "r_oedema": float(min(r_core * rng.uniform(1.5, 2.5), 38.0)),
            "necrotic_fraction": float(rng.uniform(0.4, 0.7)),
            "mass_mm": float(rng.uniform(0.0, 0.5) * r_core),
            "core_shape": rng.integers(2**31), "oedema_shape": rng.integers(2**31),
            "levels": {"necrotic": float(rng.uniform(0.95, 1.1)), "enhancing": float(rng.uniform(0.7, 0.8)),
                       "oedema": float(rng.uniform(0.8, 0.95))}}


def mass_effect(x, y, z, params: dict):
    """Displacement (mm) to subtract from sampling points so tissue is pushed away from the tumour:
    m * r0^2 / (r^2 + r0^2) along the radius; its slope stays below 1, so the warp is invertible."""
    m, r0 = params["mass_mm"], params["r_oedema"]
    c = params["centre"]
    dx, dy, dz = x - np.float32(c[0]), y - np.float32(c[1]), z - np.float32(c[2])
    r = np.sqrt(dx * dx + dy * dy + dz * dz) + np.float32(1e-3)
    f = np.float32(m * r0 * r0) / ((r * r + np.float32(r0 * r0)) * r)
    return dx * f, dy * f, dz * f


def tumour_box(shape, affine: np.ndarray, params: dict) -> tuple[slice, slice, slice]:
    """The voxel box that holds the tumour however lumpy (1.5 oedema radii, +2 mm)."""
    spacing = np.abs(np.diag(affine)[:3])
    ijk_c = np.linalg.solve(affine, np.append(params["centre"], 1.0))[:3]
    half = np.ceil((params["r_oedema"] * 1.5 + 2) / spacing).astype(int)
    lo = np.maximum(np.round(ijk_c).astype(int) - half, 0)
    hi = np.minimum(np.round(ijk_c).astype(int) + half + 1, shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))


def paint_tumour(image: np.ndarray, brain: np.ndarray, csf: np.ndarray, affine: np.ndarray,
                 params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Paint a tumour (necrotic core, enhancing rim, oedema) into `image` (T2-like units, CSF ~ 1) in
    place; returns (image, BraTS label map). Labels stay inside `brain`; oedema avoids pure CSF.
    `csf` (CSF probability) is read only inside `tumour_box`."""
    label = np.zeros(image.shape, np.uint8)
    box = tumour_box(image.shape, affine, params)
    ijk_c = np.linalg.solve(affine, np.append(params["centre"], 1.0))[:3]
    idx = np.ogrid[box]
    dx, dy, dz = ((idx[a] - ijk_c[a]).astype(np.float32) * np.float32(affine[a, a]) for a in range(3))
    r = np.sqrt(dx * dx + dy * dy + dz * dz)
    h_core = _random_direction_field(np.random.default_rng(params["core_shape"]), 0.12)
    h_oed = _random_direction_field(np.random.default_rng(params["oedema_shape"]), 0.2)
    r_core = r / (1 + h_core(dx, dy, dz, r))
    r_oed = r / (1 + h_oed(dx, dy, dz, r))
    rc, ro, rn = params["r_core"], params["r_oedema"], params["r_core"] * params["necrotic_fraction"]
    in_brain = brain[box]
    tissue_ok = in_brain & (csf[box] < 0.7)
    lv = params["levels"]
    sub = image[box]
    # soft 1 mm edges (partial volume), hard labels at the half-way surface
    for radius, dist, level, ok in ((ro, r_oed, lv["oedema"], tissue_ok), (rc, r_core, lv["enhancing"], in_brain),
                                    (rn, r_core, lv["necrotic"], in_brain)):
        w = np.clip(0.5 + (radius - dist), 0, 1) * ok
        sub[...] = sub * (1 - w) + np.float32(level) * w
    lab = label[box]
    lab[(r_oed <= ro) & tissue_ok] = OEDEMA
    lab[(r_core <= rc) & in_brain] = ENHANCING
    lab[(r_core <= rn) & in_brain] = NECROTIC
    return image, label


def paint_ms_lesions(rng: np.random.Generator, image: np.ndarray, wm_prob: np.ndarray, brain: np.ndarray,
                     spacing, level: float, n_range=(5, 30), diam_mm=(3.0, 15.0)) -> tuple[np.ndarray, np.ndarray, int]:
    """Paint 5-30 ovoid hyperintensities (major diameter 3-15 mm, log-uniform so most are small) centred
    in white matter; returns (image, binary consensus label, number of lesions)."""
    label = np.zeros(image.shape, np.uint8)
    spacing = np.asarray(spacing, float)
    candidates = np.flatnonzero((wm_prob > 0.9) & brain)
    if candidates.size == 0:
        candidates = np.flatnonzero((wm_prob > 0.5) & brain)
    n = int(rng.integers(n_range[0], n_range[1] + 1))
    for centre_flat in rng.choice(candidates, size=n, replace=False):
        c = np.array(np.unravel_index(centre_flat, image.shape), float)
        major = float(np.exp(rng.uniform(np.log(diam_mm[0]), np.log(diam_mm[1])))) / 2
        axes = np.array([major, major * rng.uniform(0.5, 1.0), major * rng.uniform(0.4, 0.8)], np.float32)
        rot = rotation_matrix(rng.normal(size=3), rng.uniform(0, np.pi)).astype(np.float32)
        half = np.ceil((major + 1.5) / spacing).astype(int)
        lo = np.maximum(c.astype(int) - half, 0)
        hi = np.minimum(c.astype(int) + half + 1, image.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        idx = np.ogrid[box]
        d = [(idx[a] - c[a]).astype(np.float32) * np.float32(spacing[a]) for a in range(3)]
        # coordinates in the lesion's own axes, then the ellipsoid's normalised radius
        q = sum(((rot[0, k] * d[0] + rot[1, k] * d[1] + rot[2, k] * d[2]) / axes[k]) ** 2 for k in range(3))
        rn = np.sqrt(q)
        inside = brain[box]
        w = np.clip(0.5 + (1 - rn) * np.float32(axes.min()), 0, 1) * inside
        sub = image[box]
        sub[...] = sub * (1 - w) + np.float32(level * rng.uniform(0.92, 1.05)) * w
        label[box] |= ((rn <= 1) & inside).astype(np.uint8)
    return image, label, n
