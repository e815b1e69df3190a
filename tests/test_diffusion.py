"""Cosine schedule, forward noising, the patch grid and the patched loss."""

import pytest
import torch

from pddpm.diffusion import Diffusion
from pddpm.errors import PddpmInputError
from pddpm.models import build
from pddpm.patches import patch_corners, patch_mask

SETTINGS = {"kind": "pddpm", "diffusion": {"noise": {"type": "gaussian"}}, "patch": {"size": 48, "stride": 48},
            "image_size": [96, 96]}


def test_cosine_schedule_values():
    d = Diffusion(1000, 0.008)
    ab = d.alphas_cumprod
    assert ab[499].item() == pytest.approx(0.494, abs=0.001)
    assert ab[0].item() == pytest.approx(1.0, abs=1e-4)
    assert ab[-1].item() < 1e-6
    assert (ab[1:] < ab[:-1]).all()
    assert d.betas.max().item() <= 0.999 + 1e-12


def test_q_sample_mixes_signal_and_noise_per_sample():
    d = Diffusion()
    x0, noise = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    xt = d.q_sample(x0, torch.tensor([0, 499]), noise)
    assert xt[0].mean().item() == pytest.approx(d.sqrt_alphas_cumprod[0].item(), rel=1e-6)
    assert xt[1].mean().item() == pytest.approx(0.494 ** 0.5, abs=1e-3)


def test_patch_grid():
    assert patch_corners(96, 96, 48, 48) == [(0, 0), (0, 48), (48, 0), (48, 48)]
    assert len(patch_corners(96, 96, 48, 24)) == 9  # overlapping grid for inference
    m = patch_mask(96, 96, (48, 0), 48)
    assert m.dtype == torch.bool and m.sum().item() == 48 * 48 and m[48:, :48].all()
    with pytest.raises(PddpmInputError, match="not tiled"):
        patch_corners(100, 96, 48, 48)
    with pytest.raises(PddpmInputError, match="larger"):
        patch_corners(32, 32, 48, 48)


def test_only_the_chosen_patch_is_noised_and_loss_is_a_quarter_of_the_patch_l1():
    obj = build("pddpm", SETTINGS, network=torch.nn.Identity())
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 1, 96, 96) * 2 - 1
    x_t, t, mask = obj.noised(x0, gen)
    assert mask.shape == (8, 1, 96, 96)
    for i in range(8):
        assert mask[i].sum().item() == 48 * 48
        changed = (x_t[i] != x0[i])
        assert not changed[~mask[i]].any(), "context outside the patch must stay clean"
        assert changed[mask[i]].float().mean() > 0.99
    pred = torch.rand(8, 1, 96, 96)
    loss = obj.patch_l1(pred, x0, mask)
    patch_l1 = torch.stack([(pred[i][mask[i]] - x0[i][mask[i]]).abs().mean() for i in range(8)]).mean()
    assert loss.item() == pytest.approx(patch_l1.item() / 4, rel=1e-5)


def test_ddpm_noises_the_whole_slice():
    obj = build("ddpm", SETTINGS, network=torch.nn.Identity())
    x0 = torch.zeros(4, 1, 96, 96)
    x_t, t, mask = obj.noised(x0, torch.Generator().manual_seed(0))
    assert mask is None and ((x_t != 0).float().mean() > 0.99)
