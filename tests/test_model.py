"""The UNet: the paper network's exact size and cost, shapes, the DDPM variant, saving and loading."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pddpm.errors import PddpmInputError
from pddpm.models import build, complete_settings, load_trained, save_trained

PAPER = {"kind": "pddpm", "unet": {}, "diffusion": {}, "patch": {"size": 48, "stride": 48}, "image_size": [96, 96]}
TINY = {"kind": "pddpm", "unet": {"base_width": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
                                  "attention_heads": 1, "attention_head_channels": 16, "groups": 4},
        "diffusion": {}, "patch": {"size": 24, "stride": 24}, "image_size": [48, 48]}


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_paper_network_size_and_flops():
    net = build("pddpm", PAPER).net
    assert n_params(net) == 37_513_857
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = net(torch.randn(1, 1, 96, 96), torch.tensor([499]))
    assert out.shape == (1, 1, 96, 96)
    assert counter.get_total_flops() / 1e9 == pytest.approx(149.1, abs=0.5)


def test_ddpm_baseline_is_the_same_network_without_scale_shift():
    pddpm, ddpm = build("pddpm", PAPER).net, build("ddpm", PAPER).net
    # only the time-embedding projections shrink: each residual block emits C instead of 2C values
    emb_pd = [m.out_features for n, m in pddpm.named_modules() if n.endswith("emb_layers.1")]
    emb_dd = [m.out_features for n, m in ddpm.named_modules() if n.endswith("emb_layers.1")]
    assert emb_pd == [2 * c for c in emb_dd]
    assert n_params(pddpm) - n_params(ddpm) == sum(513 * c for c in emb_dd)


@pytest.mark.parametrize("kind", ["pddpm", "ddpm"])
def test_shapes_and_time_conditioning(kind):
    torch.manual_seed(0)
    net = build(kind, TINY).net
    # ADM zero-initialises the last layers; perturb them so the output depends on the input
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(3, 1, 48, 48)
    y1 = net(x, torch.tensor([0, 1, 2]))
    y2 = net(x, torch.tensor([900, 901, 902]))
    assert y1.shape == x.shape
    assert not torch.allclose(y1, y2), "the timestep must change the prediction"


def test_save_and_load_roundtrip(tmp_path):
    torch.manual_seed(1)
    model = build("pddpm", TINY)
    net = model.net
    for p in net.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    save_trained(model, tmp_path / "model.pt")
    loaded = load_trained(tmp_path / "model.pt")
    net2, diffusion, settings = loaded.net, loaded.diffusion, loaded.settings
    # model.pt stores the settings completed from the schema, so it rebuilds the same network later
    assert settings == complete_settings(TINY) and not net2.training and diffusion.timesteps == 1000
    x, t = torch.rand(2, 1, 48, 48), torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(net.eval()(x, t), net2(x, t))


def test_load_trained_errors_name_the_file(tmp_path):
    with pytest.raises(PddpmInputError, match="not found"):
        load_trained(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(PddpmInputError, match="bad.pt"):
        load_trained(bad)
