"""Generator sources: resolve a run folder, exported folder, bundled name or Hub id to safetensors, never a pickle.

Resolution order for a source string: an existing local path (exported folder or run folder), a bundled
model name (``ganxfer/pretrained/<name>``), then a Hub id ``owner/name[@revision]``. A Hub repo pushed by
ganxfer is itself a loadable generator (``config.json`` + ``model.safetensors`` at its root) with the
discriminator, when pushed, in ``discriminator/``. Downloads go through :mod:`ganxfer.cache`. Only
``model.safetensors`` is ever read: a source that offers pickles only is refused before any of its bytes are
opened.
"""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import HfApi
from torch import nn

from ganxfer.cache import NETWORK_ERRORS, at, hub_offline, parse_hub_id, snapshot
from ganxfer.errors import GanxferError
from ganxfer.nets import load_model, read_config

BUNDLED = Path(__file__).parent / "pretrained"
CONFIG, WEIGHTS = "config.json", "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class SourceError(GanxferError):
    """A generator source that cannot be resolved, phrased as one line."""


def bundled_models() -> list[str]:
    return sorted(p.name for p in BUNDLED.iterdir() if (p / CONFIG).is_file()) if BUNDLED.is_dir() else []


def resolve(source: str, role: str = "generator") -> Path:
    """The local folder holding ``config.json`` + ``model.safetensors`` of ``role`` for ``source``."""
    path = Path(source).expanduser()
    if path.exists():
        return _local(path, role)
    if (BUNDLED / source / CONFIG).is_file():
        return check_folder(BUNDLED / source, role, f"bundled model {source}")
    if parse_hub_id(source):
        try:
            return download(source, role)
        except SourceError as e:
            if path.parent.is_dir() and path.parent != Path("."):  # most likely a mistyped local path
                raise SourceError(f"{source} is no local folder, and {e}") from None
            raise
    known = ", ".join(bundled_models()) or "none"
    raise SourceError(f"{role} source '{source}' is not a local path, a bundled model ({known}) "
                      "or a Hub id owner/name[@revision]")


def _local(path: Path, role: str) -> Path:
    if not path.is_dir() and not path.is_file():
        raise SourceError(f"{path} is a special file (a device, FIFO or socket); pass an exported folder or a run "
                          "folder")
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise SourceError(_pickle_refusal(str(path), [path.name]))
        raise SourceError(f"{path} is a file; pass the folder holding config.json and model.safetensors")
    folder = path / role if (path / role).is_dir() else path  # a run folder, or a pushed folder's discriminator/
    return check_folder(folder, role, str(path))


def _pickle_refusal(name: str, files: list[str]) -> str:
    shown = ", ".join(files[:3]) + (" ..." if len(files) > 3 else "")
    return (f"{name} offers only pickle weights ({shown}); ganxfer refuses them, since unpickling runs code "
            "its author chose, and reads model.safetensors only: convert the checkpoint where you trust it, "
            "e.g. safetensors.torch.save_file(state_dict, 'model.safetensors')")


def check_folder(folder: Path, role: str, name: str) -> Path:
    """Refuse pickle-only folders, require config.json + model.safetensors and the right role; return folder."""
    if not (folder / WEIGHTS).is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise SourceError(_pickle_refusal(name, pickles))
        if not (folder / CONFIG).is_file():
            raise SourceError(f"{name} is neither an exported {role} folder (config.json + model.safetensors) "
                              f"nor a run folder with {role}/")
        raise SourceError(f"{name} has config.json but no model.safetensors; ganxfer loads safetensors weights only")
    if not (folder / CONFIG).is_file():
        raise SourceError(f"{name} has model.safetensors but no config.json to rebuild the network from")
    found = read_config(folder).get("ganxfer", {}).get("role", role)
    if found != role:
        raise SourceError(f"{name} holds a {found}, not a {role}")
    return folder


def download(source: str, role: str = "generator") -> Path:
    """Fetch ``role``'s config.json + model.safetensors of a Hub model repo through the standard Hub cache."""
    repo, revision = parse_hub_id(source) or (source, None)
    sub = "" if role == "generator" else f"{role}/"
    name = f"Hub model {repo}{at(revision)}"
    snap = snapshot(repo, revision, "model", [sub + CONFIG, sub + WEIGHTS], name,
                    "pass a local exported folder instead", SourceError)
    folder = snap / sub if sub else snap
    if not (folder / WEIGHTS).is_file():
        offered = [f for f in _repo_files(repo, revision, snap) if f.startswith(sub) and "/" not in f[len(sub):]]
        pickles = [f for f in offered if Path(f).suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            raise SourceError(_pickle_refusal(name, pickles))
        raise SourceError(f"{name} has no {sub}{WEIGHTS}; it is not a ganxfer {role} "
                          f"(a ganxfer repo holds {sub}{CONFIG} and {sub}{WEIGHTS})")
    return check_folder(folder, role, name)


def _repo_files(repo: str, revision: str | None, snap: Path) -> list[str]:
    """Files a repo offers, as far as known without reading any: the Hub's listing, else the cached snapshot."""
    if not hub_offline():
        try:
            return HfApi().list_repo_files(repo, revision=revision)
        except NETWORK_ERRORS:
            pass
    return [p.relative_to(snap).as_posix() for p in snap.rglob("*")] if snap.is_dir() else []


def pick_device(spec: str | None = None) -> torch.device:
    """The torch device ``--device`` names, checked against what this machine has (default: cuda if available)."""
    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec.strip())
    except (RuntimeError, ValueError):
        raise SourceError(f"--device {spec!r} is not a torch device; use cpu, cuda or cuda:N") from None
    kind = device.type
    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None), "mps": torch.backends.mps}.get(kind)
    if kind == "cpu":
        return device
    if backend is None:
        raise SourceError(f"--device {spec}: ganxfer runs generators on cpu or a GPU (cuda, cuda:N), not on {kind}")
    if not backend.is_available():
        raise SourceError(f"--device {spec}: no {kind} device is visible here; use --device cpu")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if (device.index or 0) >= count:
        raise SourceError(f"--device {spec}: this machine has {count} {kind} device(s), {kind}:0 to {kind}:{count - 1}")
    return device


def load_generator(source: str) -> nn.Module:
    """An eval-mode generator from a run folder, exported folder, bundled name or Hub id ``owner/name[@rev]``.

    ``.sample(n, seed=...)`` returns ``n`` images (n, C, H, W) in [-1, 1]; loading is strict and reads
    ``model.safetensors`` only.
    """
    return load_model(resolve(source, "generator"), "generator")
