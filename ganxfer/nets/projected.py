"""Projected GAN discriminator (Sauer et al., 2021) on any timm backbone.

Images in [-1, 1] are normalised with the backbone's own mean/std, optionally resized, and passed through
the backbone; each chosen feature level (optionally mixed by fixed random projections, Projected GAN's CCM
and CSM) feeds a small spectral-normalised conv head. The output is a list of logit maps, one per level,
which every loss in :mod:`ganxfer.losses` averages and sums.

State-dict keys: ``backbone.`` + timm's own names, ``projection.*`` (fixed, saved) and ``heads.*``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganxfer.nets import backbones
from ganxfer.nets.base import Judgement, hub_config
from ganxfer.nets.dcgan import DCGANDiscriminator, class_term


class RandomProjection(nn.Module):
    """Projected GAN's fixed random projections (``proj_type=2``, ``expand=True``), never trained but saved.

    CCM: a 1x1 conv per level, to widths ``w, 2w, 4w, 8w``. CSM, top-down as PG's FeatureFusionBlock: each
    level adds the already fused coarser level, upsamples the sum 2x (bilinear, aligned corners) and applies
    a 1x1 conv that halves the width, except at the finest level. Outputs are therefore at twice each level's
    resolution, with widths ``w, w, 2w, 4w`` (:attr:`widths`).
    """

    def __init__(self, channels: list[int], width: int) -> None:
        super().__init__()
        ccm = [width * 2**i for i in range(len(channels))]
        self.widths = [ccm[0]] + [c // 2 for c in ccm[1:]]
        self.ccm = nn.ModuleList(nn.Conv2d(c, w, 1) for c, w in zip(channels, ccm, strict=True))
        self.csm = nn.ModuleList(nn.Conv2d(c, w, 1) for c, w in zip(ccm, self.widths, strict=True))
        self.requires_grad_(False)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        mixed = [ccm(f) for ccm, f in zip(self.ccm, feats, strict=True)]
        out: list[torch.Tensor] = []
        for i in reversed(range(len(mixed))):
            x = mixed[i]
            if out:  # the fused coarser level: 2x its own side, which is this level's side for CNNs
                coarser = out[0]
                if coarser.shape[-2:] != x.shape[-2:]:
                    coarser = F.interpolate(coarser, size=x.shape[-2:], mode="bilinear", align_corners=True)
                x = x + coarser
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            out.insert(0, self.csm[i](x))
        return out


def cast_for_autocast(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` whose conv and linear weights and biases are in ``dtype``: what autocast would cast
    them to on every call, so that under autocast the copy computes the same values with no cast. The rest
    (normalisation layers, embeddings) keeps its dtype, as autocast leaves it."""
    low = copy.deepcopy(model).requires_grad_(False)
    for m in low.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            m.to(dtype)
    return low


def sn_conv(*args, **kwargs) -> nn.Module:
    return spectral_norm(nn.Conv2d(*args, **kwargs))


def down_block(cin: int, cout: int, separable: bool) -> nn.Sequential:
    """Projected GAN's DownBlock: SN conv 4x4 stride 2, or SN depthwise 3x3 + pointwise 1x1 then average pool;
    BatchNorm and LeakyReLU(0.2) in both."""
    if not separable:
        return nn.Sequential(sn_conv(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True))
    return nn.Sequential(sn_conv(cin, cin, 3, 1, 1, groups=cin, bias=False), sn_conv(cin, cout, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, True), nn.AvgPool2d(2, 2))


class MinibatchStd(nn.Module):
    """StyleGAN's minibatch standard deviation: one more channel holding the features' spread over groups of
    ``group`` images, so that a head can tell a varied batch from a collapsed one."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = math.gcd(self.group, n)
        y = x.float().reshape(g, n // g, c, h, w)
        y = (y.var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))  # (n // g,)
        y = y.view(1, n // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], 1)


def head(cin: int, width: int, side: int, kind: str = "pg", mbstd: int = 0) -> nn.Sequential:
    """A multi-scale head on a ``side`` x ``side`` map of ``cin`` channels (``mbstd`` > 0: a
    :class:`MinibatchStd` channel with that group size before the last conv).

    ``pg`` / ``separable``: Projected GAN's SingleDisc: down blocks while the side exceeds 8, their widths
    ``..., 2, 4, 8 x width`` counted back from the last (PG's 64 ... 512 at ``width=64``), then an SN 4x4 conv
    (valid padding) to logits: 4x4 logit maps for a 224 px input, as in PG. ``light``: a 3x3 conv, 4x4
    stride-2 convs down to at most 8x8 and a 1x1 conv, all at ``width`` (cheaper, no BatchNorm).
    """
    if kind == "light":
        layers: list[nn.Module] = [sn_conv(cin, width, 3, 1, 1), nn.LeakyReLU(0.2, True)]
        while side > 8:
            layers += [sn_conv(width, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            side //= 2
        std = [MinibatchStd(mbstd)] if mbstd else []
        return nn.Sequential(*layers, *std, sn_conv(width + bool(mbstd), 1, 1))
    downs = 0
    while side > 8:
        side, downs = side // 2, downs + 1
    widths = [width * 2 ** max(0, 3 - (downs - 1 - k)) for k in range(downs)]
    layers = []
    for w in widths:
        layers.append(down_block(cin, w, kind == "separable"))
        cin = w
    std = [MinibatchStd(mbstd)] if mbstd else []
    return nn.Sequential(*layers, *std, sn_conv(cin + bool(mbstd), 1, min(4, side), 1, 0, bias=False))


HEADS = ("light", "pg", "separable")


class ProjectedDiscriminator(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="ganxfer",
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
        head_channels: base width of the heads and of the projections (Projected GAN's 64).
        heads: ``light`` (the default), ``pg`` (Projected GAN's heads) or ``separable`` (PG's separable
            variant); see :func:`head`. On a 2-core CPU at 64 px the pg heads cost 1.5x the light ones per step
            and showed no gain at equal time (docs/research/speed.md).
        mbstd: group size of a minibatch-standard-deviation channel before each head's last conv (0 = none).
        pixel_ndf: when > 0, a DCGAN discriminator of this width also judges the pixels, trained from scratch
            alongside the heads; its logit is one more entry of the output list (Vision-aided GAN's ensemble
            of a pretrained-feature D with a plain one).
        pixel_norm: the pixel discriminator's ``norm``: ``batch`` (BatchNorm, which judges each image relative
            to its batch of all-real or all-fake images), ``spectral`` or ``none`` (each image judged on its own).
        pixel_input_size: the side the pixel discriminator judges (32, 64 or 128; default ``resolution``): 32
            sees a digit's shape without the finer texture the heads look after.
        pixel_weight: the pixel discriminator's logit is multiplied by this: its weight in D's score and in
            G's gradient, against the heads' 1 each.
        pixel_classes: K > 0 gives the pixel discriminator a K-way class head (``loss.classifier``, AC-GAN),
            returned as ``forward(x).classes``.
        pretrained, pretrained_file: where the backbone's initial weights come from. Neither is written to
            ``config.json``: an exported model is rebuilt with random weights and loads its own safetensors.
    """

    kind = "projected"

    def __init__(self, backbone: str = "tf_efficientnet_lite0.in1k", resolution: int = 64, channels: int = 3,
                 mode: str = "frozen", trainable_from: int = 0, backbone_lr_mult: float = 1.0,
                 out_indices: list[int] | None = None, input_size: int | None = None, projection: bool = False,
                 head_channels: int = 64, heads: str = "light", mbstd: int = 0, pixel_ndf: int = 0,
                 pixel_norm: str = "batch", pixel_input_size: int | None = None,
                 pixel_weight: float = 1.0, conditional: int = 0, pixel_classes: int = 0, pretrained: bool = False,
                 pretrained_file: str | None = None) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels={channels}: the projected discriminator takes 1 or 3")
        if heads not in HEADS:
            raise ValueError(f"discriminator.heads={heads!r}: use one of {', '.join(HEADS)}")
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
        scale = 2 if projection else 1  # CSM doubles every map
        self.heads = nn.ModuleList(head(w, head_channels, math.ceil(side / lvl["reduction"]) * scale, heads, mbstd)
                                   for w, lvl in zip(widths, levels, strict=True))
        self.conditional = conditional  # each head's last conv gets a per-class twin (projection D)
        self.projects = nn.ModuleList(sn_conv(h[-1].in_channels, conditional, h[-1].kernel_size, h[-1].stride,
                                              h[-1].padding, bias=False) for h in self.heads) if conditional else None
        self.pixel = DCGANDiscriminator(resolution, channels, pixel_ndf, pixel_norm, input_size=pixel_input_size,
                                        conditional=conditional, classes=pixel_classes) if pixel_ndf > 0 else None
        self.pixel_weight = pixel_weight
        config = hub_config(self)  # config.json: the resolved levels, no weight source
        config["out_indices"] = list(self.out_indices)
        for key in ("pretrained", "pretrained_file"):
            config.pop(key, None)
        self.low_precision: tuple[tuple, nn.Module] | None = None  # see _backbone_for; not in the state dict
        self.train()

    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        """Frozen backbone parts stay in eval mode, so their BatchNorm statistics never move."""
        super().train(mode)
        for name in self.frozen_modules:
            self.backbone.get_submodule(name).eval()
        return self

    def _apply(self, fn, recurse: bool = True):
        self.low_precision = None  # moved or converted weights: the copy is taken again from them
        return super()._apply(fn, recurse)

    def _backbone_for(self, x: torch.Tensor) -> nn.Module:
        """The backbone that runs on ``x``. Under autocast, a frozen backbone runs as a copy whose conv and linear
        weights are already in the autocast dtype (:func:`cast_for_autocast`): the same values, without autocast
        casting every weight on every pass (it caches casts only of weights that train). The copy is taken at the
        first such pass and again whenever the backbone's weights change (load_state_dict, in-place edits, moves);
        the backbone's own weights, which the state dict, checkpoints and exports hold, stay as they are."""
        kind = x.device.type
        if self.mode != "frozen" or not torch.is_autocast_enabled(kind):
            return self.backbone
        tensors = [*self.backbone.parameters(), *self.backbone.buffers()]
        key = (torch.get_autocast_dtype(kind), x.device, sum(t._version for t in tensors))
        if self.low_precision is None or self.low_precision[0] != key:
            self.low_precision = key, cast_for_autocast(self.backbone, key[0])
        return self.low_precision[1]

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
        feats = backbones.features(self._backbone_for(x), x, self.out_indices)
        return self.projection(feats) if self.projection is not None else feats

    @property
    def fixed_features(self) -> bool:
        """True when :meth:`features` has no trained weight (frozen backbone; projections never train), so the
        features of an image stay valid across D's updates: the loop computes the fakes' features once for the
        D step and the G step."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    def forward(self, x: torch.Tensor, feats: list[torch.Tensor] | None = None,
                labels: torch.Tensor | None = None) -> Judgement:
        """Logit maps for ``x``, and the pixel D's (B, K) class logits when it has a class head
        (``pixel_classes``); ``feats``: ``self.features(x)`` computed by the caller (see :attr:`fixed_features`),
        so that the backbone is not run again; ``labels`` (B,): each image's class, which a conditional D judges
        it as (and needs)."""
        feats = self.features(x) if feats is None else feats
        if self.projects is None:
            logits = [h(f) for h, f in zip(self.heads, feats, strict=True)]
        else:
            logits = []
            for h, project, f in zip(self.heads, self.projects, feats, strict=True):
                inner = h[:-1](f)
                logits.append(h[-1](inner) + class_term(project(inner), labels))
        if self.pixel is None:
            return Judgement(logits)
        pixel = self.pixel(x, labels=labels)
        return Judgement(logits + [pixel.logits.view(-1, 1, 1, 1) * self.pixel_weight], pixel.classes)
