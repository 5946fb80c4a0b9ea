"""Model registry, factories and the exported-folder format (``config.json`` + ``model.safetensors``).

``config.json`` holds the constructor keyword arguments plus ``ganxfer: {role, kind, version}``, so
:func:`load_model` rebuilds the exact network and loads its weights strictly. Nothing is unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import safetensors.torch
from torch import nn

from ganxfer.errors import GanxferError
from ganxfer.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from ganxfer.nets.projected import ProjectedDiscriminator

GENERATORS: dict[str, type[nn.Module]] = {"dcgan": DCGANGenerator}
DISCRIMINATORS: dict[str, type[nn.Module]] = {"dcgan": DCGANDiscriminator, "projected": ProjectedDiscriminator}


def _projected_kwargs(r) -> dict:
    """Recipe -> ProjectedDiscriminator kwargs. ``pretrained``/``pretrained_file`` only pick the initial backbone
    weights and stay out of config.json, so ``load_model`` rebuilds with random weights, then loads its own."""
    d = r.discriminator
    return dict(backbone=d.backbone, resolution=r.data.resolution, channels=r.data.channels, mode=d.mode,
                trainable_from=d.trainable_from, backbone_lr_mult=d.backbone_lr_mult, out_indices=d.out_indices,
                input_size=d.input_size, projection=d.projection, head_channels=d.head_channels,
                heads=d.heads, mbstd=d.mbstd, pixel_ndf=d.ndf if d.pixel_d else 0,
                pretrained=d.pretrained, pretrained_file=d.pretrained_file)


# recipe -> constructor kwargs, one function per kind; later kinds register themselves here.
DISCRIMINATOR_KWARGS: dict[str, Callable] = {
    "dcgan": lambda r: dict(resolution=r.data.resolution, channels=r.data.channels, ndf=r.discriminator.ndf),
    "projected": _projected_kwargs,
}


class ModelFormatError(GanxferError, ValueError):
    """An exported folder that cannot be loaded, phrased as one line."""


def _registry(role: str) -> dict[str, type[nn.Module]]:
    return GENERATORS if role == "generator" else DISCRIMINATORS


def generator_kwargs(recipe) -> dict:
    g = recipe.generator
    return dict(resolution=recipe.data.resolution, channels=recipe.data.channels, ngf=g.ngf,
                latent_dim=g.latent_dim)


def build_generator(recipe) -> nn.Module:
    if recipe.generator.kind not in GENERATORS:
        raise ModelFormatError(f"generator.kind '{recipe.generator.kind}' is unknown; use one of {sorted(GENERATORS)}")
    return GENERATORS[recipe.generator.kind](**generator_kwargs(recipe))


def build_discriminator(recipe) -> nn.Module:
    kind = recipe.discriminator.kind
    if kind not in DISCRIMINATORS:
        raise ModelFormatError(f"discriminator.kind '{kind}' is unknown; use one of {sorted(DISCRIMINATORS)}")
    return DISCRIMINATORS[kind](**DISCRIMINATOR_KWARGS[kind](recipe))


def config_of(model: nn.Module, role: str) -> dict:
    from ganxfer import __version__

    config = dict(model._hub_mixin_config or {})
    config["ganxfer"] = {"role": role, "kind": model.kind, "version": __version__}
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
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ModelFormatError(f"{folder} has no config.json; expected an exported ganxfer model folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def build_from_config(config: dict, role: str | None = None) -> nn.Module:
    """An untrained network with the architecture described by an exported ``config.json``."""
    meta = config.get("ganxfer", {})
    role = role or meta.get("role", "generator")
    kind = meta.get("kind", "dcgan")
    registry = _registry(role)
    if kind not in registry:
        raise ModelFormatError(f"{role} kind '{kind}' is unknown to this ganxfer; known: {sorted(registry)}")
    kwargs = {k: v for k, v in config.items() if k != "ganxfer"}
    try:
        return registry[kind](**kwargs)
    except TypeError as e:
        raise ModelFormatError(f"config.json does not describe a {kind} {role}: {e}") from None


def load_model(folder: str | Path, role: str | None = None) -> nn.Module:
    """Rebuild and strictly load an exported model folder (safetensors only)."""
    folder = Path(folder)
    model = build_from_config(read_config(folder), role)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelFormatError(f"{folder} has no model.safetensors; ganxfer loads safetensors weights only")
    missing, unexpected = safetensors.torch.load_model(model, str(weights), strict=False)
    if missing or unexpected:
        raise ModelFormatError(f"{weights} does not match its config.json: missing {sorted(missing)[:5]}, "
                               f"unexpected {sorted(unexpected)[:5]}")
    return model.eval()
