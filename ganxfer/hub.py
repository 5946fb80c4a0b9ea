"""Generator sources: local folders, bundled models and Hub ids; safetensors only, never a pickle.

Resolution order for a source string: an existing local path (exported folder or run folder), a bundled
model name (``ganxfer/pretrained/<name>``), then a Hub id ``owner/name[@revision]``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ganxfer.errors import GanxferError
from ganxfer.nets import load_model

BUNDLED = Path(__file__).parent / "pretrained"


class SourceError(GanxferError):
    """A generator source that cannot be resolved, phrased as one line."""


def bundled_models() -> list[str]:
    return sorted(p.name for p in BUNDLED.iterdir() if (p / "config.json").is_file()) if BUNDLED.is_dir() else []


def resolve(source: str, role: str = "generator") -> Path:
    """The local folder holding ``config.json`` + ``model.safetensors`` for ``source``."""
    path = Path(source).expanduser()
    if path.exists():
        if (path / role / "config.json").is_file():  # a run folder
            return path / role
        if (path / "config.json").is_file():
            return path
        raise SourceError(f"{path} is neither an exported {role} folder (config.json + model.safetensors) "
                          f"nor a run folder with {role}/")
    if (BUNDLED / source / "config.json").is_file():
        return BUNDLED / source
    if source.count("/") == 1:
        return download(source)
    known = ", ".join(bundled_models()) or "none"
    raise SourceError(f"generator source '{source}' is not a local path, a bundled model ({known}) "
                      "or a Hub id owner/name[@revision]")


def download(repo: str) -> Path:
    """Fetch a Hub model repo's config and safetensors weights through the standard Hub cache."""
    raise SourceError(f"Hub source '{repo}': Hub downloads are not available in this build")


def load_generator(source: str) -> nn.Module:
    """An eval-mode generator from any source; ``.sample(n, seed=...)`` returns images in [-1, 1]."""
    return load_model(resolve(source, "generator"), "generator")
