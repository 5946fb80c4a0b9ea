"""Image features for evaluation and the on-disk cache of the reference images' features.

Features are torch-fidelity's ``inception-v3-compat`` (the TF FID Inception, 2015-12-05), 2048-d pool features, for
every metric; weights come from torch-fidelity's download cache, ``$TORCH_HOME/hub/checkpoints``. Real images go
through :func:`ganxfer.data.load_data`, the training resize path; generated images are quantised to uint8 with
:func:`ganxfer.data.to_uint8`, exactly like saved PNGs; grayscale is repeated to RGB. Features of image sets are
cached as safetensors in ``$GANXFER_CACHE/fid-stats`` (default ``~/.cache/ganxfer/fid-stats``), keyed by a
fingerprint of the files (names, sizes, mtimes) and the preprocessing (resolution, channels, limit, extractor).
:mod:`ganxfer.metrics` scores them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr
from pathlib import Path

import torch
from torch import nn

from ganxfer.cache import ganxfer_cache, mnist_root
from ganxfer.data import ImageSet, image_source, load_data, to_uint8
from ganxfer.errors import GanxferError, WeightsError
from ganxfer.images import list_images
from ganxfer.schema import DataConfig

log = logging.getLogger(__name__)

EXTRACTOR = "inception-v3-compat"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
CACHE_FORMAT = 1  # bump when cached features change meaning
GEN_CHUNK = 500  # generated images per .sample() call: the images depend on the seed only, not on --batch
# Extra feature extractors by name -> factory(device) returning a module with ``.name`` that maps uint8
# (B, 3, H, W) to float (B, D). Stand-ins for tests and plugins; torch-fidelity's registry is the fallback.
EXTRACTORS: dict[str, Callable[[torch.device], nn.Module]] = {}


class FeaturesError(GanxferError):
    """A feature-extractor problem, phrased as one line for the user."""


def cache_dir() -> Path:
    """``fid-stats`` in the ganxfer cache (``$GANXFER_CACHE``, else ``~/.cache/ganxfer``)."""
    return ganxfer_cache() / "fid-stats"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- features --------------------------------------------------------------------------------------------


class FidelityFeatures(nn.Module):
    """A torch-fidelity feature extractor reduced to uint8 (B, 3, H, W) -> float32 (B, D) of one layer."""

    def __init__(self, extractor: nn.Module, name: str) -> None:
        super().__init__()
        self.net, self.name = extractor, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def load_extractor(name: str = EXTRACTOR, device: torch.device | str | None = None) -> nn.Module:
    """The feature network ``name`` on ``device``; missing weights offline raise :class:`WeightsError`."""
    device = torch.device(device) if device is not None else default_device()
    if name in EXTRACTORS:
        return EXTRACTORS[name](device).eval().to(device)
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import create_feature_extractor

    if name not in FEATURE_EXTRACTORS_REGISTRY:
        known = sorted([*FEATURE_EXTRACTORS_REGISTRY, *EXTRACTORS])
        raise FeaturesError(f"feature extractor '{name}' is unknown; known: {', '.join(known)}")
    layer = FEATURE_EXTRACTORS_REGISTRY[name].get_default_feature_layer_for_metric("fid")
    try:
        with redirect_stderr(io.StringIO()):  # torch.hub's "Downloading: ..." line; the error says it all
            net = create_feature_extractor(name, [layer], cuda=False, verbose=False)
    except Exception as e:  # no network, proxy, truncated file: all end the same way for the user
        where = Path(torch.hub.get_dir()) / "checkpoints"
        what = f"{INCEPTION_FILE} is not in {where}" if name == EXTRACTOR else f"the {name} weights are not cached"
        raise WeightsError(f"feature extractor {name}: {what} and could not be downloaded ({type(e).__name__}); "
                           "set TORCH_HOME to a folder holding hub/checkpoints/ with the weights") from None
    return FidelityFeatures(net, name).to(device)


def rgb(images: torch.Tensor) -> torch.Tensor:
    """Grayscale repeated to RGB; RGB as it is."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


@torch.no_grad()
def features_of(batches: Iterator[torch.Tensor], extractor: nn.Module, total: int | None = None,
                desc: str | None = None) -> torch.Tensor:
    """float32 CPU features of uint8 (B, C, H, W) batches (C = 1 is repeated to RGB); with ``desc``, a
    progress bar over ``total`` images on stderr."""
    from tqdm.auto import tqdm

    device = next(extractor.parameters(), torch.empty(0)).device
    out = []
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # full fp32 (no TF32), whatever training asked for
    try:
        with tqdm(total=total, desc=desc, unit="img", disable=desc is None, leave=False, dynamic_ncols=True) as bar:
            for b in batches:
                out.append(extractor(rgb(b).to(device, non_blocking=True)).float().cpu())
                bar.update(len(b))
    finally:
        torch.set_float32_matmul_precision(precision)
    return torch.cat(out) if out else torch.empty(0)


def image_batches(data, batch: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(data), batch):
        yield data.batch(torch.arange(start, min(start + batch, len(data))))


def generated_batches(generator: nn.Module, num: int, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """``num`` images from ``generator.sample`` quantised to uint8 like saved PNGs, ``batch`` at a time."""
    for k, start in enumerate(range(0, num, GEN_CHUNK)):
        images = to_uint8(generator.sample(min(GEN_CHUNK, num - start), seed=seed * 1_000_003 + k))
        yield from images.split(batch)


# --- reference cache ---------------------------------------------------------------------------------------


def _files_of(cfg: DataConfig) -> tuple[str, list[tuple[str, int, int]]]:
    """(where the data lives, [(file, size, mtime_ns)]) for exactly the files ``load_data(cfg)`` reads."""
    root = image_source(cfg.path)
    if root is None:
        raw = mnist_root() / "MNIST" / "raw"
        files = sorted(p for p in raw.glob("train-*") if p.is_file()) if raw.is_dir() else []
        return str(raw.resolve()) if raw.is_dir() else str(raw), [(p.name, *_stat(p)) for p in files]
    if not root.exists():
        return str(root), []  # load_data raises the user-facing error
    root = root.resolve()
    names = list_images(root)[: cfg.limit] if cfg.limit else list_images(root)
    if zipfile.is_zipfile(root):
        return str(root), [(root.name, *_stat(root)), *[(n, 0, 0) for n in names]]
    return str(root), [(n, *_stat(root / n)) for n in names]


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def fingerprint(cfg: DataConfig, extractor: str, device: str = "cpu") -> str:
    """A key for the features of ``cfg``'s images: the files, the preprocessing, the extractor and the kind of
    device that ran it (a GPU's kernels round differently from a CPU's)."""
    where, files = _files_of(cfg)
    limit = cfg.limit if cfg.path == "mnist" else None  # elsewhere the file list below is already cut
    key = {"format": CACHE_FORMAT, "path": cfg.path, "where": where, "resolution": cfg.resolution,
           "channels": cfg.channels, "limit": limit, "extractor": extractor}
    if device != "cpu":  # CPU keys stay as they were, so existing caches still hit
        key["device"] = device
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    for name, size, mtime in files:
        h.update(f"{name}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()[:32]


def device_of(extractor: nn.Module) -> str:
    """The kind of device an extractor runs on: 'cpu', 'cuda', ..."""
    return next(extractor.parameters(), torch.empty(0)).device.type


def cached_features(cfg: DataConfig, extractor: str, cache: Path | None = None,
                    device: str = "cpu") -> torch.Tensor | None:
    """The cached features of ``cfg``'s images by ``extractor`` (a name) on ``device`` (a kind), or None."""
    import safetensors.torch

    key = fingerprint(cfg, extractor, device)
    path = (Path(cache) if cache is not None else cache_dir()) / f"{key}.safetensors"
    if not path.is_file():
        return None
    log.info("features of %s: cache hit %s", cfg.path, path)
    return safetensors.torch.load_file(str(path))["features"]


def dataset_features(cfg: DataConfig, extractor: nn.Module, batch: int = 64, cache: Path | None = None,
                     data: ImageSet | None = None) -> tuple[torch.Tensor, bool]:
    """Features of the images ``load_data(cfg)`` yields, and whether they came from the on-disk cache.
    ``data``: those images, already loaded (saves decoding a folder twice on a cache miss)."""
    import safetensors.torch

    cache = Path(cache) if cache is not None else cache_dir()
    hit = cached_features(cfg, extractor.name, cache, device_of(extractor))
    if hit is not None:
        return hit, True
    path = cache / f"{fingerprint(cfg, extractor.name, device_of(extractor))}.safetensors"
    data = load_data(cfg) if data is None else data
    t0 = time.time()
    feats = features_of(image_batches(data, batch), extractor, len(data), desc=f"features of {cfg.path}")
    log.info("features of %d images from %s in %.1fs; cached in %s", len(feats), cfg.path, time.time() - t0, path)
    meta = {"data": cfg.path, "resolution": str(cfg.resolution), "channels": str(cfg.channels),
            "limit": str(cfg.limit), "extractor": extractor.name, "num": str(len(feats))}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:  # bytes written by Python: a full or read-only disk is an OSError, and only costs the cache
        cache.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(safetensors.torch.save({"features": feats.contiguous()}, metadata=meta))
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        log.warning("could not cache the features in %s (%s); the next run extracts them again", cache, e.strerror)
    return feats, False
