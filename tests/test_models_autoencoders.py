"""The autoencoder kinds of Table 1 (ae, vae, svae) on the model-kind interface: built from the schema's
defaults, trained on real anatomy, resumed, reconstructed, and their settings checked against the slices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pddpm.config import defaults
from pddpm.errors import PddpmConfigError, PddpmInputError
from pddpm.infer import reconstruct
from pddpm.models import build
from pddpm.models.base import window_starts
from pddpm.train import SliceData, TrainingInterrupted, train, validation_loss

# one torch thread per test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ("ae", "vae", "svae")
# demo-sized settings (the 48 x 48 grid): what the tiny workflow run and the report's figures use
DEMO = {"ae": {"widths": [16, 32, 64], "bottleneck_channels": 8},
        "vae": {"widths": [16, 32, 64], "bottleneck_channels": 8},
        "svae": {"widths": [16, 32, 64], "bottleneck_channels": 8, "sequence_length": 4, "layers": 1}}
FAST = {"batch_size": 4, "epochs": 3, "val_every_steps": 2, "checkpoint_every_steps": 100}


def settings(kind: str, size: int = 48, **section) -> dict:
    return {"kind": kind, "image_size": [size, size], kind: {**DEMO[kind], **section}}


# ------------------------------------------------------------------------------------------ building
def _conv(c_in, c_out, k):
    return c_in * c_out * k * k + c_out


def expected_parameters(kind: str, size: int) -> int:
    """The parameter count from the architecture as docs/training.md describes it, counted by hand."""
    s = defaults(kind)
    widths, k, b, d = s["widths"], s["kernel_size"], s["bottleneck_channels"], s["latent_dim"]
    side = size // 2 ** len(widths)
    n, c_in = 0, 1
    for w in widths:  # encoder: stride-2 convolution + batch norm per level
        n += _conv(c_in, w, k) + 2 * w
        c_in = w
    n += _conv(c_in, b, 1)  # 1 x 1 narrowing
    features = b * side * side
    n += features * d + d if kind != "vae" else features * 2 * d + 2 * d  # code (VAE: mean and log-variance)
    n += d * features + features + _conv(b, widths[-1], 1) + 2 * widths[-1]  # decoder: dense, 1 x 1, norm
    c_in = widths[-1]
    for w in reversed(widths):
        n += _conv(c_in, w, k) + 2 * w  # transposed convolutions have the same count
        c_in = w
    n += _conv(c_in, 1, 1)
    if kind == "svae":
        ff = s["feedforward"]
        per_layer = 3 * d * d + 3 * d + d * d + d + d * ff + ff + ff * d + d + 4 * d  # attention, MLP, 2 norms
        n += s["layers"] * per_layer + 2 * d + d * 2 * d + 2 * d  # + the posterior's norm and dense layer
    return n


@pytest.mark.parametrize("kind, pinned", [("ae", 1_520_529), ("vae", 1_815_569), ("svae", 1_818_769)])
def test_builds_at_the_paper_size_from_the_schema_defaults(kind, pinned):
    model = build(kind, {"image_size": [96, 96]})
    n = sum(p.numel() for p in model.parameters())
    print(f"{kind} at 96 x 96: {n:,} parameters")
    assert n == expected_parameters(kind, 96) == pinned
    assert model.settings[kind] == defaults(kind)
    assert model.settings[kind]["latent_dim"] == 128 and model.settings[kind]["kernel_size"] == 5
    assert (model.sample_length, model.infer_unit) == ((10, "volume") if kind == "svae" else (1, "slice"))


@pytest.mark.parametrize("kind", KINDS)
def test_a_grid_the_levels_cannot_halve_is_named_with_the_allowed_values(kind):
    with pytest.raises(PddpmConfigError) as err:
        build(kind, {"image_size": [48, 40], kind: {"widths": [8, 8, 8, 8]}})
    msg = str(err.value)
    assert f"{kind}.widths: 4 stride-2 levels (one per entry) need slice sides divisible by 16" in msg
    assert "the 48 x 40 slices of the model grid" in msg and "allowed: at most 3 entries" in msg
    build(kind, {"image_size": [48, 40], kind: {"widths": [8, 8, 8]}})  # 3 levels fit 48 x 40


def test_svae_heads_must_divide_the_latent():
    with pytest.raises(PddpmConfigError, match="svae.heads: 3 attention heads do not divide svae.latent_dim 128; "
                                              "allowed: 1, 2, 4, 8, 16"):
        build("svae", settings("svae", heads=3))


# ------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("kind", KINDS)
def test_training_lowers_the_loss_and_logs_every_term(kind, brains):
    tr, va = brains
    s = settings(kind)
    torch.manual_seed(0)  # the untrained network train() starts from (same seed)
    untrained = build(kind, s)
    before = validation_loss(untrained, SliceData.from_split(va), 0, 8)
    res = train(tr, va, s, {**FAST, "batch_size": 4, "epochs": 10, "val_every_steps": 5, "lr": 3e-3,
                            "slices_per_volume": 2}, seed=0, device="cpu", progress=False)
    log = pd.DataFrame(res.log)
    assert res.info["steps"] == 10 * (8 * 2 // 4)
    val = log.dropna(subset=["val_loss"])
    assert val["val_loss"].iloc[-1] < 0.7 * before["loss"], (before, val["val_loss"].tolist())
    if kind == "ae":
        assert set(before) == {"loss"}
    else:
        beta = defaults(kind, "beta")
        assert {"train_l1", "train_kl", "val_l1", "val_kl"} <= set(log.columns)
        np.testing.assert_allclose(log.train_loss, log.train_l1 + beta * log.train_kl, rtol=1e-5)
        np.testing.assert_allclose(val.val_loss, val.val_l1 + beta * val.val_kl, rtol=1e-5)
        assert (log.train_kl > 0).all()
    if kind == "svae":  # a training sample is a window of consecutive slices, all counted as images
        assert log["images_per_s"].notna().sum() == len(val)


@pytest.mark.parametrize("kind", KINDS)
def test_resume_after_an_interruption_equals_an_uninterrupted_run(kind, brains, tmp_path):
    tr, va = brains
    s = settings(kind)
    cfg = {**FAST, "epochs": 3, "lr": 1e-3}  # 6 steps
    full = train(tr, va, s, cfg, seed=2, device="cpu", progress=False)
    with pytest.raises(TrainingInterrupted):
        train(tr, va, s, cfg, seed=2, device="cpu", progress=False, checkpoint_dir=tmp_path, stop_after_steps=3)
    resumed = train(tr, va, s, cfg, seed=2, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert resumed.info["resumed_from_step"] == 3
    assert [r["train_loss"] for r in full.log] == [r["train_loss"] for r in resumed.log]
    assert full.state_dict.keys() == resumed.state_dict.keys()
    for k, v in full.state_dict.items():  # weights and the batch-norm statistics
        assert torch.equal(v, resumed.state_dict[k]), k


def test_volumes_shorter_than_the_svae_window_are_named_before_any_step(brains, tmp_path):
    """sequence_length 4 on 3-slice volumes: the error names the setting and its allowed values, before a
    training step runs (the validation split once failed with an IndexError at the first validation)."""
    tr, va = brains
    s = settings("svae")
    expect = r"volumes have 3 slices, fewer than the 4 .*svae\.sequence_length.*set svae\.sequence_length to 3 or less"
    with pytest.raises(PddpmInputError, match="validation split: " + expect):
        train(tr, va[:, :3], s, FAST, seed=0, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # stopped before a step, so before a checkpoint
    with pytest.raises(PddpmInputError, match="training split: " + expect):
        train(tr[:, :3], va, s, FAST, seed=0, device="cpu", progress=False)
    with pytest.raises(PddpmInputError, match="validation split: " + expect):
        SliceData.from_split(va[:, :3]).validation_items(4, "svae.sequence_length")
    # windows that just fit: one per volume
    volumes, first = SliceData.from_split(va[:, :4]).validation_items(4, "svae.sequence_length")
    assert volumes.tolist() == [0, 1] and first.tolist() == [0, 0]


# ------------------------------------------------------------------------------------------ inference
@pytest.mark.parametrize("kind", KINDS)
def test_reconstruction_has_the_input_shape_and_is_deterministic_from_the_seed(kind, brains):
    images = brains[1][:, :7]  # 7 slices: the svae's windows of 4 overlap at the end (0-3, 3-6)
    recons = []
    for batch_size in (64, 3):  # forward passes of different sizes give the same reconstruction
        torch.manual_seed(5)
        model = build(kind, settings(kind)).eval()
        recons.append(reconstruct(images, model, batch_size=batch_size, progress=False))
    assert recons[0].shape == images.shape and recons[0].dtype == np.float32
    np.testing.assert_allclose(recons[0], recons[1], atol=1e-5)
    torch.manual_seed(6)
    other = reconstruct(images, build(kind, settings(kind)).eval(), progress=False)
    assert not np.allclose(other, recons[0])


def test_vae_reconstructs_from_the_posterior_mean(brains):
    torch.manual_seed(0)
    model = build("vae", settings("vae")).eval()
    images = brains[1][:1, :3]
    rec = reconstruct(images, model, progress=False)
    with torch.no_grad():
        x = torch.from_numpy(images[0].astype(np.float32))[:, None] * 2 - 1
        mu, logvar = model.encode(x)
        by_hand = (model.decoder(mu)[:, 0] + 1) / 2
        sampled = (model.decoder(mu + torch.randn_like(mu) * (0.5 * logvar).exp())[:, 0] + 1) / 2
    np.testing.assert_allclose(rec[0], by_hand.numpy(), atol=1e-5)
    assert not np.allclose(rec[0], sampled.numpy(), atol=1e-4)


def test_svae_links_the_slices_of_a_window_and_averages_overlapping_windows(brains):
    assert window_starts(7, 4) == [0, 3] and window_starts(8, 4) == [0, 4] and window_starts(4, 4) == [0]
    torch.manual_seed(0)
    model = build("svae", settings("svae")).eval()
    vol = brains[1][:1, :8].astype(np.float32)  # windows 0-3 and 4-7
    base = reconstruct(vol, model, progress=False)
    changed = vol.copy()
    changed[0, 1] = 1 - changed[0, 1]
    rec = reconstruct(changed, model, progress=False)
    diff = np.abs(rec - base).reshape(8, -1).max(axis=1)
    assert diff[[0, 2, 3]].min() > 1e-6  # its window's other slices see the changed slice
    assert diff[4:].max() == 0  # the next window does not
    # 7 slices: windows 0-3 and 3-6, slice 3 is the mean of its two reconstructions
    seven = vol[:, :7]
    rec7 = reconstruct(seven, model, progress=False)
    with torch.no_grad():
        x = torch.from_numpy(seven[0]) * 2 - 1
        win = [(model.decode(model.posterior(x[None, s:s + 4])[0])[0] + 1) / 2 for s in (0, 3)]
    np.testing.assert_allclose(rec7[0, :3], win[0][:3].numpy(), atol=1e-5)
    np.testing.assert_allclose(rec7[0, 3], ((win[0][3] + win[1][0]) / 2).numpy(), atol=1e-5)
    np.testing.assert_allclose(rec7[0, 4:], win[1][1:].numpy(), atol=1e-5)
    with pytest.raises(PddpmInputError, match="svae.sequence_length = 4"):
        reconstruct(vol[:, :3], model, progress=False)


# ------------------------------------------------------------------------------------------ device branches
@pytest.mark.parametrize("kind", ["vae", "svae"])
def test_bf16_autocast_and_channels_last_on_the_cpu_track_fp32(kind, brains):
    """The speed settings torch runs on the CPU: bf16 autocast (training and inference) stays close to
    fp32, channels-last gives the same training."""
    tr, va = brains
    s = settings(kind)
    cfg = {**FAST, "epochs": 2, "lr": 1e-3}
    base = train(tr, va, s, cfg, seed=1, device="cpu", progress=False)
    bf16 = train(tr, va, s, {**cfg, "precision": "bf16"}, seed=1, device="cpu", progress=False)
    cl = train(tr, va, s, {**cfg, "channels_last": True}, seed=1, device="cpu", progress=False)
    losses = [r["train_loss"] for r in base.log]
    np.testing.assert_allclose([r["train_loss"] for r in bf16.log], losses, rtol=0.05)
    np.testing.assert_allclose([r["train_loss"] for r in cl.log], losses, rtol=1e-3)  # other kernels, same sums
    torch.manual_seed(0)
    model = build(kind, s).eval()
    images = va[:, :5]
    fp32 = reconstruct(images, model, progress=False)
    half = reconstruct(images, model, precision="bf16", progress=False)
    assert np.abs(half - fp32).max() < 0.05 and not np.array_equal(half, fp32)


def test_torch_compile_on_the_cpu_matches_eager(brains):
    """torch.compile (inductor) of the svae's networks, transformer included, trains as eager does."""
    tr, va = brains
    s = settings("svae", layers=1)
    cfg = {**FAST, "epochs": 1, "val_every_steps": 1, "lr": 1e-3}
    from torch._dynamo.utils import counters

    eager = train(tr, va, s, cfg, seed=3, device="cpu", progress=False)
    graphs = counters["stats"]["unique_graphs"]
    compiled = train(tr, va, s, {**cfg, "compile": True}, seed=3, device="cpu", progress=False)
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo really compiled the networks
    np.testing.assert_allclose([r["train_loss"] for r in compiled.log], [r["train_loss"] for r in eager.log],
                               rtol=1e-4)
    assert set(compiled.state_dict) == set(eager.state_dict)
