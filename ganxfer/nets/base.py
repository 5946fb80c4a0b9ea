"""What every registered network shares: the constructor arguments the Hub mixin records, which config.json holds.

``PyTorchModelHubMixin`` keeps them in the private ``_hub_mixin_config``; :func:`hub_config` is the one place
that reads or edits it, so a change of the mixin touches one function.
"""

from __future__ import annotations

from torch import nn


def hub_config(model: nn.Module) -> dict:
    """The live dict of ``model``'s recorded constructor arguments (empty for a network built without the mixin)."""
    config = getattr(model, "_hub_mixin_config", None)
    if not isinstance(config, dict):  # no mixin, or one that records a dataclass: nothing to rebuild from
        config = {}
        model._hub_mixin_config = config
    return config
