"""Patched inference: batching invariance, patch/ensemble semantics, seeds, the thresh baseline, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pddpm.device import resolve_device
from pddpm.diffusion import Diffusion
from pddpm.errors import PddpmConfigError, PddpmInputError
from pddpm.infer import (
    infer_arrays,
    load_inference,
    noise_seed,
    reconstruct,
    save_inference,
    seeded_noise,
)
from pddpm.models import build, save_trained
from pddpm.models.patched import member_timesteps

H = W = 16
NOISE = {"type": "simplex", "octaves": 2, "persistence": 0.8, "frequency": 8, "per_sample": False}


def _settings(kind="pddpm"):
    return {"kind": kind, "image_size": [H, W], "patch": {"size": 8, "stride": 8},
            "diffusion": {"timesteps": 1000, "cosine_s": 0.008, "noise": NOISE},
            "unet": {"base_width": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_heads": 1,
                     "attention_head_channels": 8, "groups": 4}}


def _random_net(kind="pddpm"):
    """The real UNet with random weights everywhere (ADM zero-initialises output layers)."""
    torch.manual_seed(0)
    net = build(kind, _settings(kind))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net.eval()


def _kind(net, kind="pddpm", **options):
    """The model kind of the test settings around the network `net` (e.g. a stand-in), inference options set."""
    return build(kind, _settings(kind), network=net).configure_inference(**options)


def _images(n=2, z=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, z, H, W)).astype(np.float16)


class MeanNet(torch.nn.Module):
    """Stand-in whose x0 prediction is the mean of its input: it shows which region was noised."""

    def forward(self, x, t):
        return x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)


class IdentityNet(torch.nn.Module):
    def forward(self, x, t):
        return x


def test_batched_equals_one_patch_at_a_time():
    net = _random_net()  # the model kind, test_timestep 500 (t = 499), the 2 x 2 grid of 8-px patches
    images = _images()
    noise = seeded_noise(NOISE, H, W, 3141, "demo_brats_test")
    one = reconstruct(images, net, noise, batch_size=1, progress=False)
    # 8 items per forward: chunks of 2 slices, crossing the volume boundary (Z = 3)
    some = reconstruct(images, net, noise, batch_size=8, progress=False)
    allb = reconstruct(images, net, noise, batch_size=1000, progress=False)
    np.testing.assert_allclose(some, one, atol=1e-5)
    np.testing.assert_allclose(allb, one, atol=1e-5)
    assert one.shape == images.shape and one.dtype == np.float32
    assert np.abs(one - images).max() > 1e-3  # the random network really changed the images


def test_only_the_patch_is_noised_and_kept():
    diff = Diffusion()
    images = _images(1, 2)
    model = _kind(MeanNet())
    regions = model.regions
    assert regions.shape == (4, H, W)
    noise = seeded_noise(NOISE, H, W, 1, "s")
    rec = reconstruct(images, model, noise, progress=False)
    x0 = torch.from_numpy(images.astype(np.float32))[0] * 2 - 1  # (Z, H, W)
    n = noise(0, 0, 2)[:, 0]
    a = diff.alphas_cumprod[499].item()
    xt_full = a ** 0.5 * x0 + (1 - a) ** 0.5 * n
    for r in regions:
        noised = torch.where(r, xt_full, x0)  # this patch noised, the rest clean
        expect = (noised.mean(dim=(1, 2)) + 1) / 2  # MeanNet prediction, back to [0, 1]
        got = torch.from_numpy(rec[0])[:, r].reshape(2, -1)
        torch.testing.assert_close(got, expect[:, None].expand_as(got), atol=1e-5, rtol=0)


def test_overlapping_patches_are_averaged():
    diff = Diffusion()
    images = _images(1, 1)
    model = _kind(MeanNet(), stride=4)
    regions = model.regions
    assert regions.shape == (9, H, W)
    noise = seeded_noise(NOISE, H, W, 1, "s")
    rec = torch.from_numpy(reconstruct(images, model, noise, progress=False)[0, 0])
    x0 = torch.from_numpy(images.astype(np.float32))[0, 0] * 2 - 1
    a = diff.alphas_cumprod[499].item()
    xt_full = a ** 0.5 * x0 + (1 - a) ** 0.5 * noise(0, 0, 1)[0, 0]
    means = torch.stack([torch.where(r, xt_full, x0).mean() for r in regions])
    expect = (regions.float() * means[:, None, None]).sum(0) / regions.float().sum(0)
    torch.testing.assert_close(rec, (expect + 1) / 2, atol=1e-5, rtol=0)


def test_ddpm_noises_whole_slice_and_ensemble_averages():
    diff = Diffusion()
    images = _images(1, 2)
    model = _kind(IdentityNet(), "ddpm", ensemble_timesteps=[250, 500, 750])
    whole = model.regions
    assert whole.shape == (1, H, W) and whole.all()
    noise = seeded_noise(NOISE, H, W, 5, "s")
    ts = member_timesteps(500, [250, 500, 750])
    assert ts == [249, 499, 749]
    assert model.timesteps == ts
    rec = reconstruct(images, model, noise, progress=False)
    x0 = torch.from_numpy(images.astype(np.float32))[0] * 2 - 1
    members = []
    for e, t in enumerate(ts):
        a = diff.alphas_cumprod[t].item()
        members.append(a ** 0.5 * x0 + (1 - a) ** 0.5 * noise(0, e, 2)[:, 0])
    torch.testing.assert_close(torch.from_numpy(rec[0]), (torch.stack(members).mean(0) + 1) / 2, atol=1e-5, rtol=0)
    assert not torch.equal(noise(0, 0, 2), noise(0, 1, 2))  # members draw different noise


def test_noise_is_seeded_per_volume():
    a = seeded_noise(NOISE, H, W, 3141, "ds_test")
    b = seeded_noise(NOISE, H, W, 3141, "ds_test")
    assert torch.equal(a(1, 0, 3), b(1, 0, 3))
    assert not torch.equal(a(0, 0, 3), a(1, 0, 3))
    assert not torch.equal(a(0, 0, 3), seeded_noise(NOISE, H, W, 3142, "ds_test")(0, 0, 3))
    assert torch.equal(a(0, 0, 3)[0], a(0, 0, 3)[2])  # one map per volume (per_sample: false, as original)
    assert noise_seed(1, "x", 0, 0) != noise_seed(1, "y", 0, 0)


@pytest.mark.parametrize("kind", ["pddpm", "ddpm"])
def test_infer_arrays_with_saved_model_and_round_trip(tmp_path, kind):
    model_path = tmp_path / "model.pt"
    save_trained(_random_net(kind), model_path)
    images = _images()
    masks = np.ones(images.shape, np.uint8)
    kw = {"model": kind, "model_path": model_path, "seed": 7, "stream": "demo_brats_val", "batch_size": 5,
          "device": "cpu", "erosion_iterations": 1, "median_size": 3, "progress": False}
    recons, maps, info = infer_arrays(images, masks, **kw)
    again, _, _ = infer_arrays(images, masks, **{**kw, "batch_size": 64})
    np.testing.assert_allclose(again, recons, atol=1e-5)  # reproducible, whatever the batching
    assert maps.dtype == np.float16 and maps.shape == images.shape
    assert info["n_regions"] == (4 if kind == "pddpm" else 1) and info["timesteps"] == [499]
    out = save_inference(tmp_path / "infer" / "x.npz", recons, maps, ["s1", "s2"], info)
    back = load_inference(out)
    assert back["recon"].dtype == np.float16 and back["subjects"].tolist() == ["s1", "s2"]
    assert int(back["seed"]) == 7 and back["info"]["kind"] == kind
    np.testing.assert_array_equal(back["anomaly"], maps)
    assert list((tmp_path / "infer").iterdir()) == [out]  # no temporary file left behind


def test_thresh_baseline_is_the_intensity():
    images = _images(1, 7)
    masks = np.ones(images.shape, np.uint8)
    recons, maps, info = infer_arrays(images, masks, model="thresh", erosion_iterations=0, median_size=1)
    assert not recons.any()
    np.testing.assert_array_equal(maps, images)
    assert "kind" not in info


def test_bad_inputs(tmp_path):
    model_path = tmp_path / "model.pt"
    save_trained(_random_net(), model_path)
    big = np.zeros((1, 2, 2 * H, 2 * W), np.float16)
    with pytest.raises(PddpmInputError, match="trained on"):
        infer_arrays(big, np.ones(big.shape, np.uint8), model="pddpm", model_path=model_path, progress=False)
    with pytest.raises(PddpmInputError, match="not found"):
        infer_arrays(_images(), np.ones((2, 3, H, W)), model="pddpm", model_path=tmp_path / "missing.pt")
    with pytest.raises(PddpmInputError, match="different grids"):
        infer_arrays(_images(), np.ones((2, 3, H, W + 1)), model="thresh")
    with pytest.raises(PddpmInputError, match="must lie in"):
        member_timesteps(1001, None, 1000)
    with pytest.raises(PddpmInputError, match="not found"):
        load_inference(tmp_path / "nothing.npz")


def test_device_auto_picks_cuda_when_present_and_cuda_without_a_gpu_is_an_error(tmp_path):
    """Inference resolves the device as training does (pddpm.device): no silent CPU fall-back."""
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        return
    model_path = tmp_path / "model.pt"
    save_trained(_random_net(), model_path)
    images = _images()
    with pytest.raises(PddpmConfigError, match="device: cuda.*set device: auto or cpu"):
        infer_arrays(images, np.ones(images.shape, np.uint8), model="pddpm", model_path=model_path,
                     device="cuda", progress=False)


class SmallMemoryNet(torch.nn.Module):
    """Stand-in that behaves like a GPU without room for more than 3 inputs per pass."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x, t):
        self.sizes.append(len(x))
        if len(x) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return x * 0.5


def test_out_of_memory_halves_the_pass_and_keeps_results(caplog):
    images = _images(1, 3)
    noise = seeded_noise(NOISE, H, W, 2, "s")
    small = SmallMemoryNet()
    timings = {}
    with caplog.at_level("WARNING", logger="pddpm.infer"):
        got = reconstruct(images, _kind(small), noise, batch_size=12, progress=False, timings=timings)
    want = reconstruct(images, _kind(SmallMemoryNet()), noise, batch_size=1, progress=False)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert small.sizes[:3] == [12, 6, 3] and max(small.sizes[3:]) == 3
    assert timings["passes"] == 4 and "out of memory" in caplog.text


def test_split_post_processing_equals_the_gpu_path_on_cpu():
    # infer_arrays post-processes on the GPU where inference ran there (anomaly_maps_torch); the torch
    # path run on the CPU must give the CPU path's stored maps bit for bit
    from pddpm.evaluate.postprocess import anomaly_maps_torch
    from pddpm.infer import postprocess_split

    rng = np.random.default_rng(4)
    images = _images(3, 6)
    recons = (images.astype(np.float32) + rng.normal(0, 0.1, images.shape)).astype(np.float32)
    masks = np.zeros(images.shape, np.uint8)
    masks[:, :, 3:13, 2:14] = 1
    for erosion, median in ((1, 3), (3, 5), (0, 1)):
        cpu = postprocess_split(images, recons, masks, erosion_iterations=erosion, median_size=median)
        gpu_path = anomaly_maps_torch(images, torch.from_numpy(recons), masks, erosion_iterations=erosion,
                                      median_size=median, device="cpu")
        assert cpu.dtype == np.float16 and np.array_equal(cpu, gpu_path)
