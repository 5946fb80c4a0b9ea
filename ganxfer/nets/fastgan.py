"""Projected GAN's generator: FastGAN-lite (Liu et al., 2021; Sauer et al., 2021) at 64, 128 or 256 pixels.

z is projected onto the sphere (each latent divided by its root mean square), a spectral-normalised transposed
conv makes a 4x4 map, and each :func:`up_block` doubles the side: nearest upsampling, a spectral-normalised 3x3
conv, BatchNorm and a GLU. Skip-layer excitation (:class:`SkipExcitation`) gates the 64, 128 and 256 px features
channel-wise by the 4, 8 and 16 px ones, and a spectral-normalised 3x3 conv and a tanh make the image. The
widths per side are Projected GAN's ``nfc``: 16 ngf at 4 px, 8 ngf at 8, 4 ngf at 16, 2 ngf at 32 and 64, ngf at
128 and ngf / 2 at 256.

State-dict keys: ``blocks.0`` (the 4x4 layer), ``blocks.1`` ... (one per doubling), ``skips.<side>`` and
``to_rgb``; each spectral-normalised conv under ``parametrizations.weight``.
"""

from __future__ import annotations

import math

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganxfer.nets.dcgan import DCGANGenerator

RESOLUTIONS = (64, 128, 256)
WIDTHS = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5}  # channels at each side, in units of ngf
SKIPS = {64: 4, 128: 8, 256: 16}  # output side -> the side whose features gate it


def sn_conv(*args, **kwargs) -> nn.Module:
    return spectral_norm(nn.Conv2d(*args, **kwargs))


def init_layer(latent_dim: int, width: int) -> nn.Sequential:
    """z (B, latent_dim) -> (B, width, 4, 4): a spectral-normalised 4x4 transposed conv, BatchNorm and a GLU."""
    return nn.Sequential(nn.Unflatten(1, (latent_dim, 1, 1)),
                         spectral_norm(nn.ConvTranspose2d(latent_dim, 2 * width, 4, 1, 0, bias=False)),
                         nn.BatchNorm2d(2 * width), nn.GLU(1))


def up_block(cin: int, cout: int) -> nn.Sequential:
    """FastGAN's UpBlockSmall (the lite block): nearest 2x upsampling, a spectral-normalised 3x3 conv to
    ``2 * cout`` channels, BatchNorm and a GLU, which halves them to ``cout``."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), sn_conv(cin, 2 * cout, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(2 * cout), nn.GLU(1))


class SkipExcitation(nn.Module):
    """FastGAN's skip-layer excitation: a large feature map scaled channel-wise by gates in (0, 1) that a small
    one computes (pooled to 4x4, a 4x4 conv, SiLU, a 1x1 conv and a sigmoid; both convs spectral-normalised)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(4), sn_conv(cin, cout, 4, 1, 0, bias=False), nn.SiLU(),
                                  sn_conv(cout, cout, 1, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, small: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
        return big * self.gate(small)


def widths(ngf: int) -> dict[int, int]:
    """The channels at each side for ``ngf`` (Projected GAN's ``nfc``)."""
    return {side: int(m * ngf) for side, m in WIDTHS.items()}


class FastGANGenerator(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="ganxfer",
):
    """z (B, latent_dim) -> image (B, channels, resolution, resolution) in [-1, 1].

    Args:
        resolution: output side, 64, 128 or 256.
        channels: 1 (grayscale) or 3 (RGB).
        ngf: width at 128 px; the other sides are multiples of it (see the module docstring). Projected GAN
            uses 128, the original FastGAN 64.
        latent_dim: size of z (Projected GAN's 256).
    """

    kind = "fastgan"
    resolutions = RESOLUTIONS  # recipe.check refuses any other data.resolution
    classes: list[str] = []  # a class-conditional run's class names, in code order (set at export and load)

    def __init__(self, resolution: int = 64, channels: int = 3, ngf: int = 128, latent_dim: int = 256) -> None:
        super().__init__()
        if resolution not in RESOLUTIONS:
            raise ValueError(f"FastGAN resolution {resolution} is not supported; use one of {RESOLUTIONS}")
        if ngf < 2:
            raise ValueError(f"FastGAN ngf={ngf} leaves no channels at 256 px; use 2 or more")
        self.resolution, self.channels, self.latent_dim, self.ngf = resolution, channels, latent_dim, ngf
        nfc = widths(ngf)
        sides = [4 * 2**i for i in range(int(math.log2(resolution)) - 1)]  # 4, 8, ..., resolution
        self.blocks = nn.ModuleList([init_layer(latent_dim, nfc[4])]
                                    + [up_block(nfc[s // 2], nfc[s]) for s in sides[1:]])
        self.skips = nn.ModuleDict({str(big): SkipExcitation(nfc[small], nfc[big])
                                    for big, small in SKIPS.items() if big <= resolution})
        self.to_rgb = sn_conv(nfc[resolution], channels, 3, 1, 1, bias=True)

    def forward(self, z: torch.Tensor, with_pre_tanh: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images for ``z``; with ``with_pre_tanh``, also the output layer's values before the tanh (what
        :func:`ganxfer.losses.saturation` reads)."""
        x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()  # onto the sphere of radius sqrt(latent_dim)
        gates: dict[int, torch.Tensor] = {}  # the 4, 8 and 16 px features that gate the larger sides
        side = 2
        for block in self.blocks:
            x, side = block(x), side * 2
            if str(side) in self.skips:
                x = self.skips[str(side)](gates[SKIPS[side]], x)
            if side in SKIPS.values():
                gates[side] = x
        pre = self.to_rgb(x)
        return (torch.tanh(pre), pre) if with_pre_tanh else torch.tanh(pre)

    # Sampling is the DCGAN generator's: the same latents for a seed, in chunks, with the same class codes, so
    # `ganxfer sample`, the demo and evaluation treat every generator alike.
    sample = DCGANGenerator.sample
    iter_samples = DCGANGenerator.iter_samples
    of_class = DCGANGenerator.of_class
    sample_z = DCGANGenerator.sample_z
