"""Projected GAN discriminator (Sauer et al., 2021) on any timm backbone.

Images in [-1, 1] are normalised with the backbone's own mean/std, optionally resized, and passed through
the backbone; each chosen feature level (optionally mixed by fixed random projections, Projected GAN's CCM
and CSM) feeds a small spectral-normalised conv head. The output is a list of logit maps, one per level,
which every loss in :mod:`ganxfer.losses` averages and sums.

State-dict keys: ``backbone.`` + timm's own names, ``projection.*`` (fixed, saved) and ``heads.*``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganxfer.nets import backbones


class RandomProjection(nn.Module):
    """Fixed random mixing: CCM (a 1x1 conv per level, widths ``width * 2**i``), then CSM (top-down: each
    level adds a 1x1 conv of the already mixed, coarser level, upsampled; Projected GAN's fusion blocks apply
    the conv after the upsampling, which is the same map). Never trained, but saved."""

    def __init__(self, channels: list[int], width: int) -> None:
        super().__init__()
        self.widths = [width * 2**i for i in range(len(channels))]
        self.ccm = nn.ModuleList(nn.Conv2d(c, w, 1) for c, w in zip(channels, self.widths, strict=True))
        self.csm = nn.ModuleList(nn.Conv2d(self.widths[i + 1], self.widths[i], 1) for i in range(len(channels) - 1))
        self.requires_grad_(False)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        mixed = [ccm(f) for ccm, f in zip(self.ccm, feats, strict=True)]
        out = [mixed[-1]]
        for i in reversed(range(len(mixed) - 1)):
            up = F.interpolate(self.csm[i](out[0]), size=mixed[i].shape[-2:], mode="bilinear", align_corners=False)
            out.insert(0, mixed[i] + up)
        return out


def head(cin: int, width: int, side: int) -> nn.Sequential:
    """A spectral-normalised conv head: 3x3 conv, 4x4 stride-2 convs down to at most 8x8, 1x1 conv to logits."""
    layers: list[nn.Module] = [spectral_norm(nn.Conv2d(cin, width, 3, 1, 1)), nn.LeakyReLU(0.2, True)]
    while side > 8:
        layers += [spectral_norm(nn.Conv2d(width, width, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        side //= 2
    layers.append(spectral_norm(nn.Conv2d(width, 1, 1)))
    return nn.Sequential(*layers)


class ProjectedDiscriminator(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="ganxfer",
    tags=["gan", "ganxfer", "projected-gan", "discriminator", "timm"],
    repo_url="https://github.com/ganxfer/ganxfer",
):
    """image (B, channels, resolution, resolution) in [-1, 1] -> list of logit maps (B, 1, h_i, w_i).

    Args:
        backbone: timm model name (``ganxfer backbones`` lists the verified ones).
        resolution: side of the images D is given.
        channels: 1 (repeated to RGB) or 3.
        mode: ``frozen`` (backbone fixed and in eval mode), ``finetune`` or ``partial``.
        trainable_from: ``partial`` mode: first trained backbone stage (feature level).
        backbone_lr_mult: learning-rate multiplier of trained backbone parameters.
        out_indices: feature levels fed to heads (default: the backbone's known levels, else all).
        input_size: resize images to this side before the backbone (fixed-size ViTs default to theirs).
        projection: fixed random CCM/CSM projections before the heads.
        head_channels: width of each head (and base width of the projections).
        pretrained, pretrained_file: where the backbone's initial weights come from. Neither is written to
            ``config.json``: an exported model is rebuilt with random weights and loads its own safetensors.
    """

    kind = "projected"

    def __init__(self, backbone: str = "tf_efficientnet_lite0.in1k", resolution: int = 64, channels: int = 3,
                 mode: str = "frozen", trainable_from: int = 0, backbone_lr_mult: float = 1.0,
                 out_indices: list[int] | None = None, input_size: int | None = None, projection: bool = False,
                 head_channels: int = 64, pretrained: bool = False, pretrained_file: str | None = None) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels={channels}: the projected discriminator takes 1 or 3")
        self.backbone, self.out_indices = backbones.create(backbone, pretrained, pretrained_file, out_indices)
        self.mode, self.channels, self.backbone_lr_mult = mode, channels, backbone_lr_mult
        self.frozen_modules = backbones.freeze(self.backbone, mode, trainable_from)
        mean, std = backbones.mean_std(self.backbone)
        self.register_buffer("scale", 0.5 / std, persistent=False)  # [-1, 1] -> (x01 - mean) / std
        self.register_buffer("shift", (0.5 - mean) / std, persistent=False)
        self.input_size = input_size or backbones.native_size(self.backbone)
        levels = [backbones.feature_levels(self.backbone)[i] for i in self.out_indices]
        widths = [lvl["num_chs"] for lvl in levels]
        self.projection = RandomProjection(widths, head_channels) if projection else None
        widths = self.projection.widths if projection else widths
        side = self.input_size or resolution
        self.heads = nn.ModuleList(head(w, head_channels, math.ceil(side / lvl["reduction"]))
                                   for w, lvl in zip(widths, levels, strict=True))
        if isinstance(self._hub_mixin_config, dict):  # config.json: the resolved levels, no weight source
            self._hub_mixin_config["out_indices"] = list(self.out_indices)
            for key in ("pretrained", "pretrained_file"):
                self._hub_mixin_config.pop(key, None)
        self.train()

    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        """Frozen backbone parts stay in eval mode, so their BatchNorm statistics never move."""
        super().train(mode)
        for name in self.frozen_modules:
            self.backbone.get_submodule(name).eval()
        return self

    def optimizer_groups(self, lr: float) -> list[dict]:
        """Trainable parameters: heads at ``lr``, backbone at ``lr * backbone_lr_mult``."""
        heads = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
        body = [p for p in self.backbone.parameters() if p.requires_grad]
        return [{"params": heads, "lr": lr}] + ([{"params": body, "lr": lr * self.backbone_lr_mult}] if body else [])

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's feature maps (after projection when enabled) for images in [-1, 1]."""
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = x * self.scale + self.shift
        if self.input_size and x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        feats = backbones.features(self.backbone, x, self.out_indices)
        return self.projection(feats) if self.projection is not None else feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [h(f) for h, f in zip(self.heads, self.features(x), strict=True)]
