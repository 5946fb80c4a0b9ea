"""Networks by name: the (role, kind) registry, its factory, and the exported folder (config.json + safetensors).

``config.json`` holds the constructor keyword arguments plus ``ganxfer: {role, kind, version}``, so
:func:`load_model` rebuilds the exact network and loads its weights strictly. Nothing is unpickled. A config
is checked with the recipe's types and ranges, and its parameter count (taken on the meta device, before
anything is allocated) is capped at :data:`MAX_PARAMETERS`; weights must be finite floats of the right shapes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors
import safetensors.torch
import torch
from torch import nn

from ganxfer.errors import GanxferError
from ganxfer.nets.base import hub_config
from ganxfer.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from ganxfer.nets.fastgan import FastGANGenerator
from ganxfer.nets.projected import ProjectedDiscriminator
from ganxfer.schema import RecipeError, check_model_values
from ganxfer.version import __version__

if TYPE_CHECKING:
    from ganxfer.schema import Recipe

MAX_PARAMETERS = 1_000_000_000  # 4 GB of float32 weights; DCGAN at 128px with ngf 256 has ~200M
MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH = 2**20, 8  # an exported config.json: under 2 KB, 3 deep
EXTRA_RANGES = {"grow": (0, 3), "pixel_ndf": (0, 1024), "classes": (0, 4096)}  # config keys that no recipe key shares


class ModelFormatError(GanxferError, ValueError):
    """An exported folder that cannot be loaded, phrased as one line."""


@dataclass(frozen=True)
class Entry:
    """A registered network: its class, and how a recipe becomes that class's constructor arguments."""

    cls: type[nn.Module]
    kwargs: Callable[[Recipe], dict]


def _generator(r: Recipe) -> dict:
    g = r.generator
    return dict(resolution=r.data.resolution, channels=r.data.channels, ngf=g.ngf, latent_dim=g.latent_dim)


def _dcgan_generator(r: Recipe) -> dict:
    return _generator(r) | (dict(excitation=True) if r.generator.excitation else {})


def _ac_classes(r: Recipe) -> int:
    """The class head of ``loss.classifier`` (AC-GAN): one logit per class of ``discriminator.conditional``."""
    return r.discriminator.conditional if r.loss.classifier > 0 else 0


def _dcgan_discriminator(r: Recipe) -> dict:
    return dict(resolution=r.data.resolution, channels=r.data.channels, ndf=r.discriminator.ndf,
                norm=r.discriminator.norm, classes=_ac_classes(r),
                input_size=r.discriminator.input_size, conditional=r.discriminator.conditional)


def _projected_discriminator(r: Recipe) -> dict:
    """``pretrained``/``pretrained_file`` only pick the initial backbone weights and stay out of config.json, so
    ``load_model`` rebuilds with random weights, then loads its own."""
    d = r.discriminator
    return dict(backbone=d.backbone, resolution=r.data.resolution, channels=r.data.channels, mode=d.mode,
                trainable_from=d.trainable_from, backbone_lr_mult=d.backbone_lr_mult, out_indices=d.out_indices,
                input_size=d.input_size, projection=d.projection, head_channels=d.head_channels,
                heads=d.heads, mbstd=d.mbstd, pixel_ndf=d.pixel_ndf if d.pixel_d else 0,
                pixel_norm=d.pixel_norm, pixel_input_size=d.pixel_input_size,
                pixel_weight=d.pixel_weight, conditional=d.conditional, pixel_classes=_ac_classes(r),
                pretrained=d.pretrained, pretrained_file=d.pretrained_file)


# (role, kind) -> network; a new architecture is one row here.
REGISTRY: dict[tuple[str, str], Entry] = {
    ("generator", "dcgan"): Entry(DCGANGenerator, _dcgan_generator),
    ("generator", "fastgan"): Entry(FastGANGenerator, _generator),
    ("discriminator", "dcgan"): Entry(DCGANDiscriminator, _dcgan_discriminator),
    ("discriminator", "projected"): Entry(ProjectedDiscriminator, _projected_discriminator),
}


def kinds(role: str) -> list[str]:
    """The registered kinds of ``role`` (generator or discriminator), sorted."""
    return sorted(kind for r, kind in REGISTRY if r == role)


def build(role: str, recipe: Recipe) -> nn.Module:
    """The untrained ``role`` network that ``recipe`` describes (its ``<role>.kind`` looked up in the registry)."""
    kind = getattr(recipe, role).kind
    entry = REGISTRY.get((role, kind))
    if entry is None:
        raise RecipeError(f"{role}.kind '{kind}' is unknown; use one of {kinds(role)}")
    return entry.cls(**entry.kwargs(recipe))


def build_generator(recipe: Recipe) -> nn.Module:
    return build("generator", recipe)


def build_discriminator(recipe: Recipe) -> nn.Module:
    return build("discriminator", recipe)


def config_of(model: nn.Module, role: str) -> dict:
    """``model``'s config.json: its constructor arguments plus ``ganxfer: {role, kind, version}``."""
    config = dict(hub_config(model))
    config["ganxfer"] = {"role": role, "kind": model.kind, "version": __version__}
    names = getattr(model, "classes", None) if role == "generator" else None
    if names:  # a class-conditional run's class names, in code order (sample --class)
        config["ganxfer"]["classes"] = list(names)
    return config


def export_model(model: nn.Module, folder: str | Path, role: str) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (contiguous CPU tensors) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / "model.safetensors.tmp"
    try:  # bytes written by Python, so that a full disk is an OSError saying so (not a SafetensorError)
        tmp.write_bytes(safetensors.torch.save(state, metadata={"format": "pt"}))
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config_of(model, role), indent=2, sort_keys=True))
    return folder


def read_config(folder: str | Path) -> dict:
    """The ``config.json`` of an exported folder: a JSON object with a ``ganxfer: {role, kind}`` block."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ModelFormatError(f"{folder} has no config.json; expected an exported ganxfer model folder")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelFormatError(f"{path} is {path.stat().st_size:,} bytes, over the {MAX_CONFIG_BYTES:,} a config.json "
                               "of constructor arguments takes; export the model again")
    try:
        config = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path} is not valid JSON ({getattr(e, 'msg', e)})") from None
    except RecursionError:  # json's parser recurses once per nesting level
        raise ModelFormatError(f"{path} is nested too deep to be a config of constructor arguments; export the "
                               "model again") from None
    if not isinstance(config, dict):
        raise ModelFormatError(f"{path} holds a JSON {type(config).__name__}; expected an object of constructor "
                               "arguments")
    if _depth(config) > MAX_CONFIG_DEPTH:
        raise ModelFormatError(f"{path} is nested more than {MAX_CONFIG_DEPTH} deep, which no config of constructor "
                               "arguments is; export the model again")
    meta = config.get("ganxfer")
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in ("role", "kind")):
        raise ModelFormatError(f"{path} has no 'ganxfer' block with role and kind, so it was not exported by "
                               "ganxfer; export the model with ganxfer.nets.export_model")
    return config


def _depth(value) -> int:
    """How deep JSON lists and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            todo.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def build_from_config(config: dict, role: str | None = None, where: str = "config.json") -> nn.Module:
    """An untrained network with the architecture described by an exported ``config.json``."""
    meta = config.get("ganxfer", {})
    role = role or meta.get("role", "generator")
    kind = meta.get("kind", "dcgan")
    entry = REGISTRY.get((role, kind))
    if entry is None:
        raise ModelFormatError(f"{role} kind '{kind}' is unknown to this ganxfer; known: {kinds(role)}")
    kwargs = {k: v for k, v in config.items() if k != "ganxfer"}
    try:
        check_model_values(kwargs, where)
    except RecipeError as e:
        raise ModelFormatError(str(e)) from None
    for key, (lo, hi) in EXTRA_RANGES.items():
        value = kwargs.get(key, lo)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ModelFormatError(f"{where}: {key}={value!r} is out of range; expected an int in [{lo}, {hi}]")
    count = parameter_count(lambda: _construct(entry.cls, kwargs, kind, role, where))
    if count > MAX_PARAMETERS:
        raise ModelFormatError(f"{where} describes a {kind} {role} of {count:,} parameters, over ganxfer's cap of "
                               f"{MAX_PARAMETERS:,}; check its sizes (ngf, ndf, latent_dim, resolution)")
    return _construct(entry.cls, kwargs, kind, role, where)


def parameter_count(make: Callable[[], nn.Module]) -> int:
    """Parameters of the network ``make()`` builds, built on the meta device: nothing is allocated."""
    with torch.device("meta"):
        return sum(p.numel() for p in make().parameters())


def _construct(cls: type[nn.Module], kwargs: dict, kind: str, role: str, where: str) -> nn.Module:
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ModelFormatError(f"{where} does not describe a {kind} {role}: {e}") from None


def load_model(folder: str | Path, role: str | None = None) -> nn.Module:
    """Rebuild and strictly load an exported model folder (safetensors only; finite float weights)."""
    folder = Path(folder)
    model = build_from_config(read_config(folder), role, str(folder / "config.json"))
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelFormatError(f"{folder} has no model.safetensors; ganxfer loads safetensors weights only")
    try:
        state = safetensors.torch.load_file(str(weights))
    except (safetensors.SafetensorError, OSError) as e:
        raise ModelFormatError(f"{weights} is not a readable safetensors file ({e}); export or download it "
                               "again") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFormatError(f"{weights} does not match its config.json: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
    for key, tensor in state.items():
        want = expected[key]
        if tensor.shape != want.shape or tensor.dtype.is_floating_point != want.dtype.is_floating_point:
            raise ModelFormatError(f"{weights}: {key} is {tensor.dtype} {tuple(tensor.shape)}, but its config.json "
                                   f"makes {want.dtype} {tuple(want.shape)}; export the model again")
        if tensor.dtype.is_floating_point and not torch.isfinite(tensor).all():
            raise ModelFormatError(f"{weights}: {key} holds NaN or infinite values (the training diverged); use an "
                                   "earlier checkpoint, snapshot or generator-best")
    model.load_state_dict(state, strict=True)
    classes = read_config(folder)["ganxfer"].get("classes") or [] if role in (None, "generator") else []
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes) and len(classes) <= 4096):
        raise ModelFormatError(f"{folder / 'config.json'}: ganxfer.classes must be a list of class names")
    if classes:
        model.classes = classes
    return model.eval()
