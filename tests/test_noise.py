"""Simplex noise: the original's 2D OpenSimplex octave function (`rand_2d_octaves`), field for field against
the `opensimplex` package where the permutation can be shared, and in its statistics against the package
driven as the original drove it; sharing across the batch, reproducibility, defaults from the schema."""

import numpy as np
import opensimplex
import pytest
import torch

from pddpm.config import defaults
from pddpm.noise import make_noise, opensimplex2, random_permutations, simplex_octaves

SIMPLEX = {"type": "simplex", "octaves": 6, "persistence": 0.8, "frequency": 64}
SIZE = 96


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # the test machine is shared; the package's numba kernels would spin a thread per core
    try:
        import numba

        numba.set_num_threads(1)
    except ImportError:  # the package then runs as pure Python: slower, same values
        pass
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def package_perm(seed: int) -> torch.Tensor:
    """The permutation table the package derives from `seed` (its private `_perm`: the only way to give
    our code the same table)."""
    return torch.from_numpy(opensimplex.OpenSimplex(int(seed))._perm.copy())


def rand_2d_octaves(seed: int, size: int = SIZE, octaves: int = 6, persistence: float = 0.8,
                    frequency: float = 64) -> np.ndarray:
    """The original's `Simplex_CLASS.rand_2d_octaves` (float64) on the package seeded with `seed`."""
    simplex = opensimplex.OpenSimplex(int(seed))
    y, x = np.arange(size), np.arange(size)
    noise = np.zeros((size, size))
    amplitude = 1.0
    for _ in range(octaves):
        noise += amplitude * simplex.noise2array(x / frequency, y / frequency)
        frequency /= 2
        amplitude *= persistence
    return noise


def original_seeds(n: int) -> np.ndarray:
    # the original seeds every call with np.random.randint(-10000000000, 10000000000)
    return np.random.default_rng(2023).integers(-10**10, 10**10, n)


def statistics(maps) -> dict:
    """Spread of (N, 96, 96) maps over a slice and within a 48 x 48 patch (std over the pixels, mean over
    maps and patches) and the correlation of neighbouring pixels (both axes, mean over maps)."""
    m = torch.as_tensor(np.asarray(maps, dtype=np.float64))
    n, h, w = m.shape
    patches = m.unfold(1, h // 2, h // 2).unfold(2, w // 2, w // 2).reshape(n, 4, -1)

    def corr(a, b):
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.square().sum(1) * b.square().sum(1)).sqrt()

    horizontal = corr(m[:, :, :-1].reshape(n, -1), m[:, :, 1:].reshape(n, -1))
    vertical = corr(m[:, :-1, :].reshape(n, -1), m[:, 1:, :].reshape(n, -1))
    return {"slice_std": m.reshape(n, -1).std(1).mean().item(), "patch_std": patches.std(-1).mean().item(),
            "neighbour_corr": ((horizontal + vertical) / 2).mean().item()}


def grid(size, frequency, dtype):
    ys = torch.arange(size, dtype=dtype)
    gy, gx = torch.meshgrid(ys, ys, indexing="ij")
    return (gx / frequency).reshape(1, -1), (gy / frequency).reshape(1, -1)


@pytest.mark.parametrize("seed", [0, 3, 3141, -8_123_456_789])
@pytest.mark.parametrize("frequency", [64, 8, 2, 0.7])
def test_single_octave_equals_the_package(seed, frequency):
    x, y = grid(SIZE, frequency, torch.float64)
    want = opensimplex.OpenSimplex(seed).noise2array(np.arange(SIZE) / frequency, np.arange(SIZE) / frequency)
    got = opensimplex2(x, y, package_perm(seed)[None]).reshape(SIZE, SIZE).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)  # bit for bit on x86 (measured 0.0)
    x32, y32 = grid(SIZE, frequency, torch.float32)
    got32 = opensimplex2(x32, y32, package_perm(seed)[None]).reshape(SIZE, SIZE).numpy()
    np.testing.assert_allclose(got32, want, rtol=0, atol=6e-5)  # float32 rounding of coordinates up to 137


def test_negative_and_scattered_points_equal_the_package():
    # every branch of the algorithm (both triangles, each extra-vertex case) and the lattice wrap at 256
    rng = np.random.default_rng(0)
    pts = rng.uniform(-300, 300, (2, 4000))
    simplex = opensimplex.OpenSimplex(77)
    want = np.array([simplex.noise2(float(a), float(b)) for a, b in pts.T])
    x, y = (torch.from_numpy(p)[None] for p in pts)
    got = opensimplex2(x, y, package_perm(77)[None])[0].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [1, 42, -5_000_000_001])
def test_octave_sum_equals_rand_2d_octaves(seed):
    want = rand_2d_octaves(seed)
    perms = torch.stack([package_perm(seed), package_perm(seed + 1)])  # two maps, each its own table
    got = simplex_octaves(2, SIZE, SIZE, 6, 0.8, 64, perm=perms, dtype=torch.float64).numpy()
    np.testing.assert_allclose(got[0], want, rtol=0, atol=1e-13)
    np.testing.assert_allclose(got[1], rand_2d_octaves(seed + 1), rtol=0, atol=1e-13)
    # the float32 default, as the original returned it (fp16): equal but for a rare last fp16 digit
    got32 = simplex_octaves(1, SIZE, SIZE, 6, 0.8, 64, perm=perms[:1])[0].numpy()
    half, want_half = got32.astype(np.float16), want.astype(np.float16)
    assert (half == want_half).mean() > 0.99
    np.testing.assert_allclose(got32, want, rtol=0, atol=1e-5)
    # the rest one fp16 step apart (2^-10 relative), or float32 rounding near zero
    np.testing.assert_allclose(half.astype(np.float64), want_half, rtol=2**-10, atol=1e-5)


def test_statistics_match_the_original():
    """Our maps (permutations from the torch generator) against the package seeded as the original seeds
    it: the spread over a slice and a patch within 2 %, neighbour correlation within 0.005. The numbers of
    maps keep the sampling error of each difference under a fifth of its tolerance (per-map spread varies
    ~11 %, per-map correlation ~0.011)."""
    ref = statistics(np.stack([rand_2d_octaves(s) for s in original_seeds(600)]).astype(np.float16))
    ours_maps = torch.cat([make_noise((32, 1, SIZE, SIZE), {**SIMPLEX, "per_sample": True}, gen(s))[:, 0]
                           for s in range(40)])  # batches of 32 as in training; 1280 maps
    ours = statistics(ours_maps)
    for key in ("slice_std", "patch_std"):
        assert ours[key] == pytest.approx(ref[key], rel=0.02), (key, ours, ref)
    assert ours["neighbour_corr"] == pytest.approx(ref["neighbour_corr"], abs=0.005), (ours, ref)
    # the reference really is the original's noise (issue figures: ~0.54-0.58 over a slice, 0.49 in a
    # patch, 0.95 neighbour correlation), not Gaussian
    assert 0.5 < ref["slice_std"] < 0.6 and 0.45 < ref["patch_std"] < 0.53 and 0.94 < ref["neighbour_corr"] < 0.96


def test_values_are_fp16_as_the_original_returned_them():
    m = make_noise((2, 1, SIZE, SIZE), SIMPLEX, gen(0))
    assert m.dtype == torch.float32
    assert torch.equal(m, m.half().float())
    assert m.abs().max() < 2.5 and abs(m.mean().item()) < 0.5


def test_random_permutations_are_permutations_and_seeded():
    p = random_permutations(50, gen(0))
    assert p.shape == (50, 256)
    assert torch.equal(p.sort(dim=1).values, torch.arange(256).expand(50, -1))
    assert torch.equal(p, random_permutations(50, gen(0)))
    assert len({tuple(r.tolist()) for r in p}) == 50
    # uniform: each value lands in each position with probability 1/256 (chi-square over 20,000 draws)
    many = torch.cat([random_permutations(1000, gen(s)) for s in range(20)])
    counts = torch.bincount(many[:, 0], minlength=256).double()
    chi2 = ((counts - counts.mean()) ** 2 / counts.mean()).sum().item()
    assert chi2 < 340  # 255 degrees of freedom: p < 0.0003 above 340


def test_octaves_add_finer_detail():
    one = make_noise((8, 1, 64, 64), {**SIMPLEX, "octaves": 1, "per_sample": True}, gen(0))
    six = make_noise((8, 1, 64, 64), {**SIMPLEX, "per_sample": True}, gen(0))
    assert statistics(six[:, 0])["neighbour_corr"] < statistics(one[:, 0])["neighbour_corr"]


def test_seed_determinism_and_batch_sharing():
    a = make_noise((4, 1, 96, 96), SIMPLEX, gen(7))
    b = make_noise((4, 1, 96, 96), SIMPLEX, gen(7))
    c = make_noise((4, 1, 96, 96), SIMPLEX, gen(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.equal(a[0], a[3]), "the original shares one map across the batch"
    p = make_noise((4, 1, 96, 96), {**SIMPLEX, "per_sample": True}, gen(7))
    assert not torch.allclose(p[0], p[1])
    # a later call of the same generator draws a fresh permutation, as the original's per-call seed
    g = gen(7)
    assert not torch.equal(make_noise((1, 1, 96, 96), SIMPLEX, g), make_noise((1, 1, 96, 96), SIMPLEX, g))


def test_defaults_come_from_the_schema():
    assert defaults("diffusion", "noise") == {**SIMPLEX, "per_sample": False}
    assert torch.equal(make_noise((2, 1, 32, 32), None, gen(3)), make_noise((2, 1, 32, 32), SIMPLEX, gen(3)))
    import pddpm.noise

    assert not hasattr(pddpm.noise, "DEFAULTS")


def test_gaussian_option_and_bad_type():
    g = make_noise((8, 1, 32, 32), {"type": "gaussian"}, gen(0))
    assert g.std().item() == pytest.approx(1.0, abs=0.05)
    assert abs(statistics(g[:, 0])["neighbour_corr"]) < 0.05
    with pytest.raises(ValueError, match="simplex or gaussian"):
        make_noise((1, 1, 8, 8), {"type": "perlin"}, gen(0))
