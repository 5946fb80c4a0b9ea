"""What every registered network shares: the constructor arguments the Hub mixin records, which config.json holds,
what a discriminator returns (:class:`Judgement`), and how a training step holds spectral norm's estimate
(:func:`spectral_norm_held`).

``PyTorchModelHubMixin`` keeps them in the private ``_hub_mixin_config``; :func:`hub_config` is the one place
that reads or edits it, so a change of the mixin touches one function.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.parametrizations import _SpectralNorm


class Judgement(NamedTuple):
    """What every discriminator's ``forward`` returns: its real/fake ``logits`` (a tensor, or a list of logit
    maps for a multi-scale D) and, when it has a class head, that head's (B, K) ``classes`` logits (else None)."""

    logits: torch.Tensor | list[torch.Tensor]
    classes: torch.Tensor | None = None


def hub_config(model: nn.Module) -> dict:
    """The live dict of ``model``'s recorded constructor arguments (empty for a network built without the mixin)."""
    config = getattr(model, "_hub_mixin_config", None)
    if not isinstance(config, dict):  # no mixin, or one that records a dataclass: nothing to rebuild from
        config = {}
        model._hub_mixin_config = config
    return config


def spectral_norms(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Each (module, tensor name) of ``model`` that torch's ``parametrizations.spectral_norm`` normalises."""
    return [(m, name) for m in model.modules() if "parametrizations" in m._modules  # parametrize.is_parametrized,
            for name, chain in m.parametrizations.items()  # without an AttributeError for every other module
            if any(isinstance(p, _SpectralNorm) for p in chain)]


@contextmanager
def spectral_norm_held(model: nn.Module, advance: bool = False,
                       found: list[tuple[nn.Module, str]] | None = None) -> Iterator[None]:
    """Spectral norm's estimate of each weight's largest singular value (its ``u`` and ``v``) stays put inside
    the block: the power iteration that torch runs on every train-mode forward is off, and the normalised weight
    reads the estimate as it is. With ``advance``, one power iteration runs on entering (in train mode only, as a
    train-mode forward would run it), so every forward of a D step divides by the same estimate, advanced once
    per step; without it (the G step) the estimate does not move."""
    found = spectral_norms(model) if found is None else found  # a training step passes them, found once
    norms = [p for m, name in found for p in m.parametrizations[name] if isinstance(p, _SpectralNorm)]
    if advance:
        with torch.no_grad():
            for m, name in found:
                if any(p.training for p in m.parametrizations[name] if isinstance(p, _SpectralNorm)):
                    getattr(m, name)  # a train-mode read of the weight runs the power iteration
    modes = [p.training for p in norms]
    for p in norms:
        p.train(False)
    try:
        yield
    finally:
        for p, mode in zip(norms, modes, strict=True):
            p.train(mode)
