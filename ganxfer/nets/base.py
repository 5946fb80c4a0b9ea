"""What every registered network shares: the constructor arguments the Hub mixin records, which config.json holds,
and what a discriminator returns (:class:`Judgement`).

``PyTorchModelHubMixin`` keeps them in the private ``_hub_mixin_config``; :func:`hub_config` is the one place
that reads or edits it, so a change of the mixin touches one function.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


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
