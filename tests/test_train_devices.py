"""Every device branch that torch also runs on the CPU, exercised here so that the first GPU user does not
meet its bug: bf16 autocast (training and inference), channels-last, the fused Adam kernel and
torch.compile (inductor). Each is compared with the plain fp32 eager path on the same data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pddpm.checkpoint import load_checkpoint
from pddpm.device import autocast, native_bf16, resolve_precision
from pddpm.errors import PddpmConfigError
from pddpm.infer import infer_arrays
from pddpm.models import build, save_trained
from pddpm.train import train

# one torch thread per test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"kind": "pddpm", "image_size": [16, 16], "patch": {"size": 8, "stride": 8},
        "diffusion": {"noise": {"type": "gaussian"}},
        "unet": {"base_width": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_heads": 1,
                 "attention_head_channels": 8, "groups": 4}}
CFG = {"batch_size": 4, "epochs": 2, "val_every_steps": 2, "checkpoint_every_steps": 100, "lr": 1e-3}



@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = rng.random((8, 3, 16, 16)).astype(np.float16)
    return images, images[:2]


class ConvSpy:
    """Records, for every Conv2d call anywhere, its output dtype and whether its input was channels-last."""

    def __init__(self):
        self.dtypes, self.channels_last = set(), set()

    def __enter__(self):
        def hook(module, args, output):
            if isinstance(module, torch.nn.Conv2d):
                self.dtypes.add(output.dtype)
                self.channels_last.add(args[0].is_contiguous(memory_format=torch.channels_last)
                                       and not args[0].is_contiguous())
        self._handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def _losses(result):
    return torch.tensor([r["train_loss"] for r in result.log])


def test_bf16_autocast_trains_in_bf16_on_the_cpu_and_tracks_fp32(data):
    tr, va = data
    with ConvSpy() as fp32_spy:
        fp32 = train(tr, va, TINY, {**CFG, "precision": "fp32"}, seed=0, device="cpu", progress=False)
    with ConvSpy() as bf16_spy:
        bf16 = train(tr, va, TINY, {**CFG, "precision": "bf16"}, seed=0, device="cpu", progress=False)
    assert fp32_spy.dtypes == {torch.float32} and bf16_spy.dtypes == {torch.bfloat16}
    assert bf16.info["precision"] == "bf16" and torch.isfinite(_losses(bf16)).all()
    # same weights and batch at step 1: only the forward's precision differs
    assert _losses(bf16)[0].item() == pytest.approx(_losses(fp32)[0].item(), rel=0.02)
    assert bf16.log[-1]["val_loss"] == pytest.approx(fp32.log[-1]["val_loss"], rel=0.05)
    # the kept weights are fp32 whatever the autocast precision
    assert all(v.dtype == torch.float32 for v in bf16.state_dict.values())


@pytest.mark.parametrize("native", [True, False], ids=["bf16-cpu", "no-bf16-cpu"])
def test_precision_auto_trains_in_bf16_only_where_the_cpu_computes_it(data, native, monkeypatch):
    """`precision: auto` asks oneDNN whether this CPU has bf16 (AVX512-BF16, AMX); both answers are taken
    here (the real check is monkeypatched), and the run records and fingerprints what it resolved to."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    want = "bf16" if native else "fp32"
    assert resolve_precision(torch.device("cpu"), "auto") == want
    tr, va = data
    with ConvSpy() as spy:
        auto = train(tr, va, TINY, {**CFG, "precision": "auto"}, seed=0, device="cpu", progress=False)
    fixed = train(tr, va, TINY, {**CFG, "precision": want}, seed=0, device="cpu", progress=False)
    assert spy.dtypes == {torch.bfloat16 if native else torch.float32}
    assert auto.info["precision"] == want and auto.info["fingerprint"] == fixed.info["fingerprint"]
    assert torch.equal(_losses(auto), _losses(fixed))


def test_precision_settings_resolve_and_an_unknown_one_is_an_error():
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "fp32") == "fp32" and resolve_precision(cpu, "bf16") == "bf16"
    assert resolve_precision(cpu, "auto") == ("bf16" if native_bf16(cpu) else "fp32")
    with pytest.raises(PddpmConfigError, match="fp16.*expected fp32, bf16 or auto"):
        resolve_precision(cpu, "fp16")
    # autocast takes the same settings, checked in the same place
    x = torch.ones(2, 2)
    for setting, want in (("fp32", torch.float32), ("bf16", torch.bfloat16),
                          ("auto", torch.bfloat16 if native_bf16(cpu) else torch.float32)):
        with autocast(cpu, setting):
            assert (x @ x).dtype == want
    with pytest.raises(PddpmConfigError, match="fp16.*expected fp32, bf16 or auto"):
        autocast(cpu, "fp16")


def test_bf16_inference_on_the_cpu_tracks_fp32(data, tmp_path):
    images = data[0][:2]
    torch.manual_seed(0)
    model = build("pddpm", TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    save_trained(model, tmp_path / "model.pt")
    kw = {"model": "pddpm", "model_path": tmp_path / "model.pt", "device": "cpu", "progress": False}
    masks = np.ones(images.shape, np.uint8)
    fp32, _, _ = infer_arrays(images, masks, precision="fp32", **kw)
    with ConvSpy() as spy:
        bf16, _, info = infer_arrays(images, masks, precision="bf16", **kw)
    assert spy.dtypes == {torch.bfloat16} and info["precision"] == "bf16"
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
    assert np.abs(bf16 - fp32).max() > 0  # bf16 really ran


def test_channels_last_gives_the_same_training(data):
    tr, va = data
    with ConvSpy() as spy_default:
        default = train(tr, va, TINY, CFG, seed=1, device="cpu", progress=False)
    with ConvSpy() as spy:
        cl = train(tr, va, TINY, {**CFG, "channels_last": True}, seed=1, device="cpu", progress=False)
    assert spy_default.channels_last == {False}  # CPU default: contiguous (channels-last is for CUDA)
    assert True in spy.channels_last
    torch.testing.assert_close(_losses(cl), _losses(default), rtol=1e-4, atol=1e-6)
    for k, v in default.state_dict.items():
        torch.testing.assert_close(cl.state_dict[k], v, rtol=1e-3, atol=1e-5)


def test_fused_adam_is_used_on_the_cpu_and_matches_the_default_adam(data, tmp_path, monkeypatch):
    tr, va = data
    fused = train(tr, va, TINY, CFG, seed=2, device="cpu", progress=False, checkpoint_dir=tmp_path / "f")
    ck = load_checkpoint(tmp_path / "f" / "checkpoint.pt", fused.info["fingerprint"])
    assert ck["optimisers"]["adam"]["param_groups"][0]["fused"] is True
    monkeypatch.setattr("pddpm.train.fused_adam", lambda device: False)
    foreach = train(tr, va, TINY, CFG, seed=2, device="cpu", progress=False, checkpoint_dir=tmp_path / "d")
    ck = load_checkpoint(tmp_path / "d" / "checkpoint.pt", foreach.info["fingerprint"])
    assert not ck["optimisers"]["adam"]["param_groups"][0]["fused"]
    torch.testing.assert_close(_losses(fused), _losses(foreach), rtol=1e-5, atol=1e-7)
    for k, v in foreach.state_dict.items():
        torch.testing.assert_close(fused.state_dict[k], v, rtol=1e-4, atol=1e-6)


def test_torch_compile_on_the_cpu_matches_eager(data):
    """inductor on the CPU (C++ kernels): minutes on a busy 2-core machine the first time, seconds once
    torch's compile cache holds the kernels; the smallest UNet (no downsampling) keeps it short."""
    from torch._dynamo.utils import counters

    tr, va = data
    settings = {"kind": "ddpm", "image_size": [16, 16], "diffusion": {"noise": {"type": "gaussian"}},
                "unet": {**TINY["unet"], "channel_mult": [1]}}
    cfg = {**CFG, "epochs": 1}
    eager = train(tr, va, settings, cfg, seed=3, device="cpu", progress=False)
    graphs = counters["stats"]["unique_graphs"]
    compiled = train(tr, va, settings, {**cfg, "compile": True}, seed=3, device="cpu", progress=False)
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo really compiled the network
    torch.testing.assert_close(_losses(compiled), _losses(eager), rtol=1e-4, atol=1e-6)
    assert compiled.log[-1]["val_loss"] == pytest.approx(eager.log[-1]["val_loss"], rel=1e-4)
    assert set(compiled.state_dict) == set(eager.state_dict)  # no `_orig_mod.` in the saved keys
