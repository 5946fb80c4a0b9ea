"""Where downloads and caches live, and when the network may be used: the one place every module asks.

- The Hugging Face cache: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else huggingface_hub's default; read from the
  environment at each call (``huggingface_hub.constants`` is frozen at import).
- Offline: ``HF_HUB_OFFLINE`` set now, or when huggingface_hub was imported.
- ganxfer's own cache (reference features, extracted Hub datasets): ``GANXFER_CACHE``, else
  ``$XDG_CACHE_HOME/ganxfer`` (``~/.cache/ganxfer``).
- MNIST: ``$GANXFER_DATA/mnist``, else ``<ganxfer cache>/mnist``.
- Every Hub repo read (models, datasets) is one :func:`snapshot` through that cache, failures phrased as one line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub import errors as hf_errors
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from ganxfer.errors import GanxferError
from ganxfer.version import __version__

NETWORK_ERRORS = (OSError, getattr(hf_errors, "HTTPError", OSError))  # HTTP and transport failures
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_REVISION = re.compile(r"[\w-][\w.-]*(?:/[\w-][\w.-]*)*")  # a branch, tag, refs/pr/N or commit; no '..'


def hub_cache() -> str:
    """The Hub cache as the environment says now."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return constants.HF_HUB_CACHE


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set now or was set when huggingface_hub was imported."""
    now = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return now or constants.is_offline_mode()


def ganxfer_cache() -> Path:
    """``$GANXFER_CACHE``, else ``$XDG_CACHE_HOME/ganxfer`` (``~/.cache/ganxfer`` by default)."""
    if os.environ.get("GANXFER_CACHE"):
        return Path(os.environ["GANXFER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ganxfer"


def mnist_root() -> Path:
    """``$GANXFER_DATA/mnist`` (torchvision's layout), else ``<ganxfer cache>/mnist``."""
    base = os.environ.get("GANXFER_DATA")
    return Path(base) / "mnist" if base else ganxfer_cache() / "mnist"


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """``owner/name[@revision]`` -> (repo id, revision or None); None when ``text`` is not a valid Hub id.

    Checked before any file is touched: the repo id by huggingface_hub's own rules (no ``..``, ``--``,
    leading or trailing dots), the revision as a plain ref name (no ``..``, no absolute path).
    """
    repo, at, revision = text.partition("@")
    if not _REPO_ID.fullmatch(repo) or (at and not revision):
        return None
    if at and (not _REVISION.fullmatch(revision) or ".." in revision or len(revision) > 255):
        return None
    try:
        validate_repo_id(repo)
    except HFValidationError:
        return None
    return repo, revision or None


def at(revision: str | None) -> str:
    """``@revision``, or nothing for the default branch."""
    return f"@{revision}" if revision else ""


def snapshot(repo: str, revision: str | None, repo_type: str, patterns: list[str], name: str, instead: str,
             error: type[GanxferError]) -> Path:
    """``snapshot_download`` of ``patterns`` through :func:`hub_cache` (cache only when :func:`hub_offline`);
    each failure becomes one ``error`` line naming ``name`` and ending in ``instead``."""
    try:
        return Path(snapshot_download(repo, repo_type=repo_type, revision=revision, allow_patterns=patterns,
                                      cache_dir=hub_cache(), local_files_only=hub_offline(), library_name="ganxfer",
                                      library_version=__version__))
    except LocalEntryNotFoundError:
        if hub_offline():
            raise error(f"{name} is not in the Hub cache ({hub_cache()}) and HF_HUB_OFFLINE=1 forbids "
                        f"downloading it; run once online without HF_HUB_OFFLINE, or {instead}") from None
        raise error(f"{name} could not be downloaded (no connection to the Hub?) and is not in the Hub "
                    f"cache ({hub_cache()}); check the connection, or {instead}") from None
    except RevisionNotFoundError:
        raise error(f"{name}: the revision '{revision}' does not exist on the Hub") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise error(f"{name} was not found on the Hub, or is private or gated "
                    "(log in with `hf auth login` if you have access)") from None
    except HfHubHTTPError as e:
        raise error(f"{name}: the Hub answered {str(e).splitlines()[0]}") from None
