"""Generator sources and the Hugging Face Hub: resolve, pull, push and Hub datasets; safetensors only, never a pickle.

Resolution order for a source string: an existing local path (exported folder or run folder), a bundled
model name (``ganxfer/pretrained/<name>``), then a Hub id ``owner/name[@revision]``. A Hub repo pushed by
ganxfer is itself a loadable generator (``config.json`` + ``model.safetensors`` at its root) with the
discriminator, when pushed, in ``discriminator/``. Downloads go through the standard Hub cache and respect
``HF_HUB_OFFLINE``. Only ``model.safetensors`` is ever read: a source that offers pickles only is refused
before any of its bytes are opened.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, constants, snapshot_download
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
from torch import nn

from ganxfer import __version__
from ganxfer.errors import GanxferError
from ganxfer.nets import load_model, read_config

log = logging.getLogger(__name__)
BUNDLED = Path(__file__).parent / "pretrained"
CONFIG, WEIGHTS = "config.json", "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_REVISION = re.compile(r"[\w-][\w.-]*(?:/[\w-][\w.-]*)*")  # a branch, tag, refs/pr/N or commit; no '..'
NETWORK_ERRORS = (OSError, getattr(hf_errors, "HTTPError", OSError))  # HTTP and transport failures


class SourceError(GanxferError):
    """A generator source that cannot be resolved, phrased as one line."""


class HubDataError(GanxferError):
    """A ``data.path: hub:owner/name`` dataset that cannot be fetched or read, phrased as one line."""


class PushError(GanxferError):
    """A push that cannot be made, phrased as one line."""


# --- environment ---------------------------------------------------------------------------------------


def hub_cache() -> str:
    """The Hub cache as the environment says now (``huggingface_hub.constants`` is frozen at import)."""
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


def _at(revision: str | None) -> str:
    return f"@{revision}" if revision else ""


# --- sources -------------------------------------------------------------------------------------------


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
    name = f"Hub model {repo}{_at(revision)}"
    snapshot = Path(_snapshot(repo, revision, "model", [sub + CONFIG, sub + WEIGHTS], name,
                              "pass a local exported folder instead"))
    folder = snapshot / sub if sub else snapshot
    if not (folder / WEIGHTS).is_file():
        offered = [f for f in _repo_files(repo, revision, snapshot) if f.startswith(sub) and "/" not in f[len(sub):]]
        pickles = [f for f in offered if Path(f).suffix.lower() in PICKLE_SUFFIXES]
        if pickles:
            raise SourceError(_pickle_refusal(name, pickles))
        raise SourceError(f"{name} has no {sub}{WEIGHTS}; it is not a ganxfer {role} "
                          f"(a ganxfer repo holds {sub}{CONFIG} and {sub}{WEIGHTS})")
    return check_folder(folder, role, name)


def _snapshot(repo: str, revision: str | None, repo_type: str, patterns: list[str], name: str, instead: str) -> str:
    """``snapshot_download`` limited to ``patterns``, with each failure turned into one line."""
    try:
        return snapshot_download(repo, repo_type=repo_type, revision=revision, allow_patterns=patterns,
                                 cache_dir=hub_cache(), local_files_only=hub_offline(), library_name="ganxfer",
                                 library_version=__version__)
    except LocalEntryNotFoundError:
        if hub_offline():
            raise SourceError(f"{name} is not in the Hub cache ({hub_cache()}) and HF_HUB_OFFLINE=1 forbids "
                              f"downloading it; run once online without HF_HUB_OFFLINE, or {instead}") from None
        raise SourceError(f"{name} could not be downloaded (no connection to the Hub?) and is not in the Hub "
                          f"cache ({hub_cache()}); check the connection, or {instead}") from None
    except RevisionNotFoundError:
        raise SourceError(f"{name}: the revision '{revision}' does not exist on the Hub") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise SourceError(f"{name} was not found on the Hub, or is private or gated "
                          "(log in with `hf auth login` if you have access)") from None
    except HfHubHTTPError as e:
        raise SourceError(f"{name}: the Hub answered {str(e).splitlines()[0]}") from None


def _repo_files(repo: str, revision: str | None, snapshot: Path) -> list[str]:
    """Files a repo offers, as far as known without reading any: the Hub's listing, else the cached snapshot."""
    if not hub_offline():
        try:
            return HfApi().list_repo_files(repo, revision=revision)
        except NETWORK_ERRORS:
            pass
    return [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*")] if snapshot.is_dir() else []


def load_generator(source: str) -> nn.Module:
    """An eval-mode generator from a run folder, exported folder, bundled name or Hub id ``owner/name[@rev]``.

    ``.sample(n, seed=...)`` returns ``n`` images (n, C, H, W) in [-1, 1]; loading is strict and reads
    ``model.safetensors`` only.
    """
    return load_model(resolve(source, "generator"), "generator")


# --- datasets ------------------------------------------------------------------------------------------


def fetch_dataset(repo: str) -> Path:
    """A local folder of images for ``data.path: hub:owner/name[@revision]``, fetched through the Hub cache.

    The dataset repo holds image files, or parquet shards with an image column (a struct with ``bytes``, as
    ``datasets`` stores its Image feature); parquet images are extracted once into a folder next to the
    cached snapshot (or under ``$GANXFER_CACHE`` when the Hub cache is read-only). Only the train split is
    used when the shards name one.
    """
    from ganxfer.data import IMAGE_EXTENSIONS, list_images

    parsed = parse_hub_id(repo)
    if parsed is None:
        raise HubDataError(f"data.path hub:{repo}: expected hub:owner/name[@revision]")
    repo_id, revision = parsed
    name = f"Hub dataset {repo_id}{_at(revision)}"
    patterns = [f"*{ext}" for ext in IMAGE_EXTENSIONS] + [f"*{ext.upper()}" for ext in IMAGE_EXTENSIONS]
    try:
        snapshot = Path(_snapshot(repo_id, revision, "dataset", patterns + ["*.parquet"], name,
                                  f"download it (hf download {repo_id} --repo-type dataset) or set data.path "
                                  "to a local folder of images"))
    except SourceError as e:
        raise HubDataError(str(e)) from None
    if snapshot.is_dir() and list_images(snapshot):
        return snapshot
    shards = sorted(snapshot.rglob("*.parquet")) if snapshot.is_dir() else []
    train = [s for s in shards if re.search(r"(^|[/_.-])train([/_.-]|$)", s.relative_to(snapshot).as_posix())]
    if not shards:
        raise HubDataError(f"{name} holds neither image files ({', '.join(IMAGE_EXTENSIONS)}) nor parquet shards")
    return _extracted(snapshot, train or shards, name)


def _extracted(snapshot: Path, shards: list[Path], name: str) -> Path:
    """The folder of images extracted from ``shards``; extract them once, atomically, when missing."""
    storage = snapshot.parent.parent  # <cache>/datasets--owner--name
    candidates = [storage / "ganxfer-images" / snapshot.name,
                  ganxfer_cache() / "hub-datasets" / storage.name / snapshot.name]
    for folder in candidates:
        if folder.is_dir():
            return folder
    for folder in candidates:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
            break
        except OSError:
            continue
    else:
        raise HubDataError(f"{name}: no writable folder to extract its parquet images into; set GANXFER_CACHE")
    try:
        count = _write_parquet_images(shards, tmp, name)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: extracted %d images from %d parquet shard(s) into %s", name, count, len(shards), folder)
    return folder


def _write_parquet_images(shards: list[Path], out: Path, name: str) -> int:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise HubDataError(f"{name} is stored as parquet, which needs pyarrow: pip install 'ganxfer[hub]'") from None
    count = 0
    for shard in shards:
        pf = pq.ParquetFile(shard)
        column = _image_column(pf.schema_arrow)
        if column is None:
            raise HubDataError(f"{name}: {shard.name} has no image column (a struct with bytes, as datasets' "
                               "Image feature stores, or binary bytes)")
        for batch in pf.iter_batches(batch_size=256, columns=[column]):
            for cell in batch.column(0).to_pylist():
                data, path = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (cell, None)
                if data:
                    (out / f"{count:08d}{_image_suffix(data, path)}").write_bytes(data)
                    count += 1
    if not count:
        raise HubDataError(f"{name}: its parquet shards hold no image bytes")
    return count


def _image_column(schema) -> str | None:
    """The Image feature named in datasets' schema metadata, else the first struct column with bytes."""
    import pyarrow as pa

    meta = (schema.metadata or {}).get(b"huggingface")
    if meta:
        features = json.loads(meta).get("info", {}).get("features", {})
        for key, feature in features.items():
            if isinstance(feature, dict) and feature.get("_type") == "Image" and key in schema.names:
                return key
    for f in schema:
        if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0:
            return f.name
    for f in schema:
        if (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)) and f.name in ("image", "img"):
            return f.name
    return None


def _image_suffix(data: bytes, path: str | None) -> str:
    from ganxfer.data import IMAGE_EXTENSIONS

    if path and Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        return Path(path).suffix.lower()
    for magic, suffix in ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"BM", ".bmp")):
        if data.startswith(magic):
            return suffix
    return ".webp" if data[8:12] == b"WEBP" else ".png"  # PIL decodes by content, not by name


# --- push ----------------------------------------------------------------------------------------------


def push(source: str, repo_id: str, private: bool = False, revision: str | None = None,
         with_discriminator: bool = False, dry_run_dir: str | Path | None = None, license: str = "apache-2.0",
         hardware: str | None = None, space: str | None = None) -> str:
    """Upload ``source``'s generator (and discriminator), recipe, sample grid and model card to ``repo_id``; with
    ``space``, also a Gradio Space serving its demo, linked from the card.

    With ``dry_run_dir`` the exact upload folder is written there (with ``space``: ``model/`` and ``space/`` in
    it) and nothing touches the network. Returns the repo URL (and the Space's), or the dry-run folder.
    """
    from ganxfer.card import build_upload
    from ganxfer.space import build_space

    if parse_hub_id(repo_id) is None or "@" in repo_id:
        raise PushError(f"REPO_ID '{repo_id}' must be owner/name; pass a branch with --revision")
    if space is not None and (parse_hub_id(space) is None or "@" in space):
        raise PushError(f"--space '{space}' must be owner/name, the id of a Space")
    model = f"{repo_id}{_at(revision)}"  # what the Space loads

    def write(out: Path) -> tuple[Path, list[str]]:
        folder = out / "model" if space else out
        files = build_upload(source, repo_id, folder, with_discriminator, license, hardware, space)
        if space:
            build_space(model, space, out / "space")
        return folder, files

    if dry_run_dir is not None:
        out = Path(dry_run_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise PushError(f"--dry-run {out} already exists and is not an empty folder; pick a new folder")
        write(out)
        return str(out)
    if hub_offline():
        raise PushError(f"HF_HUB_OFFLINE=1 forbids uploading to {repo_id}; unset it to push, "
                        "or write the folder with --dry-run DIR")
    with tempfile.TemporaryDirectory(prefix="ganxfer-push-") as tmp:
        folder, files = write(Path(tmp) / "upload")
        api = HfApi(library_name="ganxfer", library_version=__version__)
        target = repo_id
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
            api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                              revision=revision, commit_message=f"Upload ganxfer generator ({len(files)} files)")
            if space:
                target = space
                space_url = api.create_repo(space, private=private, exist_ok=True, repo_type="space",
                                            space_sdk="gradio")
                api.upload_folder(repo_id=space, folder_path=Path(tmp) / "upload" / "space", repo_type="space",
                                  commit_message=f"ganxfer demo of {model}")
        except NETWORK_ERRORS as e:
            raise PushError(f"push to {target} failed: {str(e).splitlines()[0]} "
                            "(log in with `hf auth login` using a token that can write)") from None
    where = f"{url}/tree/{revision}" if revision else str(url)
    return f"{where} (Space: {space_url})" if space else where
