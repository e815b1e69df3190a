"""The model-kind interface (pddpm.models): the registry, settings per kind, and that a new kind - one
module with its own loss terms, optimisers, sample shape, extra inputs and reconstruction - trains,
resumes, logs and reconstructs through the same train()/infer code as pDDPM."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from pddpm.config import SCHEMA_PATH, with_defaults
from pddpm.errors import PddpmConfigError
from pddpm.infer import infer_arrays, reconstruct
from pddpm.models import KINDS, Kind, build, infer_params, load_trained, train_params
from pddpm.models.base import ModelKind
from pddpm.train import TrainingInterrupted, train, write_outputs

# one torch thread per test (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

H = W = 16



# ------------------------------------------------------------------------------------------- registry
def test_registry_is_the_schema_enum_and_unknown_kinds_list_the_known_ones():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert set(schema["properties"]["models"]["items"]["enum"]) == set(KINDS)
    with pytest.raises(PddpmConfigError, match="unknown model kind 'vqvae'; known kinds: pddpm, ddpm, thresh, "):
        build("vqvae", {})


def test_every_kind_builds_at_the_paper_and_the_demo_size():
    demo = with_defaults(yaml.safe_load((SCHEMA_PATH.parents[1] / "config.yaml").read_text()))
    paper = with_defaults(yaml.safe_load((SCHEMA_PATH.parents[1] / "configs" / "paper.yaml").read_text()))
    for cfg, size in ((demo, 48), (paper, 96)):
        for name, k in KINDS.items():
            model = build(name, {"image_size": [size, size], **train_params(name, cfg)["sections"]})
            assert model.name == name and set(model.settings) == {"kind", "image_size", *k.sections}
            assert (sum(p.numel() for p in model.parameters()) > 0) == k.trained


def test_each_kind_carries_only_its_own_sections_into_the_rule_params():
    cfg = with_defaults(yaml.safe_load((SCHEMA_PATH.parents[1] / "config.yaml").read_text()))
    changed = copy.deepcopy(cfg)
    changed["patch"]["size"] = 12
    changed["infer"]["stride"] = 12
    # the patch grid is pDDPM's: changing it retrains and re-infers pDDPM only
    assert train_params("pddpm", changed) != train_params("pddpm", cfg)
    assert train_params("ddpm", changed) == train_params("ddpm", cfg)
    assert infer_params("pddpm", changed) != infer_params("pddpm", cfg)
    assert infer_params("ddpm", changed) == infer_params("ddpm", cfg)
    assert infer_params("thresh", changed) == {}
    # speed-only keys are not params
    assert "threads" not in train_params("pddpm", cfg)["train"] and "compile" not in train_params("pddpm", cfg)["train"]


# every trained kind at a 16 x 16 toy size (each passes its pre-job check there)
TOY_SECTIONS = {
    "unet": {"base_width": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_heads": 1,
             "attention_head_channels": 8, "groups": 4},
    "patch": {"size": 8, "stride": 8},
    "ae": {"widths": [4, 8], "bottleneck_channels": 2, "latent_dim": 8},
    "vae": {"widths": [4, 8], "bottleneck_channels": 2, "latent_dim": 8},
    "svae": {"widths": [4, 8], "bottleneck_channels": 2, "latent_dim": 8, "heads": 2, "feedforward": 16,
             "sequence_length": 3, "layers": 1},
    "dae": {"base_width": 4, "depth": 2, "noise_cell_px": 4},
    "fanogan": {"widths": [4, 8], "latent_dim": 8, "n_critic": 2},
    "cddpm": {"encoder": "resnet18", "cond_dim": 8},
}


def _fresh_encoder_file(settings: dict, path) -> dict[str, str]:
    """cddpm's extra input: an encoder file (pddpm.pretrain's format) of an untrained encoder."""
    from pddpm.pretrain import PretrainResult, save_encoder

    model = build(settings["kind"], settings)
    result = PretrainResult(model.encoder.trunk.name, model.encoder.trunk.state_dict(), [], {})
    save_encoder(result, path)
    return {"encoder": str(path)}


@pytest.mark.parametrize("name", [n for n, k in KINDS.items() if k.trained])
def test_the_registry_describes_exactly_the_loss_terms_a_kind_logs(name, tmp_path):
    """The training-curve axes are labelled from Kind.loss_terms: it must name every term the kind's
    training and validation log (both f-AnoGAN phases included), and no term it does not log."""
    k = KINDS[name]
    settings = {"kind": name, "image_size": [H, W], **{s: TOY_SECTIONS.get(s, {}) for s in k.sections}}
    extra = _fresh_encoder_file(settings, tmp_path / "encoder.pt") if "encoder" in k.extra_inputs else None
    res = train(_split(3), _split(1, seed=1), settings, {**CFG, "ema_decay": None}, seed=0, device="cpu",
                progress=False, extra_inputs=extra)
    logged = {"loss"} | {c.split("_", 1)[1] for c in pd.DataFrame(res.log).columns if c.startswith(("train_", "val_"))}
    assert logged == set(k.loss_terms)
    assert all(k.loss_terms[t] != t for t in logged)  # a description, not the column name again


@pytest.mark.parametrize("name", [n for n, k in KINDS.items() if k.trained])
def test_every_kind_trains_under_bf16_autocast(name, tmp_path):
    """The demo's `train.precision: auto` is bf16 on a CPU with native bf16 (configs/demo_all_models.yaml
    trains every kind with it): each kind's losses, optimisers and phases must run under bf16 autocast."""
    k = KINDS[name]
    settings = {"kind": name, "image_size": [H, W], **{s: TOY_SECTIONS.get(s, {}) for s in k.sections}}
    extra = _fresh_encoder_file(settings, tmp_path / "encoder.pt") if "encoder" in k.extra_inputs else None
    res = train(_split(3), _split(1, seed=1), settings, {**CFG, "ema_decay": None, "precision": "bf16"}, seed=0,
                device="cpu", progress=False, extra_inputs=extra)
    assert res.info["precision"] == "bf16"
    log = pd.DataFrame(res.log)
    assert len(log) and np.isfinite(log["train_loss"]).all() and np.isfinite(log["val_loss"].dropna()).all()
    assert all(v.dtype != torch.bfloat16 for v in res.state_dict.values())  # weights stay full precision


def test_thresh_reconstructs_black():
    images = np.random.default_rng(0).random((2, 3, H, W)).astype(np.float16)
    model = build("thresh", {"image_size": [H, W]})
    assert not any(True for _ in model.parameters()) and model.noise_members == 0
    assert not reconstruct(images, model, progress=False).any()


# ------------------------------------------------------------------------ a new kind on the interface
class ToySequenceAE(ModelKind):
    """Reads sequences of 3 slices as channels; two loss terms; noise only inside the brain mask (as a
    DAE would); an extra input file scales its output; reconstructs whole volumes."""

    sample_length = 3
    infer_unit = "volume"

    def __init__(self, settings):
        super().__init__(settings)
        self.enc = nn.Conv2d(3, 4, 3, padding=1)
        self.dec = nn.Conv2d(4, 3, 3, padding=1)
        self.register_buffer("scale", torch.ones(()))
        self.seen: list[tuple] = []

    def loss(self, batch, generator):
        x = batch.image
        assert x.shape[1:] == (3, H, W) and batch.mask.dtype == torch.bool
        noise = 0.1 * torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
        y = self.scale * self.dec(torch.relu(self.enc(torch.where(batch.mask, x + noise, x))))
        rec = (y - x).abs().mean()
        reg = 1e-2 * self.enc.weight.square().mean()
        return {"loss": rec + reg, "rec": rec, "reg": reg}

    def load_inputs(self, paths):
        self.scale.fill_(float(np.loadtxt(paths["scale"])))

    def reconstruct(self, image, mask, noise, run):
        self.seen.append(tuple(image.shape))
        return run(lambda v: v * 0.5, image)


class ToyTwoOptimisers(ModelKind):
    """A critic updated every step and a generator every second step (as a GAN), then a second phase
    from step 4 on in which only an encoder trains: one resumable job, several optimisers."""

    def __init__(self, settings):
        super().__init__(settings)
        self.gen = nn.Conv2d(1, 1, 3, padding=1)
        self.critic = nn.Conv2d(1, 1, 3, padding=1)
        self.encoder = nn.Conv2d(1, 1, 3, padding=1)

    def configure_optimisers(self, adam):
        return {"gen": adam(self.gen.parameters(), betas=(0.5, 0.9)),
                "critic": adam(self.critic.parameters(), betas=(0.5, 0.9)), "encoder": adam(self.encoder.parameters())}

    def loss(self, batch, generator):  # validation: the encoder's reconstruction through the generator
        x = batch.image
        return {"loss": (self.gen(self.encoder(x)) - x).abs().mean()}

    def training_step(self, batch, generator, optimisers, step, autocast):
        x = batch.image
        for opt in optimisers.values():
            opt.zero_grad(set_to_none=True)
        if step >= 4:
            with autocast():
                terms = self.loss(batch, generator)
            terms["loss"].backward()
            optimisers["encoder"].step()
            return {k: v.detach() for k, v in terms.items()}  # no critic term in this phase
        z = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
        critic = self.critic(self.gen(z).detach()).mean() - self.critic(x).mean()
        critic.backward()
        optimisers["critic"].step()
        g = -self.critic(self.gen(z)).mean()
        if step % 2 == 1:
            optimisers["gen"].zero_grad(set_to_none=True)
            g.backward()
            optimisers["gen"].step()
        return {"loss": g.detach(), "critic": critic.detach()}

    def reconstruct(self, image, mask, noise, run):
        return run(lambda v: self.gen(self.encoder(v)), image)


@pytest.fixture
def toy_kinds(monkeypatch):
    monkeypatch.setitem(KINDS, "toyseq", Kind("toyseq", "test_models:ToySequenceAE", extra_inputs={"scale": "ddpm"}))
    monkeypatch.setitem(KINDS, "toy2opt", Kind("toy2opt", "test_models:ToyTwoOptimisers"))


def _split(n, z=5, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random((n, z, H, W)).astype(np.float16)
    mask = np.zeros((n, z, H, W), np.uint8)
    mask[..., 4:12, 4:12] = 1
    return {"image": image, "mask": mask}


CFG = {"batch_size": 2, "epochs": 4, "val_every_steps": 2, "checkpoint_every_steps": 100, "lr": 1e-2,
       "slices_per_volume": 2, "lr_schedule": "cosine", "warmup_steps": 2, "ema_decay": 0.9}


def test_a_sequence_kind_trains_logs_every_term_and_resumes(toy_kinds, tmp_path):
    tr, va = _split(3), _split(1, seed=1)
    (tmp_path / "scale.txt").write_text("0.5")
    extra = {"scale": str(tmp_path / "scale.txt")}
    full = train(tr, va, {"kind": "toyseq", "image_size": [H, W]}, CFG, seed=0, device="cpu", progress=False,
                 extra_inputs=extra)
    assert full.info["steps"] == 4 * (3 * 2 // 2)  # epochs x (volumes x slices_per_volume // batch)
    assert full.state_dict["scale"].item() == 0.5  # the extra input reached the kind
    log = pd.DataFrame(full.log)
    assert {"train_rec", "train_reg", "val_rec", "val_reg"} <= set(log.columns)
    assert np.allclose(log.train_loss, log.train_rec + log.train_reg)
    with pytest.raises(TrainingInterrupted):
        train(tr, va, {"kind": "toyseq", "image_size": [H, W]}, CFG, seed=0, device="cpu", progress=False,
              extra_inputs=extra, checkpoint_dir=tmp_path / "ck", stop_after_steps=5)
    resumed = train(tr, va, {"kind": "toyseq", "image_size": [H, W]}, CFG, seed=0, device="cpu", progress=False,
                    extra_inputs=extra, checkpoint_dir=tmp_path / "ck")
    assert resumed.info["resumed_from_step"] == 5
    strip = [{k: v for k, v in r.items() if k != "images_per_s"} for r in full.log]
    assert strip == [{k: v for k, v in r.items() if k != "images_per_s"} for r in resumed.log]
    for k, v in full.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    # another extra input file is another run: the checkpoint is not resumed
    (tmp_path / "scale.txt").write_text("0.25")
    other = train(tr, va, {"kind": "toyseq", "image_size": [H, W]}, CFG, seed=0, device="cpu", progress=False,
                  extra_inputs=extra, checkpoint_dir=tmp_path / "ck")
    assert other.info["resumed_from_step"] is None

    # outputs: every term a column, model.pt rebuilds the kind; inference hands it whole volumes
    write_outputs(full, {"kind": "toyseq", "image_size": [H, W]}, {}, tmp_path / "model.pt", tmp_path / "log.csv",
                  tmp_path / "run.json")
    assert list(pd.read_csv(tmp_path / "log.csv").columns)[:4] == ["step", "train_loss", "val_loss", "images_per_s"]
    assert "val_reg" in pd.read_csv(tmp_path / "log.csv").columns
    model = load_trained(tmp_path / "model.pt")
    images = _split(2, z=7)["image"]
    rec = reconstruct(images, model, batch_size=3, progress=False)
    assert model.seen == [(1, 7, H, W), (1, 7, H, W)]
    np.testing.assert_allclose(rec, (((images.astype(np.float32) * 2 - 1) * 0.5) + 1) / 2, atol=1e-6)


def test_a_kind_with_several_optimisers_and_phases_resumes_exactly(toy_kinds, tmp_path):
    tr, va = _split(4, z=3), _split(1, z=3, seed=1)
    cfg = {**CFG, "epochs": 2, "val_every_steps": 3, "ema_decay": None}  # 8 steps: phase 2 from step 4
    settings = {"kind": "toy2opt", "image_size": [H, W]}
    full = train(tr, va, settings, cfg, seed=1, device="cpu", progress=False)
    with pytest.raises(TrainingInterrupted):
        train(tr, va, settings, cfg, seed=1, device="cpu", progress=False, checkpoint_dir=tmp_path, stop_after_steps=3)
    resumed = train(tr, va, settings, cfg, seed=1, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert resumed.info["resumed_from_step"] == 3
    assert [r["train_loss"] for r in full.log] == [r["train_loss"] for r in resumed.log]
    critic, critic_resumed = pd.DataFrame(full.log).train_critic, pd.DataFrame(resumed.log).train_critic
    assert critic.equals(critic_resumed) and critic[:4].notna().all() and critic[4:].isna().all()
    for k, v in full.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    # the critic and generator stopped changing in phase 2: the saved critic is the one at step 4
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ck["optimisers"]["critic"]["state"][0]["step"].item() == 4
    assert ck["optimisers"]["encoder"]["state"][0]["step"].item() == 4
    assert ck["optimisers"]["gen"]["state"][0]["step"].item() == 2


def test_infer_arrays_runs_any_kind_from_its_model_file(toy_kinds, tmp_path):
    tr, va = _split(4, z=3), _split(1, z=3, seed=1)
    res = train(tr, va, {"kind": "toy2opt", "image_size": [H, W]}, {**CFG, "epochs": 1, "ema_decay": None},
                seed=1, device="cpu", progress=False)
    write_outputs(res, {"kind": "toy2opt", "image_size": [H, W]}, {}, tmp_path / "model.pt", tmp_path / "l.csv",
                  tmp_path / "r.json")
    images = _split(2, z=3)["image"]
    recons, maps, info = infer_arrays(images, np.ones(images.shape, np.uint8), model="toy2opt",
                                      model_path=tmp_path / "model.pt", device="cpu", progress=False)
    assert recons.shape == images.shape and maps.shape == images.shape and info["kind"] == "toy2opt"
    with pytest.raises(PddpmConfigError, match="takes no inference options"):
        infer_arrays(images, np.ones(images.shape, np.uint8), model="toy2opt", model_path=tmp_path / "model.pt",
                     device="cpu", progress=False, stride=4)
    with pytest.raises(Exception, match="holds a 'toy2opt' model, not 'pddpm'"):
        infer_arrays(images, np.ones(images.shape, np.uint8), model="pddpm", model_path=tmp_path / "model.pt",
                     device="cpu", progress=False)
