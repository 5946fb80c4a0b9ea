"""Hub datasets: the local folder of images behind ``data.path: hub:owner/name[@revision]``.

The dataset repo holds image files, or parquet shards with an image column (a struct with ``bytes``, as
``datasets`` stores its Image feature); parquet images are extracted once into a folder next to the cached
snapshot (or under the ganxfer cache when the Hub cache is read-only).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from ganxfer import cache
from ganxfer.cache import at, parse_hub_id
from ganxfer.errors import GanxferError
from ganxfer.images import IMAGE_EXTENSIONS, list_images

log = logging.getLogger(__name__)


class HubDataError(GanxferError):
    """A ``data.path: hub:owner/name`` dataset that cannot be fetched or read, phrased as one line."""


def fetch_dataset(repo: str) -> Path:
    """A local folder of images for ``data.path: hub:owner/name[@revision]``, fetched through the Hub cache.

    The dataset repo holds image files, or parquet shards with an image column (a struct with ``bytes``, as
    ``datasets`` stores its Image feature); parquet images are extracted once into a folder next to the
    cached snapshot (or under ``$GANXFER_CACHE`` when the Hub cache is read-only). Only the train split is
    used when the shards name one.
    """
    parsed = parse_hub_id(repo)
    if parsed is None:
        raise HubDataError(f"data.path hub:{repo}: expected hub:owner/name[@revision]")
    repo_id, revision = parsed
    name = f"Hub dataset {repo_id}{at(revision)}"
    patterns = [f"*{ext}" for ext in IMAGE_EXTENSIONS] + [f"*{ext.upper()}" for ext in IMAGE_EXTENSIONS]
    snapshot = cache.snapshot(repo_id, revision, "dataset", patterns + ["*.parquet"], name,
                              f"download it (hf download {repo_id} --repo-type dataset) or set data.path "
                              "to a local folder of images", HubDataError)
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
                  cache.ganxfer_cache() / "hub-datasets" / storage.name / snapshot.name]
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
        raise HubDataError(f"{name} is stored as parquet, which needs pyarrow: pip install pyarrow "
                           "(or '.[hub]' from a clone)") from None
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
    if path and Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        return Path(path).suffix.lower()
    for magic, suffix in ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"BM", ".bmp")):
        if data.startswith(magic):
            return suffix
    return ".webp" if data[8:12] == b"WEBP" else ".png"  # PIL decodes by content, not by name
