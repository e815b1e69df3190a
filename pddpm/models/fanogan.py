"""f-AnoGAN (Schlegl et al. 2019): a WGAN-GP, then the izi_f encoder (docs/training.md, "Model kind `fanogan`").

One training job in two phases of whole epochs (placed by `plan`, stored in the buffer `gan_steps` so that
a resumed run keeps them):
1. WGAN-GP (Gulrajani et al. 2017): every step updates the critic on a batch of real slices, its loss
   D(G(z)) - D(x) + gp_weight * (|grad D(x_hat)| - 1)^2 with x_hat between real and fake; after every
   `n_critic` critic steps the generator takes one step on -D(G(z)). z ~ N(0, I) of `latent_dim`.
2. izi_f encoder: generator and critic frozen (eval mode, no gradients), the encoder E trained on
   MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x)))), f = the critic's features before its last layer.
Validation: in phase 2 the izi_f loss (what inference uses); in phase 1 the loss is NaN so that no GAN-phase
weights are kept (the best model always has a trained encoder) and the critic's Wasserstein estimate
D(x) - D(G(z)) is logged as `val_wdist`. Inference: the reconstruction is G(E(x)).

Networks: DCGAN-like stacks (Radford et al. 2016, as the PyTorch DCGAN example): the critic and the
encoder are 4 x 4 stride-2 convolutions with LeakyReLU(0.2) over `widths` channels, without normalisation
(WGAN-GP's critic has no batch norm), to a linear score (critic) or a tanh latent (encoder, f-AnoGAN's
`tanh_fc`); the generator mirrors them: a linear layer to the coarsest grid, 4 x 4 stride-2 transposed
convolutions with batch norm and ReLU, tanh output in [-1, 1] like the slices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pddpm.errors import PddpmConfigError
from pddpm.models.base import Batch, ModelKind, PassRunner
from pddpm.models.checks import fanogan_problems, raise_problems

LEAK = 0.2  # DCGAN


def down_stack(widths: Sequence[int]) -> nn.Sequential:
    layers, prev = [], 1
    for w in widths:
        layers += [nn.Conv2d(prev, w, 4, stride=2, padding=1), nn.LeakyReLU(LEAK)]
        prev = w
    return nn.Sequential(*layers)


class Critic(nn.Module):
    def __init__(self, widths: Sequence[int], coarse: tuple[int, int]):
        super().__init__()
        self.convs = down_stack(widths)
        self.score = nn.Linear(widths[-1] * coarse[0] * coarse[1], 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): the output of the last convolution, flattened (B, F)."""
        return self.convs(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(x))[:, 0]


class Encoder(nn.Module):
    def __init__(self, widths: Sequence[int], coarse: tuple[int, int], latent_dim: int):
        super().__init__()
        self.convs = down_stack(widths)
        self.fc = nn.Linear(widths[-1] * coarse[0] * coarse[1], latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(self.convs(x).flatten(1)))


class Generator(nn.Module):
    def __init__(self, widths: Sequence[int], coarse: tuple[int, int], latent_dim: int):
        super().__init__()
        self.coarse = coarse
        top = widths[-1]
        self.fc = nn.Linear(latent_dim, top * coarse[0] * coarse[1])
        self.fc_norm = nn.BatchNorm2d(top)
        layers, prev = [], top
        for w in reversed(widths[:-1]):
            layers += [nn.ConvTranspose2d(prev, w, 4, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            prev = w
        layers += [nn.ConvTranspose2d(prev, 1, 4, stride=2, padding=1), nn.Tanh()]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).reshape(len(z), -1, *self.coarse)
        return self.deconvs(F.relu(self.fc_norm(h)))


class FAnoGAN(ModelKind):
    def __init__(self, settings: dict):
        super().__init__(settings)
        raise_problems(self.name, self.settings, self.settings["image_size"])
        s = self.settings["fanogan"]
        h, w = self.settings["image_size"]
        widths, n = s["widths"], len(s["widths"])
        coarse = (h // 2 ** n, w // 2 ** n)
        self.latent_dim = s["latent_dim"]
        self.gan_generator = Generator(widths, coarse, self.latent_dim)
        self.critic = Critic(widths, coarse)
        self.encoder = Encoder(widths, coarse, self.latent_dim)
        # steps of phase 1 (set by `plan`; -1 = not planned) and steps done: buffers, so that a resumed run and
        # the EMA copy of the model (which copies buffers) know the phase, also during validation
        self.register_buffer("gan_steps", torch.tensor(-1, dtype=torch.long))
        self.register_buffer("steps_done", torch.tensor(0, dtype=torch.long))
        self._gan_steps: int | None = None  # gan_steps as a Python int, read once (a GPU sync)

    # ------------------------------------------------------------------------------------- training
    def plan(self, steps_per_epoch: int, total_steps: int) -> None:
        """Phase 1 = round(gan_share x epochs) whole epochs, at least one, leaving at least one for phase 2."""
        epochs = total_steps // steps_per_epoch
        if epochs < 2:
            raise PddpmConfigError(fanogan_problems({**self.settings, "train": {"epochs": epochs}},
                                                    self.settings["image_size"])[0])
        gan_epochs = min(max(1, round(self.settings["fanogan"]["gan_share"] * epochs)), epochs - 1)
        self.gan_steps.fill_(gan_epochs * steps_per_epoch)
        self._gan_steps = None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._gan_steps = None  # a resumed run's phases are those it started with
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def configure_optimisers(self, adam):
        s = self.settings["fanogan"]
        betas = tuple(s["gan_betas"])
        return {"generator": adam(self.gan_generator.parameters(), lr=s["lr"], betas=betas),
                "critic": adam(self.critic.parameters(), lr=s["lr"], betas=betas),
                "encoder": adam(self.encoder.parameters(), lr=s["lr"])}

    def _latent(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        return torch.randn((n, self.latent_dim), generator=generator, device=generator.device).to(device)

    def izif_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """izi_f loss of Schlegl et al. 2019 (kappa weighs the critic-feature residual)."""
        rec = self.gan_generator(self.encoder(x))
        image = F.mse_loss(rec.float(), x.float())
        feature = F.mse_loss(self.critic.features(rec).float(), self.critic.features(x).float())
        return {"loss": image + self.settings["fanogan"]["kappa"] * feature, "image": image, "feature": feature}

    def in_encoder_phase(self) -> bool:
        """Whether the encoder has trained at least one step (validation after the step counts)."""
        return bool(self.gan_steps >= 0 and self.steps_done > self.gan_steps)

    def loss(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x = batch.image
        if self.in_encoder_phase():
            return self.izif_terms(x)
        fake = self.gan_generator(self._latent(len(x), generator, x.device))
        wdist = self.critic(x).float().mean() - self.critic(fake).float().mean()
        return {"loss": torch.full((), math.nan, device=x.device), "wdist": wdist}

    def training_step(self, batch, generator, optimisers, step, autocast):
        if self._gan_steps is None:
            if self.gan_steps < 0:
                raise PddpmConfigError("fanogan trains in phases: train() must call plan() first")
            self._gan_steps = int(self.gan_steps)
        x = batch.image
        if step >= self._gan_steps:
            terms = self._encoder_step(x, optimisers, autocast)
        else:
            terms = self._gan_step(x, generator, optimisers, step, autocast)
        self.steps_done.fill_(step + 1)
        return {k: v.detach() for k, v in terms.items()}

    def _encoder_step(self, x, optimisers, autocast) -> dict[str, torch.Tensor]:
        for net in (self.gan_generator, self.critic):
            net.eval().requires_grad_(False)  # frozen: batch-norm statistics as inference uses them
        with autocast():
            terms = self.izif_terms(x)
        optimisers["encoder"].zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimisers["encoder"].step()
        return terms

    def _gan_step(self, x, generator, optimisers, step, autocast) -> dict[str, torch.Tensor]:
        s = self.settings["fanogan"]
        n = len(x)
        self.critic.requires_grad_(True)
        with autocast():
            with torch.no_grad():
                fake = self.gan_generator(self._latent(n, generator, x.device))
            real_score, fake_score = self.critic(x).float().mean(), self.critic(fake).float().mean()
            alpha = torch.rand((n, 1, 1, 1), generator=generator, device=generator.device).to(x.device)
            between = (alpha * x + (1 - alpha) * fake.float()).requires_grad_(True)
            # the critic's own forward, not its compiled call: torch.compile (train.compile) has no double backward
            grad, = torch.autograd.grad(self.critic.forward(between).sum(), between, create_graph=True)
        gp = (grad.float().flatten(1).norm(dim=1) - 1).square().mean()
        critic_loss = fake_score - real_score + s["gp_weight"] * gp
        optimisers["critic"].zero_grad(set_to_none=True)
        critic_loss.backward()
        optimisers["critic"].step()
        terms = {"loss": critic_loss, "wdist": real_score - fake_score, "gp": gp}
        if (step + 1) % s["n_critic"] == 0:
            self.gan_generator.requires_grad_(True)
            self.critic.requires_grad_(False)
            with autocast():
                generator_loss = -self.critic(self.gan_generator(self._latent(n, generator, x.device))).float().mean()
            optimisers["generator"].zero_grad(set_to_none=True)
            generator_loss.backward()
            optimisers["generator"].step()
            self.critic.requires_grad_(True)
            terms["generator"] = generator_loss
        return terms

    # ------------------------------------------------------------------------------------ inference
    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None,
                    run: PassRunner) -> torch.Tensor:
        return run(lambda x: self.gan_generator(self.encoder(x)), image)
