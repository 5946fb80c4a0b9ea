"""DCGAN generator and discriminator (Radford et al., 2016) at 32, 64 or 128 pixels.

Both are stacks of ``blocks`` (a ModuleList, so transfer can freeze the first K) plus an output layer.
Their constructor keyword arguments are the whole config: ``config.json`` rebuilds the exact network.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ganxfer.nets.base import Judgement

RESOLUTIONS = (32, 64, 128)
NORMS = ("batch", "spectral", "none")  # DCGANDiscriminator(norm=...)


def _check_resolution(resolution: int) -> int:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"DCGAN resolution {resolution} is not supported; use one of {RESOLUTIONS}")
    return int(math.log2(resolution)) - 2  # number of 2x steps between 4x4 and the image


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) and zero bias."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def identity_upsample_(conv: nn.ConvTranspose2d) -> None:
    """Make a ConvTranspose2d(C, C, 4, 2, 1) an exact nearest-neighbour 2x upsampling."""
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(conv.in_channels):
            conv.weight[c, c, 1:3, 1:3] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()


def class_term(maps: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The projection term of a conditional D: from per-class logit maps (B, K, H, W), each image's own class's
    map (B, 1, H, W)."""
    if labels is None:
        raise ValueError("this discriminator is class-conditional: pass each image's labels")
    index = labels.view(-1, 1, 1, 1).expand(-1, 1, *maps.shape[2:])
    return maps.gather(1, index)


class SkipExcitation(nn.Module):
    """FastGAN's skip-layer excitation: per-channel gates on a late feature map, read from an early one:
    ``late * 2 sigmoid(g(early))``. The last conv of ``g`` starts at zero, so the gates start at exactly 1."""

    def __init__(self, early: int, late: int):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Conv2d(early, late, 4, bias=False), nn.SiLU(),
                                  nn.Conv2d(late, late, 1, bias=False))

    def forward(self, late: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
        return late * (2 * torch.sigmoid(self.gate(early)))


class DCGANGenerator(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="ganxfer",
):
    """z (B, latent_dim) -> image (B, channels, resolution, resolution) in [-1, 1].

    Args:
        resolution: output side, 32, 64 or 128.
        channels: 1 (grayscale) or 3 (RGB).
        ngf: width of the last hidden block; earlier blocks are 2x, 4x, ... wider.
        latent_dim: size of z.
        grow: extra ngf->ngf upsampling blocks appended after a generator built for
            ``resolution / 2**grow`` (how a transferred 32px generator becomes a 64px one).
        excitation: FastGAN's skip-layer excitation (:class:`SkipExcitation`): the 4x4 block's features gate the
            channels of the last hidden block; the gates start at exactly 1.
    """

    kind = "dcgan"
    resolutions = RESOLUTIONS  # recipe.check refuses any other data.resolution
    classes: list[str] = []  # a class-conditional run's class names, in code order (set at export and load)
    channel_tensors = {"to_rgb.weight": (1, "output")}  # what transfer may adapt between 1 and 3 channels

    def __init__(self, resolution: int = 64, channels: int = 3, ngf: int = 64, latent_dim: int = 100,
                 grow: int = 0, excitation: bool = False) -> None:
        super().__init__()
        self.resolution, self.channels, self.latent_dim = resolution, channels, latent_dim
        self.ngf, self.grow, self.excitation = ngf, grow, excitation
        n_up = _check_resolution(resolution) - grow
        if n_up < 2:
            raise ValueError(f"grow={grow} leaves too few blocks for resolution {resolution}")
        widths = [ngf * 2 ** (n_up - 1 - i) for i in range(n_up)]
        blocks = [self._block(latent_dim, widths[0], stride=1, padding=0)]
        blocks += [self._block(widths[i - 1], widths[i]) for i in range(1, n_up)]
        blocks += [self._block(ngf, ngf) for _ in range(grow)]
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=False)
        if excitation:
            self.excite = SkipExcitation(widths[0], ngf)
        dcgan_init(self)
        if excitation:
            nn.init.zeros_(self.excite.gate[-1].weight)
        for block in self.blocks[len(self.blocks) - grow:]:  # grown blocks start as near-identity
            identity_upsample_(block[0])
            nn.init.ones_(block[1].weight)

    @staticmethod
    def _block(cin: int, cout: int, stride: int = 2, padding: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride, padding, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(True))

    @torch.no_grad()
    def widen(self, ngf: int, seed: int = 0, split_noise: float = 0.5) -> DCGANGenerator:
        """A copy ``ngf`` wide that draws the same images (Net2WiderNet, Chen et al., 2016).

        New channel j of a hidden block copies channel j mod C (its weights and BatchNorm, statistics included).
        The layer that reads the copies splits each weight among them in random proportions (``split_noise``:
        each share drawn from 1 +- that, then normalised to sum to one), so the output is unchanged in train and
        eval mode while the copies get different gradients and can drift apart. ``seed`` fixes the proportions.
        """
        if ngf < self.ngf:
            raise ValueError(f"widen: ngf={ngf} is narrower than this generator's {self.ngf}")
        if self.excitation:
            raise ValueError("widen: a generator with skip-layer excitation cannot be widened; keep its ngf")
        wide = type(self)(self.resolution, self.channels, ngf, self.latent_dim, self.grow).to(self.to_rgb.weight)
        rng = torch.Generator().manual_seed(seed)
        read = None  # for each input channel of the current layer, the source channel it copies
        for old, new in zip([*self.blocks, self.to_rgb], [*wide.blocks, wide.to_rgb], strict=True):
            old_conv, new_conv = (old[0], new[0]) if isinstance(old, nn.Sequential) else (old, new)
            copies = torch.arange(new_conv.out_channels) % old_conv.out_channels
            w = old_conv.weight[:, copies]
            if read is not None:
                w = w[read]
                share = 1 + split_noise * (2 * torch.rand(w.shape, generator=rng) - 1)
                total = torch.zeros(old_conv.in_channels, *w.shape[1:]).index_add_(0, read, share)
                w = w * (share / total[read]).to(w)
            new_conv.weight.copy_(w)
            if isinstance(old, nn.Sequential):
                for name, t in old[1].state_dict().items():
                    new[1].state_dict()[name].copy_(t if t.ndim == 0 else t[copies])
            read = copies
        return wide

    def forward(self, z: torch.Tensor, with_pre_tanh: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images for ``z``; with ``with_pre_tanh``, also the output layer's values before the tanh (what
        :func:`ganxfer.losses.saturation` reads)."""
        x = early = self.blocks[0](z.view(z.shape[0], -1, 1, 1))  # the 4x4 features the excitation reads
        for block in self.blocks[1:]:
            x = block(x)
        if self.excitation:
            x = self.excite(x, early)
        pre = self.to_rgb(x)
        return (torch.tanh(pre), pre) if with_pre_tanh else torch.tanh(pre)

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None, batch_size: int = 256,
               device: torch.device | str | None = None, label: int | None = None) -> torch.Tensor:
        """``n`` images (n, C, H, W) in [-1, 1], in eval mode, in the model's dtype.

        ``seed``: z is drawn on the CPU from this seed, so the images do not depend on the device; None draws
        fresh noise from torch's global generator. ``device``: where to generate (the model moves there);
        the images are returned on it. Default: where the model is. ``label``: for a class-conditional run's
        generator, only images of that class (an index into ``classes``).
        """
        if n < 0:
            raise ValueError(f"sample: n={n} must be 0 or more")
        param = next(self.parameters())
        if device is not None:
            self.to(device)
            param = next(self.parameters())
        if n == 0:
            return torch.empty(0, self.channels, self.resolution, self.resolution, dtype=param.dtype,
                               device=param.device)
        rng = torch.Generator().manual_seed(seed) if seed is not None else None
        z = torch.randn(n, self.latent_dim, generator=rng)
        z = z if label is None else self.of_class(z, label)
        return torch.cat([self.sample_z(zb) for zb in z.split(batch_size)])

    @torch.no_grad()
    def iter_samples(self, n: int, seed: int, chunk: int = 256, label: int | None = None) -> Iterator[torch.Tensor]:
        """The images of ``sample(n, seed=seed)``, ``chunk`` at a time, so memory stays bounded for any ``n``.

        z is drawn in chunks of a multiple of 16 rows, which gives exactly the values of one draw of ``n``
        (torch's CPU normal sampler fills 16 values at a time).
        """
        if chunk % 16:
            raise ValueError(f"iter_samples: chunk={chunk} must be a multiple of 16")
        rng = torch.Generator().manual_seed(seed)
        for start in range(0, n, chunk):
            z = torch.randn(min(chunk, n - start), self.latent_dim, generator=rng)
            yield self.sample_z(z if label is None else self.of_class(z, label))

    def of_class(self, z: torch.Tensor, label: int) -> torch.Tensor:
        """``z`` turned into latents of class ``label`` of a class-conditional run (its ``classes``): in each row
        the largest of the first K entries, which picks the class, swaps places with entry ``label``. Since those
        K entries are independent normals, this draws exactly from z ~ N(0, I) given that class."""
        k = len(self.classes)
        if not 0 <= label < k:
            raise ValueError(f"label {label}: this generator has {k} classes")
        z = z.clone()
        rows, top = torch.arange(len(z)), z[:, :k].argmax(1)
        largest, there = z[rows, top].clone(), z[rows, label].clone()
        z[rows, label], z[rows, top] = largest, there
        return z

    def sample_z(self, z: torch.Tensor) -> torch.Tensor:
        """Images for latents ``z`` (on the CPU is fine), in eval mode, on the model's device and dtype."""
        param = next(self.parameters())
        was_training = self.training
        self.eval()
        with torch.no_grad():
            out = self(z.to(param.device, param.dtype))
        self.train(was_training)
        return out


class DCGANDiscriminator(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="ganxfer",
):
    """image (B, channels, resolution, resolution) in [-1, 1] -> a :class:`Judgement`: one logit per image (B,).

    Args:
        resolution: input side, 32, 64 or 128.
        channels: 1 or 3.
        ndf: width of the first block; each later block doubles it.
        norm: ``batch``, the tutorial's BatchNorm after every conv but the first, or ``spectral``:
            spectral-normalised convs and no BatchNorm (SNGAN's discriminator), or ``none``: plain convs
            (the unnormalised D that R1 regularises in Mescheder et al. 2018 and StyleGAN2). Without BatchNorm
            each image is judged on its own; in training, a BatchNorm D judges an image relative to its batch,
            and the loop passes it reals and fakes as separate batches.
        classes: K > 0 adds InfoGAN's Q head (Chen et al. 2016): K logits per image, read from the last block's
            features that the real/fake logit is read from, and returned as ``forward(x).classes``.
        input_size: judge the images resized to this side (32, 64 or 128; default ``resolution``): area
            averaging down, bilinear up. A smaller side shows D the shapes without the finest texture.
        conditional: K > 0 makes D class-conditional, a projection discriminator (Miyato & Koyama 2018): the
            logit of an image of class y adds a class-y 4x4 conv of the last block's features, and
            ``forward`` then needs ``labels``.
    """

    kind = "dcgan"
    resolutions = RESOLUTIONS
    channel_tensors = {"blocks.0.0.weight": (1, "input")}

    def __init__(self, resolution: int = 64, channels: int = 3, ndf: int = 64, norm: str = "batch",
                 classes: int = 0, input_size: int | None = None, conditional: int = 0) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"DCGAN discriminator norm {norm!r} is unknown; use one of {', '.join(NORMS)}")
        self.input_size = input_size
        n_down = _check_resolution(input_size or resolution)
        widths = [ndf * 2**i for i in range(n_down)]
        blocks = [nn.Sequential(nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True))]
        for i in range(1, n_down):
            norm_layer = nn.BatchNorm2d(widths[i]) if norm == "batch" else nn.Identity()
            blocks.append(nn.Sequential(nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=False),
                                        norm_layer, nn.LeakyReLU(0.2, True)))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)
        self.classes = classes
        if classes:
            self.classify = nn.Conv2d(widths[-1], classes, 4, 1, 0)
        self.conditional = conditional
        if conditional:
            self.project = nn.Conv2d(widths[-1], conditional, 4, 1, 0, bias=False)
        dcgan_init(self)
        if norm == "spectral":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> Judgement:
        """Logits (B,), and the class head's (B, K) class logits when it has one. ``labels`` (B,): each image's
        class, which a conditional D judges it as (and needs)."""
        side = self.input_size
        if side and x.shape[-1] != side:
            x = F.interpolate(x, size=(side, side), mode="area" if side < x.shape[-1] else "bilinear")
        for block in self.blocks:
            x = block(x)
        logits = self.head(x).flatten()
        if self.conditional:
            logits = logits + class_term(self.project(x), labels).flatten()
        return Judgement(logits, self.classify(x).flatten(1) if self.classes else None)
