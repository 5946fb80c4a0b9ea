"""Warm starts: copy a pretrained network into a new one, adapt what is known to differ, report the rest.

Every tensor ends in exactly one bucket of the report (``RUN/transfer.json``): ``copied`` (same name and
shape), ``adapted`` (a known mismatch: 1 -> 3 image channels, or a DCGAN generator widened to a larger
``ngf`` by Net2WiderNet, which keeps the source's images), ``new`` (only in the target, kept at
its fresh init) or ``unused`` (only in the source). A tensor present in both with a shape that cannot be
adapted (another latent size, a narrower generator, another D width) refuses the transfer, naming the tensors.
A DCGAN discriminator can also warm-start the pixel D of a projected one (``pixel_d``); its backbone keeps its own
pretrained weights and stays out of the report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.logging import get_logger
from torch import nn

from ganxfer.errors import GanxferError
from ganxfer.nets import load_model, read_config
from ganxfer.nets.base import hub_config
from ganxfer.sources import resolve

log = get_logger(__name__)  # the report once, from the main process, not once per rank


class TransferError(GanxferError):
    """An incompatible source, phrased as one line naming the mismatched tensors."""


def adapt_channels(src: torch.Tensor, target_shape: torch.Size, dim: int, preserve: str) -> torch.Tensor:
    """Map a tensor between 1 and 3 image channels along ``dim``.

    ``preserve="output"`` (generator's last layer): 1 -> 3 replicates, so every colour channel equals the
    grey image; 3 -> 1 averages. ``preserve="input"`` (discriminator's first layer): 1 -> 3 replicates
    divided by 3, so a grey image replicated to RGB gives the same response; 3 -> 1 sums.
    """
    cin, cout = src.shape[dim], target_shape[dim]
    if cin == 1:
        out = src.repeat_interleave(cout, dim=dim)
        return out / cout if preserve == "input" else out
    reduced = src.sum(dim, keepdim=True) if preserve == "input" else src.mean(dim, keepdim=True)
    return reduced


def transfer_state(target: nn.Module, source: nn.Module, source_name: str) -> dict:
    """Copy ``source`` into ``target`` in place and return the report; refuse unadaptable mismatches."""
    adaptable: dict[str, tuple[int, str]] = getattr(target, "channel_tensors", {})
    src_state, dst_state = source.state_dict(), target.state_dict()
    report: dict = {"source": source_name, "copied": [], "adapted": {}, "new": [], "unused": []}
    mismatched = []
    new_state = {}
    for name, dst in dst_state.items():
        if name not in src_state:
            report["new"].append(name)
            continue
        src = src_state[name]
        if src.shape == dst.shape:
            new_state[name] = src
            report["copied"].append(name)
        elif name in adaptable and _channels_only(src.shape, dst.shape, adaptable[name][0]):
            dim, preserve = adaptable[name]
            new_state[name] = adapt_channels(src, dst.shape, dim, preserve)
            report["adapted"][name] = f"{src.shape[dim]} -> {dst.shape[dim]} image channels ({preserve} preserved)"
        else:
            mismatched.append(f"{name} {tuple(src.shape)} vs {tuple(dst.shape)}")
    if mismatched:
        shown = "; ".join(mismatched[:3]) + (f"; and {len(mismatched) - 3} more" if len(mismatched) > 3 else "")
        raise TransferError(f"{source_name} is incompatible with this recipe: {shown} "
                            "(latent size and width must match the source; set them to the source's values)")
    report["unused"] = [k for k in src_state if k not in dst_state]
    target.load_state_dict(new_state, strict=False)
    return report


def _channels_only(a: torch.Size, b: torch.Size, dim: int) -> bool:
    """Do two shapes differ only along ``dim``, between 1 and 3 channels?"""
    if len(a) != len(b) or {a[dim], b[dim]} != {1, 3}:
        return False
    return all(x == y for i, (x, y) in enumerate(zip(a, b, strict=True)) if i != dim)


def freeze_blocks(model: nn.Module, k: int) -> list[str]:
    """Freeze the weights of the first ``k`` of ``model.blocks`` (FreezeG / FreezeD); return their names."""
    if k and not hasattr(model, "blocks"):
        raise TransferError(f"freeze_blocks={k} needs a block-structured (DCGAN) model; a {model.kind} model "
                            "has none (for a projected discriminator use discriminator.mode)")
    if k > len(getattr(model, "blocks", [])):
        raise TransferError(f"freeze_blocks={k} but the model has only {len(model.blocks)} blocks")
    names = []
    for i, block in enumerate(model.blocks[:k] if k else []):
        for n, p in block.named_parameters():
            p.requires_grad_(False)
            names.append(f"blocks.{i}.{n}")
    return names


def _load_source(init: str, role: str) -> tuple[nn.Module, dict, Path]:
    folder = resolve(init, role)
    return load_model(folder, role), read_config(folder), folder


def warm_start_generator(G: nn.Module, recipe, run_dir: Path | None) -> nn.Module:
    """A generator for ``recipe`` initialised from ``generator.init``; grows resolution when needed."""
    init = recipe.generator.init
    source, config, folder = _load_source(init, "generator")
    if config["ganxfer"]["kind"] != G.kind:
        raise TransferError(f"generator.init {init} is a '{config['ganxfer']['kind']}' generator; "
                            f"this recipe builds '{G.kind}'")
    src_res, dst_res = config.get("resolution"), G.resolution
    if src_res and dst_res != src_res:
        if not hasattr(G, "grow"):  # only a DCGAN generator appends upsampling blocks
            raise TransferError(f"generator.init {init} is a {src_res}px {G.kind} generator, which cannot grow; set "
                                f"data.resolution={src_res}")
        ratio = math.log2(dst_res / src_res)
        if ratio < 0 or ratio != int(ratio):
            raise TransferError(f"generator.init {init} is {src_res}px; it can grow to {src_res * 2}, "
                                f"{src_res * 4}, ... but not to data.resolution={dst_res}")
        kwargs = {**hub_config(G), "grow": config.get("grow", 0) + int(ratio)}
        G = type(G)(**kwargs)
    widened = {}
    if hasattr(source, "widen") and source.ngf != G.ngf:  # only a model that can widen has a width to match
        source, widened = _widen(source, G.ngf, init, recipe.seed)
    report = transfer_state(G, source, init)
    for name, how in widened.items():  # a widened tensor matches G's shape now: copied, but say how it was made
        if name in report["copied"]:
            report["copied"].remove(name)
        report["adapted"][name] = "; ".join(filter(None, [how, report["adapted"].get(name)]))
    if recipe.generator.code_gain != 1:
        _adapted(report, *_scale_code(G, recipe.discriminator.conditional, recipe.generator.code_gain))
    if recipe.generator.balance_latent:
        _adapted(report, *_balance_latent(G))
    report["frozen"] = freeze_blocks(G, recipe.generator.freeze_blocks)
    report["source_dir"] = str(folder)
    _publish(report, run_dir, "generator")
    return G


def _adapted(report: dict, name: str, how: str) -> None:
    """Record in the transfer report that tensor ``name`` was changed after loading, and how."""
    report["adapted"][name] = "; ".join(filter(None, [report["adapted"].get(name), how]))
    if name in report["copied"]:
        report["copied"].remove(name)


def _first_layer(G: nn.Module, option: str) -> torch.Tensor:
    """The weight by which a DCGAN generator's first layer reads z, (latent_dim, C, 4, 4): row i reads z[i]."""
    if getattr(G, "kind", None) != "dcgan":
        raise TransferError(f"{option} needs a DCGAN generator, whose first layer reads z; "
                            f"this recipe builds '{getattr(G, 'kind', type(G).__name__)}'")
    return G.blocks[0][0].weight


def _scale_code(G: nn.Module, k: int, gain: float) -> tuple[str, str]:
    """Multiply the weights by which ``G``'s first layer reads z[:k] by ``gain`` (``generator.code_gain``).

    G then draws for z what it drew for z with z[:k] times ``gain``: the class c = argmax z[:k] is the same, but
    each class's image is reached over a ``gain`` times narrower band of the code's margin. Returns the tensor's
    name and how it changed, for the transfer report.
    """
    with torch.no_grad():
        _first_layer(G, "generator.code_gain")[:k] *= gain
    return "blocks.0.0.weight", f"rows z[:{k}] x {gain:g} (generator.code_gain)"


def _balance_latent(G: nn.Module) -> tuple[str, str]:
    """Scale the rows of ``G``'s first layer (one per entry of z) whose norm is above the rows' median down to it
    (``generator.balance_latent``), so that every entry of z moves the image about as much. Returns the tensor's
    name and how it changed, for the transfer report."""
    with torch.no_grad():
        weight = _first_layer(G, "generator.balance_latent")
        norms = weight.flatten(1).norm(dim=1)
        median = norms.median()
        scale = (median / norms).clamp(max=1)
        weight.mul_(scale.view(-1, 1, 1, 1))
    cut = int((scale < 1).sum())
    return "blocks.0.0.weight", (f"{cut} rows of z scaled down to the median row norm {median:.3g}, the largest by "
                                 f"{1 / scale.min():.3g}x (generator.balance_latent)")


def _widen(source: nn.Module, ngf: int, init: str, seed: int) -> tuple[nn.Module, dict[str, str]]:
    """``source`` widened to ``ngf`` (same images) and, per tensor whose shape changed, how."""
    if ngf < source.ngf:
        raise TransferError(f"generator.init {init} is {source.ngf} wide; a warm start can widen a generator "
                            f"but not narrow it: set generator.ngf to {source.ngf} or more, not {ngf}")
    if getattr(source, "excitation", False):
        raise TransferError(f"generator.init {init} has a skip-layer excitation, which cannot be widened: set "
                            f"generator.ngf to {source.ngf}")
    wide = source.widen(ngf, seed=seed)
    before = source.state_dict()
    notes = {name: f"{tuple(before[name].shape)} -> {tuple(t.shape)} (widened to ngf {ngf}: channels copied, "
                   "images kept)" for name, t in wide.state_dict().items() if t.shape != before[name].shape}
    return wide, notes


def warm_start_discriminator(D: nn.Module, recipe, run_dir: Path | None) -> nn.Module:
    """A discriminator initialised from ``discriminator.init`` with ``discriminator.freeze_blocks`` (FreezeD)."""
    init = recipe.discriminator.init
    source, config, folder = _load_source(init, "discriminator")
    kind = config["ganxfer"]["kind"]
    if kind == "dcgan" and getattr(D, "pixel", None) is not None:  # a plain D becomes the ensemble's pixel D
        report = transfer_state(D.pixel, source, init)
        for bucket in ("copied", "new", "unused"):
            report[bucket] = [f"pixel.{n}" for n in report[bucket]]
        report["adapted"] = {f"pixel.{n}": how for n, how in report["adapted"].items()}
        report["new"] += [n for n in D.state_dict() if not n.startswith(("pixel.", "backbone."))]
    elif kind != D.kind:
        hint = "; a projected one takes a dcgan export only with pixel_d" if D.kind == "projected" else ""
        raise TransferError(f"discriminator.init {init} is '{kind}', not '{D.kind}'{hint}")
    else:
        report = transfer_state(D, source, init)
    k = recipe.discriminator.freeze_blocks
    report["frozen"] = ([f"pixel.{n}" for n in freeze_blocks(D.pixel, k)] if kind == "dcgan" and D.kind != "dcgan"
                        else freeze_blocks(D, k))
    report["source_dir"] = str(folder)
    _publish(report, run_dir, "discriminator")
    return D


def _publish(report: dict, run_dir: Path | None, role: str) -> None:
    PartialState()  # which process this is (a no-op inside a run, which made it already); the logger asks
    log.info("%s warm start from %s: %d copied, %d adapted, %d new, %d unused, %d frozen", role,
             report["source"], len(report["copied"]), len(report["adapted"]), len(report["new"]),
             len(report["unused"]), len(report["frozen"]))
    for name, how in report["adapted"].items():
        log.info("  adapted %s: %s", name, how)
    for name in report["new"] + report["unused"]:
        log.info("  %s %s", "new" if name in report["new"] else "unused", name)
    if run_dir is None:
        return
    path = Path(run_dir) / "transfer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # the report so far; a damaged one (a crash mid-write) is started again
        existing = json.loads(path.read_text()) if path.is_file() else {}
    except (ValueError, RecursionError):
        existing = {}
    existing = existing if isinstance(existing, dict) else {}
    existing[role] = report
    path.write_text(json.dumps(existing, indent=2))
