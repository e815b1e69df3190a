"""cDDPM: the conditioned diffusion model (Behrendt et al., arXiv 2312.04215; docs/cddpm.md).

The DDPM baseline's setting - the whole slice noised with simplex noise, x0 predicted, L1 loss, T = 1000
cosine - with the UNet conditioned on the clean input slice: a ResNet encoder reads the slice, a linear
head maps its pooled features to a vector of `cddpm.cond_dim`, and the UNet concatenates that vector to
its time embedding, so every residual block's scale-shift sees it (pddpm.models.unet). The encoder is
trained jointly with the UNet, starting from the masked-image-modelling pre-training of the `pretrain`
rule (pddpm.pretrain; kind cddpm) or from a random initialisation (kind cddpm_nopretrain).

Training slices get torchio's intensity augmentations (gamma, bias field, blur, ghosting) inside the
brain. Inference: one forward pass per t of `infer.cddpm_timesteps`, each with its own noise map, the
reconstructions averaged.

The ResNets are torchvision's layouts (its module names, strides and initialisation; the parameter counts
are torchvision's less its classifier and two input channels), written out here because torchvision's
compiled operators do not load against this project's CPU torch wheel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from pddpm.errors import PddpmConfigError, PddpmInputError
from pddpm.models.base import Batch, PassRunner
from pddpm.models.patched import PatchedDiffusion, member_timesteps
from pddpm.models.unet import build_unet

ENCODER_FORMAT = 1  # layout of the pre-trained encoder file (pddpm.pretrain.save_encoder)


# ------------------------------------------------------------------------------------ ResNet encoders
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3, as torchvision
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


RESNETS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3))}


class ResNet(nn.Module):
    """torchvision's ResNet without its classifier: (B, C, H, W) -> pooled features (B, out_features);
    `feature_map` gives the last stage's (B, out_features, H/32, W/32) (the pre-training decoder reads it)."""

    def __init__(self, name: str, in_channels: int = 1):
        super().__init__()
        if name not in RESNETS:
            raise PddpmConfigError(f"cddpm.encoder {name!r} is not one of {', '.join(RESNETS)}")
        block, layers = RESNETS[name]
        self.name = name
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(block, 64, layers[0])
        self.layer2 = self._layer(block, 128, layers[1], 2)
        self.layer3 = self._layer(block, 256, layers[2], 2)
        self.layer4 = self._layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_features = 512 * block.expansion
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.feature_map(x)), 1)


class ConditionEncoder(nn.Module):
    """Clean slice (B, 1, H, W) -> conditioning vector (B, cond_dim): ResNet, pooled, a linear head."""

    def __init__(self, name: str, cond_dim: int):
        super().__init__()
        self.trunk = ResNet(name)
        self.head = nn.Linear(self.trunk.out_features, cond_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def cond_dim_of(settings: dict) -> int:
    """`cddpm.cond_dim`, or (null) the released code's 4 x `unet.base_width`."""
    return int(settings["cddpm"]["cond_dim"] or 4 * settings["unet"]["base_width"])


def load_encoder_state(trunk: ResNet, path) -> None:
    """Load a pre-trained encoder file (pddpm.pretrain) into `trunk`; a file made for another encoder is a
    PddpmInputError naming the file and the first layer that does not fit."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise PddpmInputError(f"{path}: not a readable pre-trained encoder file ({exc}); delete it and rerun "
                              "the `pretrain` rule") from exc
    if not isinstance(blob, dict) or blob.get("format") != ENCODER_FORMAT or "state_dict" not in blob:
        raise PddpmInputError(f"{path}: not a pre-trained encoder file of format {ENCODER_FORMAT} (from the "
                              "`pretrain` rule); delete it and rerun that rule")
    saved, own = blob["state_dict"], trunk.state_dict()
    fix = (f"set cddpm.encoder to the encoder the file was made for ({blob.get('encoder', 'unknown')}), or delete "
           f"the file and rerun the `pretrain` rule for cddpm.encoder = {trunk.name}")
    for key, value in own.items():
        if key not in saved:
            raise PddpmInputError(f"{path}: the pre-trained encoder has no layer {key!r}, which the configured "
                                  f"encoder {trunk.name} has; {fix}")
        if tuple(saved[key].shape) != tuple(value.shape):
            raise PddpmInputError(f"{path}: layer {key!r} is {tuple(saved[key].shape)} in the file but "
                                  f"{tuple(value.shape)} in the configured encoder {trunk.name}; {fix}")
    extra = [k for k in saved if k not in own]
    if extra:
        raise PddpmInputError(f"{path}: the pre-trained encoder has layer {extra[0]!r}, which the configured "
                              f"encoder {trunk.name} lacks; {fix}")
    trunk.load_state_dict(saved)


# ----------------------------------------------------------------------------------- augmentation
def intensity_augmentation(p: float):
    """torchio's RandomGamma, RandomBiasField, RandomBlur, RandomGhosting, each with probability p, default
    parameters otherwise (imported here: torchio is only needed when a cddpm kind trains)."""
    import torchio as tio

    return tio.Compose([tio.RandomGamma(p=p), tio.RandomBiasField(p=p), tio.RandomBlur(p=p),
                        tio.RandomGhosting(p=p)])


def augment_slices(image: torch.Tensor, mask: torch.Tensor, transform, seed: int) -> torch.Tensor:
    """`transform` applied to each slice of image (B, 1, H, W) in [-1, 1], on the CPU in the [0, 1] scale
    torchio's transforms expect, inside the brain mask only (the background stays as it was). torchio
    draws from torch's global CPU generator: it is seeded with `seed` inside a fork, so the draws are
    the seed's and the global state is untouched."""
    import torchio as tio

    x = ((image.detach().float().cpu() + 1) / 2).clamp_min(0)
    out = torch.empty_like(x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(x.shape[0]):
            img = tio.ScalarImage(tensor=x[i][..., None])  # (C, H, W, 1): one slice as a thin volume
            out[i] = transform(img).data[..., 0]
    out = (out * 2 - 1).clamp(-1, 1).to(image.device, image.dtype)
    return torch.where(mask, out, image)


# ------------------------------------------------------------------------------------------- kinds
class CDDPM(PatchedDiffusion):
    """Conditioned DDPM (see the module docstring). `network`: any net(x_t, t, cond) -> x0 prediction in
    place of the UNet; `encoder`: any module slice -> (B, cond_dim) in place of the ResNet encoder."""

    patched = False
    scale_shift = True  # the released code's use_scale_shift_norm=True
    #: whether training starts from the `pretrain` rule's encoder (Kind.extra_inputs "encoder")
    pretrained: ClassVar[bool] = True

    def __init__(self, settings: dict, network: nn.Module | None = None, encoder: nn.Module | None = None):
        super().__init__(settings, network)
        s = self.settings
        self.encoder = encoder if encoder is not None else ConditionEncoder(s["cddpm"]["encoder"], cond_dim_of(s))
        self._augmentation = intensity_augmentation(s["cddpm"]["augment_p"]) if s["cddpm"]["augment"] else None

    def build_network(self, image_size) -> nn.Module:
        return build_unet(self.settings["unet"], image_size, self.scale_shift, cond_dim=cond_dim_of(self.settings))

    def load_inputs(self, paths: dict[str, str]) -> None:
        if not self.pretrained:
            return super().load_inputs(paths)
        if set(paths) != {"encoder"}:
            raise PddpmConfigError(f"model kind {self.name!r} trains from a pre-trained encoder (input `encoder`, "
                                   f"the `pretrain` rule's file), got inputs {sorted(paths)}; kind "
                                   "cddpm_nopretrain trains without one")
        load_encoder_state(self.encoder.trunk, paths["encoder"])

    # ------------------------------------------------------------------------------------- training
    def augment(self, batch: Batch, generator: torch.Generator) -> Batch:
        if self._augmentation is None:
            return batch
        # one seed per step from the run's generator: a resumed run draws the same augmentations
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device).item())
        return Batch(augment_slices(batch.image, batch.mask, self._augmentation, seed), batch.mask)

    def loss(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        x0 = batch.image
        x_t, t, _ = self.noised(x0, generator)
        return {"loss": self.patch_l1(self.net(x_t, t, self.encoder(x0)), x0, None)}

    # ------------------------------------------------------------------------------------ inference
    def configure_inference(self, cddpm_timesteps: Sequence[int] | None = None) -> CDDPM:
        """t of each member of the noise ensemble; None: the schema's `infer.cddpm_timesteps`."""
        from pddpm.config import defaults

        steps = list(cddpm_timesteps if cddpm_timesteps is not None else defaults("infer", "cddpm_timesteps"))
        self.timesteps = member_timesteps(steps[0], steps, self.diffusion.timesteps)
        h, w = self.settings["image_size"]
        self.stride = None
        self.regions = torch.ones(1, h, w, dtype=torch.bool)
        self.noise_members = len(self.timesteps)
        self.inputs_per_slice = len(self.timesteps)
        return self

    def reconstruct(self, image: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None,
                    run: PassRunner) -> torch.Tensor:
        s, _, h, w = image.shape
        n_e = len(self.timesteps)
        cond = run(self.encoder, image)  # once per slice, shared by its members
        t_i = torch.as_tensor(self.timesteps, dtype=torch.long, device=image.device).repeat(s)
        # items in (slice, member) order; member e has its own noise map (fresh noise per t)
        x0_i = image[:, None].expand(s, n_e, 1, h, w).reshape(-1, 1, h, w)
        cond_i = cond[:, None].expand(s, n_e, cond.shape[-1]).reshape(s * n_e, -1)
        xt = self.diffusion.q_sample(x0_i, t_i, noise.reshape(s * n_e, 1, h, w))
        return run(self.net, xt, t_i, cond_i).reshape(s, n_e, h, w).mean(1, keepdim=True)

    def inference_info(self) -> dict:
        return {"kind": self.name, "timesteps": list(self.timesteps),
                "encoder": self.settings["cddpm"]["encoder"], "cond_dim": cond_dim_of(self.settings)}


class CDDPMNoPretrain(CDDPM):
    """cDDPM whose encoder starts from a random initialisation (the paper's row without pre-training)."""

    pretrained = False
