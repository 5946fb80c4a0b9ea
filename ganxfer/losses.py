"""GAN losses on discriminator logits.

A discriminator's logits (``Judgement.logits``) are one tensor or a list of them (one per scale for projected
heads); every loss averages each tensor and sums over the list, so single- and multi-scale discriminators share
the code. :mod:`ganxfer.objective` puts these together into the D and G losses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Logits = torch.Tensor | list[torch.Tensor]


def _sum(logits: Logits, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    parts = logits if isinstance(logits, (list, tuple)) else [logits]
    return sum(fn(p.float()).mean() for p in parts)


def d_loss(kind: str, real: Logits, fake: Logits) -> torch.Tensor:
    """Discriminator loss: real should score high, fake low."""
    if kind == "bce":  # -log sigmoid(real) - log(1 - sigmoid(fake))
        return _sum(real, lambda x: F.softplus(-x)) + _sum(fake, F.softplus)
    if kind == "hinge":
        return _sum(real, lambda x: F.relu(1 - x)) + _sum(fake, lambda x: F.relu(1 + x))
    raise ValueError(f"unknown loss {kind!r}; use bce or hinge")


def g_loss(kind: str, fake: Logits) -> torch.Tensor:
    """Generator loss: non-saturating BCE (-log sigmoid(fake)) or hinge (-fake)."""
    if kind == "bce":
        return _sum(fake, lambda x: F.softplus(-x))
    if kind == "hinge":
        return _sum(fake, lambda x: -x)
    raise ValueError(f"unknown loss {kind!r}; use bce or hinge")


def mode_seeking(fake: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mode-seeking term (MSGAN, Mao et al. 2019), to add to the generator loss: ``1 / (d_img / d_z)``, where
    the batch's first half is paired with its second half and ``d`` is the mean absolute difference.

    It grows when distinct latents draw near-identical images (partial mode collapse), so minimising it pushes
    the generator to keep its latents apart in image space. An odd last image is left out.
    """
    half = fake.shape[0] // 2
    if half == 0:
        raise ValueError("the mode-seeking term needs at least 2 images per batch")
    d_img = (fake[:half].float() - fake[half:2 * half].float()).abs().mean()
    d_z = (z[:half].float() - z[half:2 * half].float()).abs().mean()
    return 1 / (d_img / d_z + eps)


SATURATION_EDGE = 3.0  # tanh(3) = 0.995, where the tanh passes 1% of the gradient


def saturation(pre_tanh: torch.Tensor, edge: float = SATURATION_EDGE) -> torch.Tensor:
    """Saturation penalty, to add to the generator loss: the mean over pixels of ``relu(|pre| - edge)^2``, where
    ``pre`` is the output layer's value before its tanh.

    Beyond about 3 the tanh passes D's gradient on at under 1%, so a pixel driven there stays black (or white)
    whatever D says: the dark blotches of a generator warm-started from MNIST's black background. The term is
    zero for a pixel inside ``[-edge, edge]`` and pulls a dead one back in proportion to how far out it is.
    """
    return F.relu(pre_tanh.float().abs() - edge).square().mean()


def fine_detail(images: torch.Tensor, size: int) -> torch.Tensor:
    """Fine-detail penalty, to add to the generator loss: the mean square of ``images`` minus their copy area-averaged
    to ``size`` and bilinearly upsampled back, i.e. the detail a D judging ``size`` px cannot see.

    Real MNIST digits are 28 px images upsampled to 64, so they carry almost none of it (0.004 per pixel against
    0.028 for a generator trained against a 32 px D, whose strokes carry a dotted texture). The term asks the
    generator to leave that band empty, as the data does, while the D shapes what lies below it.
    """
    coarse = F.interpolate(images.float(), size=(size, size), mode="area")
    coarse = F.interpolate(coarse, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return (images.float() - coarse).square().mean()


def cluster_loss(class_logits: torch.Tensor) -> torch.Tensor:
    """Regularised information maximisation (Krause et al. 2010; CatGAN's real-data term, Springenberg 2016):
    the mean entropy of each image's class distribution minus the entropy of the batch's mean distribution.
    Minimising it makes every image's class confident and the classes equally used: a clustering of the images.
    """
    p = class_logits.float().softmax(1)
    log_p = class_logits.float().log_softmax(1)
    mean = p.mean(0)
    return -(p * log_p).sum(1).mean() + (mean * mean.clamp_min(1e-12).log()).sum()


def scores(logits: Logits, batch: int) -> torch.Tensor:
    """One score per image, (B,): each logit map averaged over its positions, summed over maps.

    This is the reduction the losses apply, so a multi-scale D's score plays the role of a single-logit D's.
    """
    parts = logits if isinstance(logits, (list, tuple)) else [logits]
    return sum(p.float().reshape(batch, -1).mean(1) for p in parts)


def top_k(logits: Logits, batch: int, k: int) -> Logits:
    """The logits of the ``k`` fakes that D scores as most real, for the G loss (Top-k training, Sinha et al.
    2020, as in StudioGAN): the worst fakes' gradients, which dominate a non-saturating loss, are dropped.

    Images are ranked by :func:`scores`, so every map of a multi-scale D keeps the same images.
    """
    if k >= batch:
        return logits
    keep = scores(logits, batch).topk(k).indices
    return [p[keep] for p in logits] if isinstance(logits, (list, tuple)) else logits[keep]


def top_k_fraction(kimg: float, final: float, ramp_kimg: float) -> float:
    """The share of fakes :func:`top_k` keeps after ``kimg``: 1 falling linearly to ``final`` over ``ramp_kimg``
    (at once when ``ramp_kimg`` is 0)."""
    if ramp_kimg <= 0:
        return final
    return 1 - (1 - final) * min(kimg / ramp_kimg, 1.0)


def r1_penalty(real: torch.Tensor, logits: Logits) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): mean over images of |d score / d image|^2, with :func:`scores`.

    Differentiating the per-image score (not the sum of every logit) keeps ``loss.r1_gamma`` on the scale of the
    literature for every discriminator: for a D with one logit per image the two are identical, while a
    projected D's ~150 logits per image would otherwise make a given gamma ~10^3 times stronger.
    ``real`` must have ``requires_grad`` set before D was run on it.
    """
    total = scores(logits, real.shape[0]).sum()
    (grad,) = torch.autograd.grad(total, real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()
