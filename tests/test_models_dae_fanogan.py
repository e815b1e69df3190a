"""The baselines DAE (Kascenas et al. 2022) and f-AnoGAN (Schlegl et al. 2019) as model kinds: they build
from the config, learn on brain slices, resume exactly (f-AnoGAN across its two phases), reconstruct
deterministically through pddpm.infer, and settings that do not fit the slice size stop before any job."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from pddpm.checkpoint import load_checkpoint
from pddpm.config import with_defaults
from pddpm.config_checks import check_config
from pddpm.errors import PddpmConfigError
from pddpm.infer import infer_arrays
from pddpm.models import build, load_trained, train_params
from pddpm.models.base import Batch
from pddpm.models.checks import model_image_size
from pddpm.train import SliceData, TrainingInterrupted, train, validation_loss, write_outputs
from workflow_utils import REPO, snakemake, write_config

# one torch thread per test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

DAE = {"kind": "dae", "image_size": [48, 48], "dae": {"base_width": 8, "depth": 3}}
GAN = {"kind": "fanogan", "image_size": [48, 48], "fanogan": {"widths": [8, 16, 32], "n_critic": 2, "gan_share": 0.6}}
FAST = {"batch_size": 4, "epochs": 5, "val_every_steps": 3, "checkpoint_every_steps": 100}



@pytest.fixture(scope="module")
def splits(brains):
    """The brains with their brain masks (intensity above 5 %), as pddpm.slices.load_split gives them."""
    return tuple({"image": b, "mask": (b > 0.05).astype(np.uint8)} for b in brains)


def _strip(log):
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in log]


def _same_log(a, b):
    return pd.DataFrame(_strip(a)).equals(pd.DataFrame(_strip(b)))


# ------------------------------------------------------------------------------------------ building
def test_both_kinds_build_at_the_paper_and_the_demo_size_from_the_schema():
    paper = with_defaults(yaml.safe_load((REPO / "configs" / "paper.yaml").read_text()))
    counts = {}
    for name in ("dae", "fanogan"):
        for size in (96, 48):
            model = build(name, {"image_size": [size, size], **train_params(name, paper)["sections"]})
            counts[name, size] = sum(p.numel() for p in model.parameters())
    print(counts)
    # DAE: the public code's U-Net (depth 4, widths 64-512, one input channel); its size does not depend on
    # the slice size. f-AnoGAN: generator + critic + encoder with widths 64-512 to a 6 x 6 (3 x 3) grid
    assert counts["dae", 96] == counts["dae", 48] == 7_701_825
    assert counts["fanogan", 96] == 13_020_482 and counts["fanogan", 48] == 9_453_890
    gan = build("fanogan", {"image_size": [96, 96]})
    assert gan.gan_generator(torch.zeros(2, 128)).shape == (2, 1, 96, 96)
    assert gan.encoder(torch.zeros(2, 1, 96, 96)).shape == (2, 128)


# ---------------------------------------------------------------------------------------------- DAE
class Spy(torch.nn.Module):
    def forward(self, v):
        self.seen = v
        return v


def test_dae_noise_is_the_coarse_grid_upsampled_and_rolled_and_only_inside_the_brain():
    torch.manual_seed(0)
    model = build("dae", {"image_size": [48, 48]})  # schema defaults: 8 px cells, sigma 0.2
    noise = model.coarse_noise((3, 1, 48, 48), torch.Generator().manual_seed(5))
    # the same draws done by hand: 6 x 6 N(0, 1) cells, bilinear with aligned corners, x 2 x 0.2 ([-1, 1])
    coarse = torch.randn((3, 1, 6, 6), generator=torch.Generator().manual_seed(5))
    smooth = F.interpolate(coarse, size=(48, 48), mode="bilinear", align_corners=True) * 0.4
    shifts = [(dy, dx) for dy in range(48) for dx in range(48)
              if torch.allclose(torch.roll(smooth, (dy, dx), dims=(-2, -1)), noise, atol=1e-6)]
    assert len(shifts) == 1  # one circular shift of the whole batch, as the public code
    # only inside the brain mask, nothing outside
    x = torch.zeros(3, 1, 48, 48)
    mask = torch.zeros(3, 1, 48, 48, dtype=torch.bool)
    mask[..., 10:30, 5:40] = True
    model.net = Spy()  # the network sees x + noise
    model.loss(Batch(x, mask), torch.Generator().manual_seed(5))
    assert not model.net.seen[~mask].any() and (model.net.seen[mask] != 0).all()
    torch.testing.assert_close(model.net.seen[mask], noise[mask])


def test_dae_learns_on_brain_slices_and_resumes_exactly(splits, tmp_path):
    tr, va = splits
    torch.manual_seed(0)
    before = validation_loss(build("dae", DAE), SliceData.from_split(va), 0, 8)["loss"]
    cfg = {**FAST, "epochs": 12, "lr": 3e-3}
    full = train(tr, va, DAE, cfg, seed=0, device="cpu", progress=False)
    val = pd.DataFrame(full.log).dropna(subset=["val_loss"])
    assert val.val_loss.min() < 0.5 * before
    with pytest.raises(TrainingInterrupted):
        train(tr, va, DAE, cfg, seed=0, device="cpu", progress=False, checkpoint_dir=tmp_path, stop_after_steps=7)
    resumed = train(tr, va, DAE, cfg, seed=0, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert resumed.info["resumed_from_step"] == 7 and _same_log(full.log, resumed.log)
    for k, v in full.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    # AMSGrad with weight decay, as the public code
    group = load_checkpoint(tmp_path / "checkpoint.pt", full.info["fingerprint"])["optimisers"]["adam"]["param_groups"][0]
    assert group["amsgrad"] is True and group["weight_decay"] == 1e-5

    # inference: the clean slice in, the network's output out; deterministic from the seed
    write_outputs(full, DAE, {}, tmp_path / "model.pt", tmp_path / "log.csv", tmp_path / "run.json")
    images, masks = va["image"], va["mask"]
    recons, maps, info = infer_arrays(images, masks, model="dae", model_path=tmp_path / "model.pt", device="cpu",
                                      progress=False)
    assert recons.shape == maps.shape == images.shape and info["kind"] == "dae"
    net = load_trained(tmp_path / "model.pt").net
    with torch.no_grad():
        direct = net(torch.from_numpy(images[:1, :, None].astype(np.float32))[0] * 2 - 1)[:, 0]
    np.testing.assert_allclose(recons[0], ((direct + 1) / 2).numpy(), atol=1e-5)
    again, _, _ = infer_arrays(images, masks, model="dae", model_path=tmp_path / "model.pt", device="cpu",
                               progress=False, batch_size=5)
    np.testing.assert_allclose(again, recons, atol=1e-6)  # other batches: float rounding only


# ------------------------------------------------------------------------------------------ f-AnoGAN
def test_fanogan_trains_in_two_phases_and_resumes_exactly_across_them(splits, tmp_path):
    tr, va = splits  # 8 volumes, batch 4: 2 steps per epoch; 5 epochs, 0.6 of them (3) the GAN: steps 1-6
    full = train(tr, va, GAN, FAST, seed=2, device="cpu", progress=False)
    log = pd.DataFrame(full.log)
    gan, enc = log[log.step <= 6], log[log.step > 6]
    assert gan.train_wdist.notna().all() and gan.train_gp.notna().all() and enc.train_wdist.isna().all()
    # a generator step after every n_critic = 2 critic steps
    assert list(gan.step[gan.train_generator.notna()]) == [2, 4, 6]
    assert enc.train_image.notna().all() and enc.train_feature.notna().all()
    np.testing.assert_allclose(enc.train_loss, enc.train_image + enc.train_feature, rtol=1e-6)  # kappa 1
    # validation: NaN in the GAN phase (never kept), the izi_f loss in the encoder phase
    assert gan.val_loss.isna().all() and gan.val_wdist.notna().sum() == 2  # steps 3 and 6
    assert list(log.step[log.val_loss.notna()]) == [9, 10]
    assert full.info["best_step"] in (9, 10)

    # interrupted in phase 1, at the boundary and in phase 2: the same run
    ck = tmp_path / "ck"
    for stop in (4, 6, 8):
        with pytest.raises(TrainingInterrupted):
            train(tr, va, GAN, FAST, seed=2, device="cpu", progress=False, checkpoint_dir=ck, stop_after_steps=stop)
        if stop == 6:
            boundary = load_checkpoint(ck / "checkpoint.pt", full.info["fingerprint"])
    resumed = train(tr, va, GAN, FAST, seed=2, device="cpu", progress=False, checkpoint_dir=ck)
    assert resumed.info["resumed_from_step"] == 8 and _same_log(full.log, resumed.log)
    for k, v in full.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    # generator and critic (batch-norm statistics included) are frozen in phase 2; the encoder trained
    at_boundary = boundary["model"]
    frozen = [k for k in full.state_dict if k.startswith(("gan_generator.", "critic."))]
    assert frozen and all(torch.equal(full.state_dict[k], at_boundary[k].cpu()) for k in frozen)
    assert any(not torch.equal(full.state_dict[k], at_boundary[k].cpu()) for k in full.state_dict
               if k.startswith("encoder."))
    assert int(full.state_dict["gan_steps"]) == 6

    # inference: G(E(x)), deterministic
    write_outputs(full, GAN, {}, tmp_path / "model.pt", tmp_path / "log.csv", tmp_path / "run.json")
    images, masks = va["image"], va["mask"]
    recons, _, _ = infer_arrays(images, masks, model="fanogan", model_path=tmp_path / "model.pt", device="cpu",
                                progress=False)
    again, _, _ = infer_arrays(images, masks, model="fanogan", model_path=tmp_path / "model.pt", device="cpu",
                               progress=False, batch_size=3)
    assert recons.shape == images.shape
    np.testing.assert_allclose(again, recons, atol=1e-6)
    model = load_trained(tmp_path / "model.pt")
    with torch.no_grad():
        x = torch.from_numpy(images[0, :, None].astype(np.float32)) * 2 - 1
        direct = model.gan_generator(model.encoder(x))[:, 0]
    np.testing.assert_allclose(recons[0], ((direct + 1) / 2).numpy(), atol=1e-5)


def test_fanogan_critic_and_encoder_phases_lower_their_losses(splits):
    tr, va = splits  # 20 epochs of 2 steps: 20 GAN steps, then 20 encoder steps
    cfg = {**FAST, "epochs": 20, "val_every_steps": 2}
    res = train(tr, va, {**GAN, "fanogan": {**GAN["fanogan"], "gan_share": 0.5, "lr": 2e-3}}, cfg, seed=0,
                device="cpu", progress=False)
    log = pd.DataFrame(res.log)
    critic = log.train_loss[log.step <= 20]
    assert critic.iloc[-5:].mean() < critic.iloc[:5].mean() - 10  # the critic separates real from fake
    val = log.dropna(subset=["val_loss"])
    assert val.step.min() == 22  # validated only once the encoder trained
    # the izi_f loss falls (slowly with a generator of 10 steps: 2.91 -> 2.82 here)
    assert val.val_loss.iloc[-1] < val.val_loss.iloc[0] and val.val_loss.is_monotonic_decreasing
    assert res.info["best_step"] == int(val.step[val.val_loss.idxmin()]) == 40


def test_fanogan_with_an_ema_keeps_its_phases_in_the_averaged_copy(splits):
    tr, va = splits
    res = train(tr, va, GAN, {**FAST, "ema_decay": 0.9}, seed=2, device="cpu", progress=False)
    log = pd.DataFrame(res.log)
    assert list(log.step[log.val_loss.notna()]) == [9, 10] and res.info["best_step"] in (9, 10)


def test_fanogan_gradient_penalty_runs_under_bf16_channels_last_and_compile(splits):
    """torch.compile has no double backward: the penalty's critic pass runs eagerly (else this raises)."""
    from torch._dynamo.utils import counters

    tr, va = splits
    cfg = {**FAST, "epochs": 2, "val_every_steps": 2}
    settings = {**GAN, "fanogan": {**GAN["fanogan"], "widths": [4]}, "image_size": [48, 48]}
    eager = train(tr, va, settings, cfg, seed=0, device="cpu", progress=False)
    bf16 = train(tr, va, settings, {**cfg, "precision": "bf16", "channels_last": True}, seed=0, device="cpu",
                 progress=False)
    assert bf16.log[0]["train_loss"] == pytest.approx(eager.log[0]["train_loss"], rel=0.05)
    assert bf16.log[-1]["val_loss"] == pytest.approx(eager.log[-1]["val_loss"], rel=0.05)
    graphs = counters["stats"]["unique_graphs"]
    compiled = train(tr, va, settings, {**cfg, "compile": True}, seed=0, device="cpu", progress=False)
    assert counters["stats"]["unique_graphs"] > graphs
    np.testing.assert_allclose([r["train_loss"] for r in compiled.log], [r["train_loss"] for r in eager.log],
                               rtol=1e-4)


# -------------------------------------------------------------------------------------------- checks
def test_settings_that_do_not_fit_the_slices_name_the_key_and_the_allowed_values():
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())  # 48 x 48 slices
    assert model_image_size(with_defaults(copy.deepcopy(cfg))) == (48, 48)
    bad = {**copy.deepcopy(cfg), "models": ["dae", "fanogan", "thresh"], "dae": {"depth": 6, "noise_cell_px": 5},
           "fanogan": {"widths": [8, 8, 8, 8, 8]}}
    bad["train"]["epochs"] = 1
    with pytest.raises(PddpmConfigError) as err:
        check_config(bad)
    msg = str(err.value)
    assert "dae.depth: 6 levels halve the slices 5 times, but the 48 x 48 slices" in msg and "allowed: 1 to 5" in msg
    assert "dae.noise_cell_px: 5 does not divide" in msg and "allowed: 1, 2, 3, 4, 6, 8, 12, 16, 24, 48" in msg
    assert "fanogan.widths: 5 widths are 5 stride-2 stages" in msg and "allowed: 1 to 4 widths" in msg
    assert "train.epochs: 1, but fanogan trains in two phases" in msg
    # only the kinds in `models` are checked; the library stops with the same message
    check_config({**copy.deepcopy(cfg), "models": ["pddpm", "thresh"], "dae": {"depth": 6}})
    with pytest.raises(PddpmConfigError, match="dae.depth: 6 levels"):
        build("dae", {"image_size": [48, 48], "dae": {"depth": 6}})
    with pytest.raises(PddpmConfigError, match="train.epochs: 1, but fanogan"):
        train(np.zeros((4, 2, 48, 48), np.float16), np.zeros((1, 2, 48, 48), np.float16), GAN,
              {"batch_size": 4, "epochs": 1}, seed=0, device="cpu", progress=False)


def test_the_workflow_stops_on_them_before_any_job(tmp_path: Path):
    write_config(tmp_path, {"models": ["dae", "fanogan", "thresh"], "fanogan": {"widths": [8, 8, 8, 8, 8]}})
    proc = snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert "fanogan.widths: 5 widths are 5 stride-2 stages" in proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".snakemake") == ["config.yaml"]
