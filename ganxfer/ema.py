"""The generator that is sampled, scored and exported: an EMA of the weights, with its own BatchNorm statistics.

An EMA generator averages weights, but its BatchNorm running statistics would be the live generator's, which
belong to other weights: eval-mode samples then drift from what the averaged weights draw. Before every sample
grid, evaluation and export the loop therefore takes :func:`recalibrated`, a copy whose statistics are
recomputed from a few batches of its own outputs (cumulative average, train mode), as StyleGAN-era code bases
and SWA's ``update_bn`` do. The copy has its own random generator, so training and exact resume are untouched.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def ema_decay(step: int, beta: float) -> float:
    """The decay at ``step`` (updates so far): ``beta`` with the usual warm-up, so short runs do not export an
    average dominated by the init (a half-life of about 0.077 of the steps until ``beta`` caps it)."""
    return min(beta, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, step: int, beta: float) -> None:
    """One EMA update with :func:`ema_decay`.

    Buffers (BatchNorm statistics) are copied; :func:`recalibrated` replaces them before the EMA is used.
    """
    beta = ema_decay(step, beta)
    ours, theirs = list(ema.parameters()), [p.detach().to(pe.dtype) for pe, p in
                                            zip(ema.parameters(), model.parameters(), strict=True)]
    torch._foreach_lerp_(ours, theirs, 1 - beta)  # one fused launch per step on a GPU, not one per tensor
    buffers = list(ema.buffers())
    if buffers:
        torch._foreach_copy_(buffers, list(model.buffers()))


def batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrated(generator: nn.Module, batches: int = 16, batch_size: int = 64, seed: int = 0) -> nn.Module:
    """A copy of ``generator`` (eval mode) whose BatchNorm running statistics are the exact average over
    ``batches`` batches of ``batch_size`` latents drawn with ``seed``; ``generator`` itself is not touched.

    With no BatchNorm, or ``batches`` 0, the copy keeps the statistics it had.
    """
    copied = copy.deepcopy(generator)
    if batches <= 0 or not batchnorms(copied):
        return copied.eval()
    norms = batchnorms(copied)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    copied.train()
    device = next(copied.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        copied(torch.randn(batch_size, copied.latent_dim, generator=rng).to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return copied.eval()
