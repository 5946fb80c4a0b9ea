"""timm backbones for discriminators: creation, offline weights, input normalisation and freezing modes.

A backbone is built with ``timm.create_model(name, features_only=True, feature_cls="getter", out_indices=...)``,
the feature wrapper timm uses for vision transformers, for every architecture. We keep the wrapped (pruned)
timm model itself, so its ``state_dict`` keys are timm's own and match the pretrained weight files, and call
its ``forward_intermediates`` exactly as that wrapper does: NCHW maps for CNNs, and for ViTs the tokens of
the chosen blocks reshaped to maps.

Stages are the backbone's feature levels (``model.feature_info``): stage ``i`` holds every module up to and
including the module of level ``i``. ``partial`` mode trains stages ``trainable_from`` and later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from timm.models import get_pretrained_cfg, split_model_name_tag
from torch import nn

from ganxfer.cache import hub_cache, hub_offline
from ganxfer.errors import GanxferError, WeightsError

MODES = ("frozen", "finetune", "partial")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for on the Hub, in its order


class BackboneError(GanxferError, ValueError):
    """A backbone that cannot be built as asked (unknown name, bad indices or mode)."""


@dataclass(frozen=True)
class Known:
    """A backbone verified with ganxfer: its default feature levels and extra ``create_model`` arguments."""

    out_indices: tuple[int, ...]
    kwargs: dict = field(default_factory=dict)


_VIT = Known((2, 5, 8, 11), {"dynamic_img_size": True})  # any input side; 64 px gives 4x4 token maps
# Architecture name -> defaults. CNNs skip the stride-2 level, like Projected GAN's four lite0 levels.
KNOWN: dict[str, Known] = {
    "tf_efficientnet_lite0": Known((1, 2, 3, 4)),
    "tf_efficientnet_lite1": Known((1, 2, 3, 4)),
    "efficientnet_b0": Known((1, 2, 3, 4)),
    "resnet18": Known((1, 2, 3, 4)),
    "resnet50": Known((1, 2, 3, 4)),
    "convnext_atto": Known((0, 1, 2, 3)),
    "convnext_tiny": Known((0, 1, 2, 3)),
    "vit_tiny_patch16_224": _VIT,
    "deit_tiny_patch16_224": _VIT,
}


def known(name: str) -> Known | None:
    return KNOWN.get(split_model_name_tag(name)[0])


# --- offline weights ------------------------------------------------------------------------------------


def weights_repo(name: str) -> str | None:
    """The Hub repo (``timm/<arch>.<tag>``) timm loads ``name``'s pretrained weights from, if any."""
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as e:  # a bad tag
        raise BackboneError(f"discriminator.backbone '{name}': {e}") from None
    return cfg.hf_hub_id if cfg is not None else None


def cached_weights(name: str) -> Path | None:
    """The cached weight file of ``name`` in the Hub cache, or None (no network is touched)."""
    repo = weights_repo(name)
    if not repo:
        return None
    repo_id, _, revision = repo.partition("@")
    for filename in WEIGHT_FILES:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache(), revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    return None


def _how_to_get(name: str, repo: str | None) -> str:
    get = f"fetch them with 'hf download {repo}' where the Hub is reachable and point HF_HUB_CACHE at that " \
          "cache, or " if repo else ""
    return f"{get}set discriminator.pretrained_file=PATH.safetensors or discriminator.pretrained=false"


def check_weights(name: str) -> None:
    """Raise :class:`WeightsError` (one line) unless ``name``'s weights are cached or the Hub may be asked."""
    repo = weights_repo(name)
    if repo is None:
        raise WeightsError(f"timm has no pretrained weights for backbone '{name}'; "
                           "set discriminator.pretrained=false or discriminator.pretrained_file=PATH.safetensors")
    if cached_weights(name) is None and hub_offline():
        raise WeightsError(f"pretrained weights of backbone '{name}' ({repo}) are not in the Hugging Face cache "
                           f"{hub_cache()} and the Hub is offline (HF_HUB_OFFLINE=1): {_how_to_get(name, repo)}")


# --- creation --------------------------------------------------------------------------------------------


def create(name: str, pretrained: bool = False, pretrained_file: str | None = None,
           out_indices: list[int] | None = None) -> tuple[nn.Module, list[int]]:
    """Build a timm backbone; return the (pruned) timm model and its normalised feature indices.

    ``pretrained_file`` (a local ``.safetensors`` in timm's key names) takes precedence over the Hub cache.
    """
    if not timm.is_model(name):
        raise BackboneError(f"discriminator.backbone '{name}' is not a timm model; see 'ganxfer backbones'")
    spec = known(name)
    indices = out_indices if out_indices is not None else (spec.out_indices if spec else None)
    kwargs = dict(spec.kwargs if spec else {}, features_only=True, feature_cls="getter")
    if indices is not None:
        kwargs["out_indices"] = tuple(indices)
    overlay = None
    if pretrained_file:
        path = Path(pretrained_file).expanduser()
        if path.suffix != ".safetensors" or not path.is_file():
            raise WeightsError(f"discriminator.pretrained_file {pretrained_file} is not a .safetensors file")
        overlay, pretrained = {"file": str(path)}, True
    elif pretrained:
        check_weights(name)
    try:
        net = timm.create_model(name, pretrained=pretrained, pretrained_cfg_overlay=overlay,
                                cache_dir=hub_cache(), **kwargs)
    except Exception as e:
        error = _explain(e, name, indices, pretrained, pretrained_file)
        if error is None:
            raise
        raise error from None
    if not hasattr(net.model, "forward_intermediates"):
        raise BackboneError(f"backbone '{name}' has no forward_intermediates in timm {timm.__version__}; "
                            "see 'ganxfer backbones'")
    return net.model, list(net.out_indices)


def _explain(e: Exception, name: str, indices, pretrained: bool, pretrained_file: str | None) -> Exception | None:
    """A one-line error for a failed ``create_model``, or None when it is not the user's to fix."""
    if pretrained_file and isinstance(e, RuntimeError):
        return WeightsError(f"{pretrained_file} does not hold {name} weights: {str(e).splitlines()[0][:200]}")
    if isinstance(e, (IndexError, AssertionError)):
        return BackboneError(f"discriminator.out_indices {list(indices or [])} do not fit backbone '{name}': {e}")
    if pretrained and not pretrained_file and cached_weights(name) is None:  # the Hub was asked and failed
        return WeightsError(f"could not download the weights of backbone '{name}' ({type(e).__name__}): "
                            f"{_how_to_get(name, weights_repo(name))}")
    return None


def features(model: nn.Module, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
    """NCHW feature maps at ``indices``: the call timm's ``features_only`` getter wrapper makes."""
    return model.forward_intermediates(x, indices=indices, norm=False, output_fmt="NCHW", intermediates_only=True)


def mean_std(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's own input mean and std from its pretrained config, shaped (1, 3, 1, 1)."""
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN), dtype=torch.float32)
    std = torch.tensor(cfg.get("std", timm.data.IMAGENET_DEFAULT_STD), dtype=torch.float32)
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def native_size(model: nn.Module) -> int | None:
    """The side a fixed-size backbone (a ViT without dynamic image size) needs, else None."""
    cfg = model.pretrained_cfg
    if cfg.get("fixed_input_size") and not getattr(model, "dynamic_img_size", False):
        return int(cfg["input_size"][-1])
    return None


def feature_levels(model: nn.Module) -> list[dict]:
    """Every feature level of the full architecture (``feature_info``): module, num_chs, reduction."""
    info = model.feature_info
    return list(getattr(info, "info", info))


# --- stages and freezing ---------------------------------------------------------------------------------


class Stages:
    """Which feature stage each module and parameter of a backbone belongs to, by module order."""

    def __init__(self, model: nn.Module) -> None:
        self.order = {name: i for i, (name, _) in enumerate(model.named_modules())}
        self.bounds = [self.last(lvl["module"]) for lvl in feature_levels(model) if lvl["module"] in self.order]
        self.count = len(self.bounds)

    def last(self, module: str) -> int:
        """Position of the last module in ``module``'s subtree."""
        return max(i for n, i in self.order.items() if n == module or n.startswith(module + ".") or not module)

    def at(self, position: int) -> int:
        return next((s for s, b in enumerate(self.bounds) if position <= b), self.count - 1)

    def of_param(self, name: str) -> int:
        return self.at(self.order[name.rpartition(".")[0]])


def freeze(model: nn.Module, mode: str, trainable_from: int = 0) -> list[str]:
    """Set ``requires_grad`` for ``mode``; return the top-most modules that must stay in eval mode.

    ``frozen``: nothing trains (``['']``, the whole backbone, stays in eval). ``finetune``: all trains.
    ``partial``: stages ``trainable_from`` and later train; earlier ones are frozen and kept in eval.
    """
    if mode not in MODES:
        raise BackboneError(f"discriminator.mode '{mode}' is not one of {', '.join(MODES)}")
    stages = Stages(model)
    if mode == "partial" and not 0 <= trainable_from < stages.count:
        raise BackboneError(f"discriminator.trainable_from={trainable_from} is out of range: this backbone has "
                            f"{stages.count} stages (0 to {stages.count - 1})")
    first = {"frozen": math.inf, "finetune": 0, "partial": trainable_from}[mode]
    for name, p in model.named_parameters():
        p.requires_grad_(stages.of_param(name) >= first)
    if mode == "frozen":
        return [""]
    frozen = {n for n in stages.order if stages.at(stages.last(n)) < first}
    return [n for n in frozen if n and n.rpartition(".")[0] not in frozen]


# --- the list of known backbones ------------------------------------------------------------------------


def describe(name: str) -> dict:
    """Feature channels, reductions and parameters of ``name`` with its default levels (built on 'meta')."""
    with torch.device("meta"):
        model, indices = create(name)
    levels = feature_levels(model)
    return {
        "name": name,
        "weights": weights_repo(name),
        "out_indices": indices,
        "channels": [levels[i]["num_chs"] for i in indices],
        "reductions": [levels[i]["reduction"] for i in indices],
        "params": sum(p.numel() for p in model.parameters()),
        "cached": cached_weights(name) is not None,
    }


def known_backbones() -> list[dict]:
    """:func:`describe` for every backbone in :data:`KNOWN`."""
    return [describe(name) for name in KNOWN]


def table(rows: list[dict]) -> str:
    """The ``ganxfer backbones`` table."""
    lines = [f"{'backbone':<24}{'channels':<22}{'reductions':<15}{'params':>8}  weights offline"]
    for r in rows:
        weights = ("yes" if r["cached"] else "no") + f" ({r['weights']})"
        lines.append(f"{r['name']:<24}{','.join(map(str, r['channels'])):<22}"
                     f"{','.join(map(str, r['reductions'])):<15}{r['params'] / 1e6:>7.1f}M  {weights}")
    return "\n".join(lines)
