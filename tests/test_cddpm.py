"""cDDPM (model kinds cddpm, cddpm_nopretrain): the conditioned UNet and its ResNet encoder at paper size,
the conditioning reaching the output, the masked-image-modelling pre-training and its encoder file, the
noise ensemble of inference, the torchio augmentation, and a tiny workflow run with both kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pddpm.config import with_defaults
from pddpm.errors import PddpmInputError
from pddpm.infer import Passes, infer_arrays
from pddpm.models import build, load_trained, train_params
from pddpm.models.base import Batch
from pddpm.models.cddpm import ResNet
from pddpm.models.unet import build_unet
from pddpm.pretrain import MaskedAutoencoder, pretrain, random_mask, save_encoder, validation_loss
from pddpm.train import SliceData, TrainingInterrupted, train, write_outputs
from workflow_utils import REPO, copy_run, planned_jobs, snakemake, write_config

# one torch thread per test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

UNET = {"base_width": 16, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_heads": 1,
        "attention_head_channels": 16, "groups": 4}
TINY = {"image_size": [48, 48], "unet": UNET, "cddpm": {"encoder": "resnet18", "cond_dim": 8}}
PRETRAIN = {"epochs": 6, "batch_size": 8, "slices_per_volume": 4, "decoder_width": 32, "lr": 1e-3}



@pytest.fixture(scope="module")
def splits(brains):
    return tuple({"image": b, "mask": (b > 0.05).astype(np.uint8)} for b in brains)


@pytest.fixture(scope="module")
def pretrained(splits, tmp_path_factory):
    """A resnet18 encoder pre-trained on the tiny brains, saved as the pretrain rule saves it."""
    tr, va = splits
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures set up before the function-scoped one_thread
    result = pretrain(tr, va, "resnet18", PRETRAIN, seed=0, device="cpu")
    torch.set_num_threads(old)
    path = tmp_path_factory.mktemp("pretrain") / "encoder.pt"
    save_encoder(result, path, path.with_name("pretrain_log.csv"))
    return result, path


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------ building
def test_paper_size_encoder_and_conditioned_unet_parameter_counts():
    paper = with_defaults(yaml.safe_load((REPO / "configs" / "paper.yaml").read_text()))
    model = build("cddpm", {"image_size": [96, 96], **train_params("cddpm", paper)["sections"]})
    counts = {"unet": _count(model.net), "resnet50": _count(model.encoder.trunk), "head": _count(model.encoder.head),
              "total": _count(model), "resnet18": _count(ResNet("resnet18"))}
    print(counts)
    # torchvision's resnet50 has 25,557,032 parameters with 3 input channels and its 1000-class fc; one input
    # channel and no fc: 25,557,032 - 9,408 + 3,136 - 2,049,000
    assert counts["resnet50"] == 23_501_760
    assert counts["resnet18"] == 11_170_240  # torchvision's 11,689,512 the same way
    assert counts["head"] == 2048 * 512 + 512  # cond_dim null -> 4 x unet.base_width = 512
    assert counts["unet"] == 43_543_169
    assert counts["total"] == 43_543_169 + 23_501_760 + 1_049_088
    # the conditioning only widens each residual block's embedding projection: the same UNet without it
    # is pDDPM's scale-shift network, parameter for parameter
    torch.manual_seed(0)
    plain = build_unet(model.settings["unet"], (96, 96), scale_shift=True)
    torch.manual_seed(0)
    pddpm_net = build("pddpm", {"image_size": [96, 96], "unet": model.settings["unet"]}).net
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), pddpm_net.state_dict().values(), strict=True))
    widened = sum(m.emb_layers[1].weight.shape[0] * 512 for m in model.net.modules() if hasattr(m, "emb_layers"))
    assert counts["unet"] - _count(plain) == widened


def test_conditioning_changes_the_output():
    torch.manual_seed(0)
    net = build_unet(with_defaults(UNET, "unet"), (48, 48), scale_shift=True, cond_dim=8)
    for p in net.parameters():  # ADM zero-initialises the output layers: make every path count
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(2, 1, 48, 48), torch.tensor([10, 600])
    c1, c2 = 3 * torch.randn(2, 8), 3 * torch.randn(2, 8)
    with torch.no_grad():
        a, b, again = net(x, t, c1), net(x, t, c2), net(x, t, c1)
    assert torch.equal(a, again) and (a - b).abs().mean() > 0.01 * a.abs().mean()
    with pytest.raises(ValueError, match="cond of shape"):
        net(x, t)
    # through the kind: two different clean slices give two different conditioning vectors
    model = build("cddpm_nopretrain", TINY).eval()
    with torch.no_grad():
        cond = model.encoder(torch.stack([x[0], -x[0]]))
    assert cond.shape == (2, 8) and not torch.allclose(cond[0], cond[1])


# ---------------------------------------------------------------------------------------- pre-training
def test_pretraining_lowers_the_masked_loss_and_its_encoder_loads(splits, pretrained, tmp_path):
    tr, va = splits
    result, path = pretrained
    torch.manual_seed(0)
    before = validation_loss(MaskedAutoencoder("resnet18", PRETRAIN["decoder_width"]), SliceData.from_split(va),
                             with_defaults(PRETRAIN, "cddpm_pretrain"), seed=0)
    log = pd.read_csv(path.with_name("pretrain_log.csv"))
    print(before, log.val_loss.tolist())
    assert log.val_loss.iloc[-1] < 0.5 * before
    # 65 % of the 3 x 3 cells of 16 px masked per slice, exactly
    m = random_mask(4, 48, 48, 16, 0.65, torch.Generator().manual_seed(0))
    assert m.shape == (4, 1, 48, 48) and (m.float().mean(dim=(1, 2, 3)) == 6 / 9).all()

    model = build("cddpm", TINY)
    model.load_inputs({"encoder": str(path)})
    for k, v in result.state_dict.items():
        assert torch.equal(model.encoder.trunk.state_dict()[k], v), k


def test_an_encoder_file_that_does_not_fit_names_the_file_and_the_layer(pretrained, tmp_path):
    _, path = pretrained
    model = build("cddpm", {**TINY, "cddpm": {"encoder": "resnet50", "cond_dim": 8}})
    with pytest.raises(PddpmInputError) as err:
        model.load_inputs({"encoder": str(path)})
    msg = str(err.value)
    print(msg)
    assert str(path) in msg and "'layer1.0.conv1.weight'" in msg and "cddpm.encoder" in msg and "resnet18" in msg
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PddpmInputError, match="junk.pt"):
        build("cddpm", TINY).load_inputs({"encoder": str(bad)})


def test_mask_patches_that_do_not_tile_the_slices_stop_the_config_check():
    from pddpm.config_checks import check_config
    from pddpm.errors import PddpmConfigError

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())  # the demo: 48 x 48 slices
    cfg.update(models=["cddpm", "thresh"], cddpm_pretrain={"mask_patch": 10})
    with pytest.raises(PddpmConfigError, match=r"cddpm_pretrain.mask_patch: 10 px patches do not tile .*allowed: 1, 2, 3, 4, 6"):
        check_config(cfg)
    cfg["cddpm_pretrain"]["mask_patch"] = 12
    check_config(cfg)


# -------------------------------------------------------------------------------------------- inference
class StandInNet(torch.nn.Module):
    def forward(self, xt, t, cond):
        return 0.5 * xt + t.float()[:, None, None, None] / 1000 + cond.mean(1)[:, None, None, None]


class StandInEncoder(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(1, 2, 3))[:, None].expand(-1, 4)


def test_the_noise_ensemble_averages_one_forward_per_timestep_with_its_own_noise():
    model = build("cddpm_nopretrain", TINY, network=StandInNet(), encoder=StandInEncoder())
    model.configure_inference(cddpm_timesteps=[250, 500, 750])
    assert model.timesteps == [249, 499, 749] and model.noise_members == 3
    g = torch.Generator().manual_seed(0)
    image = torch.rand(5, 1, 48, 48, generator=g) * 2 - 1
    noise = torch.randn(5, 3, 1, 48, 48, generator=g)
    got = model.reconstruct(image, image > -2, noise, Passes(4, torch.device("cpu"), "fp32"))  # chunks of 4
    ab = model.diffusion.alphas_cumprod
    want = torch.zeros_like(image)
    for e, t in enumerate([249, 499, 749]):
        xt = ab[t].sqrt().float() * image + (1 - ab[t]).sqrt().float() * noise[:, e]
        want += 0.5 * xt + t / 1000 + image.mean(dim=(1, 2, 3))[:, None, None, None]
    torch.testing.assert_close(got, want / 3, atol=1e-5, rtol=1e-5)
    # members see different noise: the same map for all three would give another result
    same = model.reconstruct(image, image > -2, noise[:, :1].expand(-1, 3, -1, -1, -1), Passes(64, torch.device("cpu"), "fp32"))
    assert (same - got).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------ augmentation
def test_augmentation_is_torchio_inside_the_brain_and_reproducible_from_the_generator():
    model = build("cddpm_nopretrain", {**TINY, "cddpm": {**TINY["cddpm"], "augment_p": 1.0}})
    yy, xx = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    mask = (((yy - 24) ** 2 + (xx - 24) ** 2) < 18 ** 2)[None, None].expand(4, 1, 48, 48)
    image = torch.where(mask, 0.3 + 0.2 * torch.sin(xx / 4.0)[None, None], torch.tensor(-1.0))
    state = torch.random.get_rng_state()
    a = model.augment(Batch(image, mask), torch.Generator().manual_seed(1)).image
    b = model.augment(Batch(image, mask), torch.Generator().manual_seed(1)).image
    c = model.augment(Batch(image, mask), torch.Generator().manual_seed(2)).image
    assert torch.equal(torch.random.get_rng_state(), state)  # torchio's draws stay in a fork
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[~mask], image[~mask]) and (a[mask] - image[mask]).abs().mean() > 1e-2
    assert a.min() >= -1 and a.max() <= 1
    off = build("cddpm_nopretrain", {**TINY, "cddpm": {**TINY["cddpm"], "augment": False}})
    assert off.augment(Batch(image, mask), torch.Generator()).image is image


# ------------------------------------------------------------------------------------------- training
def test_cddpm_trains_from_the_encoder_file_resumes_exactly_and_infers(splits, pretrained, tmp_path):
    tr, va = splits
    _, path = pretrained
    cfg = {"batch_size": 4, "epochs": 2, "val_every_steps": 2, "checkpoint_every_steps": 100}
    extra = {"encoder": str(path)}
    full = train(tr, va, TINY | {"kind": "cddpm"}, cfg, seed=0, device="cpu", progress=False, extra_inputs=extra)
    with pytest.raises(TrainingInterrupted):
        train(tr, va, TINY | {"kind": "cddpm"}, cfg, seed=0, device="cpu", progress=False, extra_inputs=extra,
              checkpoint_dir=tmp_path / "ck", stop_after_steps=3)
    resumed = train(tr, va, TINY | {"kind": "cddpm"}, cfg, seed=0, device="cpu", progress=False,
                    extra_inputs=extra, checkpoint_dir=tmp_path / "ck")
    assert resumed.info["resumed_from_step"] == 3
    for k, v in full.state_dict.items():  # augmentation, noise and t drawn as the uninterrupted run drew them
        assert torch.equal(v, resumed.state_dict[k]), k
    settings = build("cddpm", TINY).settings
    write_outputs(full, settings, {}, tmp_path / "model.pt", tmp_path / "log.csv", tmp_path / "run.json")
    assert isinstance(load_trained(tmp_path / "model.pt"), type(build("cddpm", TINY)))
    recons, maps, info = infer_arrays(va["image"], va["mask"], model="cddpm", model_path=tmp_path / "model.pt",
                                      device="cpu", progress=False, cddpm_timesteps=[250, 750])
    assert recons.shape == va["image"].shape and np.isfinite(recons).all()
    assert info["timesteps"] == [249, 749] and info["encoder"] == "resnet18"
    # without the file, cddpm says what it needs; cddpm_nopretrain takes none
    with pytest.raises(Exception, match="cddpm_nopretrain"):
        build("cddpm", TINY).load_inputs({})


# -------------------------------------------------------------------------------------------- workflow
CDDPM_RUN = {
    "models": ["cddpm", "cddpm_nopretrain"],
    "cddpm": {"encoder": "resnet18", "cond_dim": 16},
    "cddpm_pretrain": {"epochs": 2, "batch_size": 3, "slices_per_volume": 2, "decoder_width": 16},
    "train": {"epochs": 2},
    "infer": {"cddpm_timesteps": [250, 500]},
}


@pytest.mark.workflow
def test_tiny_workflow_with_both_cddpm_kinds_gives_their_table_rows(tiny_run, tmp_path: Path):
    # on a copy of the session's finished tiny run: only the cddpm jobs (and the table) are new
    run = copy_run(tiny_run, tmp_path / "run")
    write_config(run, CDDPM_RUN)
    planned = planned_jobs(run)
    assert planned["pretrain"] == 1 and planned["train"] == 2 and "slices" not in planned, planned
    snakemake(run, "results/tables/table1.csv")
    table = pd.read_csv(run / "results" / "tables" / "table1.csv")
    assert {"cddpm", "cddpm_nopretrain"} <= set(table[table["source"] == "this run"]["model"])
    assert "dense masked-image-modelling" in (run / "results" / "tables" / "table1.md").read_text()
    record = yaml.safe_load((run / "results" / "models" / "cddpm" / "fold0" / "run.json").read_text())
    assert any(p.endswith("pretrain/cddpm_encoder/fold0/encoder.pt") for p in record["config"]["inputs"])
    # a diffusion setting retrains both kinds but does not redo the pre-training
    write_config(run, {**CDDPM_RUN, "diffusion": {"cosine_s": 0.01}})
    planned = planned_jobs(run, "results/tables/table1.csv")
    assert planned.get("train") == 2 and "pretrain" not in planned, planned
    write_config(run, {**CDDPM_RUN, "cddpm_pretrain": {**CDDPM_RUN["cddpm_pretrain"], "mask_ratio": 0.5}})
    assert planned_jobs(run, "results/tables/table1.csv").get("pretrain") == 1
