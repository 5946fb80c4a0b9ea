"""Training images: MNIST, folders or zips of images, decoded once into RAM when they fit, else streamed.

A set larger than ``data.in_memory_gb`` is streamed through a ``torch.utils.data.DataLoader`` whose
``batch_sampler`` is the order the loop asks for, with ``data.workers`` persistent worker processes, each
holding its own open zip.

Batches are drawn by index from a per-epoch permutation that depends only on (seed, epoch), so the
position in the data is a pure function of the number of images already shown: resuming needs no
sampler state, and every process of a multi-GPU run agrees on the order.

Training reads its batches through a :class:`Feed`, on the training device: an in-memory set that fits there
lives on the GPU with its labels and is gathered there; a larger one, and a streamed one, are assembled in
page-locked host memory and copied without blocking, a streamed one with the next batches decoding ahead.
"""

from __future__ import annotations

import logging
import os
import signal
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ganxfer import hubdata
from ganxfer.cache import mnist_root
from ganxfer.images import IMAGE_EXTENSIONS, DataError, open_image, to_square, walk_images
from ganxfer.schema import DataConfig

log = logging.getLogger(__name__)
MNIST_CLASSES = 10
MIN_TRAINING_IMAGES = 100  # a folder with fewer is refused for training: a GAN only memorises so few
DEVICE_SHARE = 0.5  # an in-memory set moves to the GPU when it takes at most this share of its free memory
CPU = torch.device("cpu")


def load_mnist(train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits as uint8 (N, 28, 28) and their labels (N,). Downloads only when the files are missing."""
    from torchvision.datasets import MNIST

    root = mnist_root()
    try:
        ds = MNIST(str(root), train=train, download=False)
        return ds.data, ds.targets
    except RuntimeError:
        pass
    try:
        ds = MNIST(str(root), train=train, download=True)
        return ds.data, ds.targets
    except Exception as e:  # network down, proxy, disk: all end the same way for the user
        raise DataError(f"MNIST is not under {root} and could not be downloaded ({type(e).__name__}); "
                        "set GANXFER_DATA to a folder holding mnist/MNIST/raw") from None


@dataclass
class ImageSet(torch.utils.data.Dataset):
    """N images of shape (C, R, R) as uint8, either in ``pixels`` or decoded from ``files`` on demand, and their
    class ``labels`` (N,) and class names where the data has them: MNIST, or a folder or zip with one subfolder
    per class (torchvision's ``ImageFolder`` layout).

    As a torch ``Dataset``, item ``i`` is ``(file name, (R, R, C) uint8 array or None when it fails to decode)``.
    """

    resolution: int
    channels: int
    pixels: torch.Tensor | None = None
    root: Path | None = None
    files: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    unreadable_folders: list[str] = field(default_factory=list)  # subfolders that could not be listed
    labels: torch.Tensor | None = None
    classes: list[str] = field(default_factory=list)
    workers: int = 2
    device: torch.device = field(default=CPU, init=False)  # where :class:`Feed` delivers batches: see :meth:`to`
    _copied: bool = field(default=False, init=False, repr=False)  # batches are copied there from host memory
    _archive: tuple[int, zipfile.ZipFile | None] | None = field(default=None, init=False, repr=False)  # (pid, zip)
    _loader: torch.utils.data.DataLoader | None = field(default=None, init=False, repr=False)
    _request: Iterable[list[int]] = field(default_factory=list, init=False, repr=False)
    _stream: Iterator | None = field(default=None, init=False, repr=False)  # the loader, while reading ahead

    def __len__(self) -> int:
        return len(self.pixels) if self.pixels is not None else len(self.files)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray | None]:
        return self.files[i], self._decode(self.files[i])

    def __getstate__(self) -> dict:  # for spawned workers: no open zip, no loader, no requests
        return {**self.__dict__, "_archive": None, "_loader": None, "_request": [], "_stream": None}

    def _zip(self) -> zipfile.ZipFile | None:
        """``root`` opened as a zip once per process (None for a folder)."""
        if self._archive is None or self._archive[0] != os.getpid():
            self._archive = (os.getpid(), zipfile.ZipFile(self.root) if zipfile.is_zipfile(self.root) else None)
        return self._archive[1]

    def _decode(self, name: str) -> np.ndarray | None:
        try:
            with open_image(self.root, name, self._zip()) as img:
                return to_square(img, self.resolution, self.channels)
        except Exception:  # any decoder failure (or guard) makes the file unreadable, never the run
            return None

    def _check(self, name: str) -> bool:
        """Whether ``name`` decodes: what :meth:`_decode` does, minus the resize, and JPEGs at reduced size."""
        try:
            with open_image(self.root, name, self._zip()) as img:
                img.draft(img.mode, (self.resolution, self.resolution))
                img.load()
            return True
        except Exception:
            return False

    def _map(self, fn, names: list[str]) -> list:
        """``fn`` over every name with ``workers`` threads: the one pass that checks or decodes the whole set."""
        if self.workers <= 1 or len(names) < 8:
            return [fn(n) for n in names]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(fn, names, chunksize=64))

    def decode(self, names: list[str]) -> list[np.ndarray | None]:
        return self._map(self._decode, names)

    def loader(self) -> torch.utils.data.DataLoader:
        """The streaming DataLoader: its batch sampler yields the parts of the batches asked for last, and its
        workers keep two parts each in flight (``prefetch_factor``), which is the stream's read-ahead."""
        if self._loader is None:
            workers = self.workers if self.workers > 1 else 0
            self._loader = torch.utils.data.DataLoader(self, batch_sampler=_Requested(self), num_workers=workers,
                                                       collate_fn=_stacked, persistent_workers=workers > 0,
                                                       worker_init_fn=_leave_signals_to_the_loop)
        return self._loader

    def _parts(self, idx: torch.Tensor) -> list[list[int]]:
        """A batch's indices split in one part per worker: the loader's unit of work."""
        return [part.tolist() for part in idx.tensor_split(max(1, min(self.workers, len(idx))))]

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, R, R) for the given indices, where the set holds them (a streamed set: in host memory).
        On a streamed set it drops what a :class:`Feed` read ahead."""
        if self.pixels is not None:
            return self.pixels[idx]
        self._request, self._stream = self._parts(idx), None
        return self._joined(list(self.loader()), len(idx), pin=False).permute(0, 3, 1, 2)

    def _joined(self, parts: list[tuple[list[str], torch.Tensor | None]], n: int, pin: bool) -> torch.Tensor:
        """The loader's parts of one batch as uint8 (n, R, R, C), in page-locked memory when ``pin``."""
        for bad, _ in parts:
            if bad:  # it decoded when the set was checked: it changed on disk since
                raise DataError(f"{self.root / bad[0]} no longer decodes (it was readable when training started); "
                                "restore or remove it, then continue with --resume")
        out = torch.empty(n, self.resolution, self.resolution, self.channels, dtype=torch.uint8, pin_memory=pin)
        return torch.cat([a for _, a in parts], out=out)

    # --- what a Feed reads ---------------------------------------------------------------------------------

    def to(self, device: torch.device | str) -> ImageSet:
        """Deliver training batches on ``device``; nothing changes for the CPU. An in-memory set moves there
        once, with its labels, when it takes at most ``DEVICE_SHARE`` of the device's free memory; a larger one
        stays in host memory, as a streamed set does, and each batch is gathered into page-locked memory (on a
        GPU) and copied without blocking."""
        self.device = torch.device(device)
        if self.device.type == "cpu":
            return self
        free = _free_bytes(self.device)
        if self.pixels is not None and (free is None or self.pixels.nbytes <= DEVICE_SHARE * free):
            self.pixels = self.pixels.to(self.device)
            self.labels = self.labels.to(self.device) if self.labels is not None else None
            return self
        if self.pixels is not None:
            log.info("the %.2f GB of decoded images stay in host memory: over %g of the %.2f GB free on %s",
                     self.pixels.nbytes / 2**30, DEVICE_SHARE, free / 2**30, self.device)
        self._copied = True
        return self

    @property
    def index_device(self) -> torch.device:
        """Where a batch's indices are used: the pixels' device for an in-memory set, else the CPU."""
        return self.pixels.device if self.pixels is not None else CPU

    def _host(self, like: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``like[idx]`` gathered into host memory, page-locked when batches go to a GPU."""
        out = torch.empty(len(idx), *like.shape[1:], dtype=like.dtype, pin_memory=self.device.type == "cuda")
        return torch.index_select(like, 0, idx, out=out)

    def _delivered(self, images: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor,
                                                                                   torch.Tensor | None]:
        """Host batches on :attr:`device`: copies that do not block, from page-locked memory."""
        return (images.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True) if labels is not None else None)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(uint8 images (B, C, R, R), labels (B,) or None) of an in-memory set, on :attr:`device`."""
        if not self._copied:
            return self.pixels[idx], self.labels[idx] if self.labels is not None else None
        return self._delivered(self._host(self.pixels, idx),
                               self._host(self.labels, idx) if self.labels is not None else None)

    def stream(self, batches: Iterator[torch.Tensor]) -> None:
        """Start decoding ``batches`` (index tensors, in the order :meth:`streamed` takes them) in the loader's
        workers, ahead of their use; it replaces any stream before it, dropping what that one read ahead."""
        self._request = (part for idx in batches for part in self._parts(idx))
        self._stream = iter(self.loader())

    def streamed(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stream's next batch, whose indices are ``idx``, like :meth:`take`."""
        parts = [next(self._stream) for _ in self._parts(idx)]
        images = self._joined(parts, len(idx), pin=self.device.type == "cuda").permute(0, 3, 1, 2)
        labels = self._host(self.labels, idx) if self.labels is not None else None
        return self._delivered(images, labels) if self._copied else (images, labels)


def _stacked(items: list[tuple[str, np.ndarray | None]]) -> tuple[list[str], torch.Tensor | None]:
    """A part of a batch as a worker hands it over: the names that no longer decode, else its images as one
    uint8 (b, R, R, C) tensor (which reaches the training process through shared memory)."""
    bad = [name for name, a in items if a is None]
    return bad, None if bad else torch.from_numpy(np.stack([a for _, a in items]))


def _free_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` as its backend reports it (None where it has no such call)."""
    info = getattr(getattr(torch, device.type, None), "mem_get_info", None)
    return info(device)[0] if info is not None else None


def _leave_signals_to_the_loop(_: int) -> None:
    """Ctrl-C reaches the whole process group: workers ignore it, so the loop can finish its step and save."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Requested(torch.utils.data.Sampler):
    """The batch sampler of :meth:`ImageSet.loader`: the order asked for (one batch, or a stream of them, split
    in parts one per worker), read anew each time the persistent loader is iterated."""

    def __init__(self, data: ImageSet) -> None:
        self.data = data

    def __iter__(self):
        return iter(self.data._request)


def _from_mnist(cfg: DataConfig) -> ImageSet:
    digits, labels = load_mnist()
    if cfg.limit:
        digits, labels = digits[: cfg.limit], labels[: cfg.limit]
    out = []
    for chunk in digits.split(4096):  # the tutorial's bilinear Resize, on the whole tensor
        x = F.interpolate(chunk[:, None].float(), size=(cfg.resolution,) * 2, mode="bilinear",
                          antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    pixels = torch.cat(out).expand(-1, cfg.channels, -1, -1).contiguous()
    return ImageSet(cfg.resolution, cfg.channels, pixels=pixels, labels=labels,
                    classes=[str(i) for i in range(MNIST_CLASSES)])


def folder_classes(files: list[str]) -> tuple[list[str], torch.Tensor] | None:
    """Class names and labels of files in the ``ImageFolder`` layout: every image inside a first-level subfolder
    (its class), two subfolders or more; None for any other layout."""
    tops = [parts[0] if len(parts) > 1 else None for parts in (Path(f).parts for f in files)]
    names = sorted(set(tops) - {None})
    if None in tops or len(names) < 2:
        return None
    index = {name: i for i, name in enumerate(names)}
    return names, torch.tensor([index[t] for t in tops])


def _from_files(cfg: DataConfig, root: Path) -> ImageSet:
    if not root.exists():
        raise DataError(f"data.path {root} does not exist; point it at a folder or zip of images, or 'mnist'")
    files, folders = walk_images(root)  # a device or FIFO is refused before anything reads it
    if "." in folders:
        raise DataError(f"data.path {root} cannot be read (permission denied); make it readable")
    if cfg.limit:
        files = files[: cfg.limit]
    if not files:
        raise DataError(f"data.path {root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    data = ImageSet(cfg.resolution, cfg.channels, root=root, files=files, workers=max(cfg.workers, 1),
                    unreadable_folders=folders)
    stream = len(files) * cfg.channels * cfg.resolution**2 > cfg.in_memory_gb * 2**30
    if stream:  # every file is decoded once now, so that streaming skips exactly what decoding into RAM skips
        log.info("streaming %d images from %s (larger than data.in_memory_gb); checking that each decodes",
                 len(files), root)
        ok = data._map(data._check, files)
    else:
        arrays = data.decode(files)
        ok = [a is not None for a in arrays]
    data.unreadable = [f for f, good in zip(files, ok, strict=True) if not good]
    data.files = [f for f, good in zip(files, ok, strict=True) if good]
    data.classes, data.labels = folder_classes(data.files) or ([], None)
    if not data.files:
        raise DataError(f"none of the {len(files)} images under {root} could be decoded")
    if not stream:
        data.pixels = torch.from_numpy(np.stack([a for a in arrays if a is not None])).permute(0, 3, 1, 2).contiguous()
    return data


def image_source(path: str) -> Path | None:
    """Where ``data.path`` images come from: None for MNIST, else a local folder or zip (a ``hub:owner/name``
    dataset is fetched, and its parquet images extracted, first)."""
    if path == "mnist":
        return None
    if path.startswith("hub:"):
        return hubdata.fetch_dataset(path[4:])
    return Path(path).expanduser()


def fetch_data(cfg: DataConfig) -> None:
    """Bring what ``data.path`` names into its local cache, without decoding it: a ``hub:`` dataset (its parquet
    images extracted) or MNIST, downloaded when missing; a folder or zip needs nothing. A multi-process run calls
    it in one process first, so that the others find it in place rather than race to write it."""
    if cfg.path == "mnist":
        load_mnist()
    else:
        image_source(cfg.path)


def load_data(cfg: DataConfig) -> ImageSet:
    """Build the set of images described by ``data.*``; their count, and the unreadable files, are reported."""
    root = image_source(cfg.path)
    data = _from_mnist(cfg) if root is None else _from_files(cfg, root)
    if data.unreadable:
        shown = ", ".join(data.unreadable[:3]) + (" ..." if len(data.unreadable) > 3 else "")
        log.warning("skipped %d unreadable image(s) under %s: %s", len(data.unreadable), cfg.path, shown)
    if data.unreadable_folders:
        folders = data.unreadable_folders
        shown = ", ".join(folders[:3]) + (" ..." if len(folders) > 3 else "")
        log.warning("skipped %d folder(s) under %s that could not be read (permission denied): %s; make them "
                    "readable to train on their images", len(folders), cfg.path, shown)
    where = "decoded into memory" if data.pixels is not None else "streamed from disk"
    limit = f", the first {cfg.limit} (data.limit)" if cfg.limit else ""
    log.info("%d images from %s%s at %d px, %s", len(data), cfg.path, limit, cfg.resolution, where)
    return data


def load_training_data(cfg: DataConfig, classes: int = 0) -> ImageSet:
    """:func:`load_data`, refusing a folder or zip that holds too few readable images to train a GAN on, and,
    for a class-conditional D of ``classes`` classes, data without exactly that many classes."""
    data = load_data(cfg)
    if classes and data.labels is None:
        raise DataError(f"discriminator.conditional={classes} needs labelled images: data.path=mnist, or a folder "
                        f"with one subfolder per class (ImageFolder layout), which {cfg.path} is not; put each "
                        "class in its own subfolder, or set discriminator.conditional=0")
    if classes and len(data.classes) != classes:
        shown = ", ".join(data.classes[:5]) + (", ..." if len(data.classes) > 5 else "")
        raise DataError(f"discriminator.conditional={classes}, but {cfg.path} holds {len(data.classes)} classes "
                        f"({shown}); set discriminator.conditional={len(data.classes)}")
    if data.root is not None and len(data) < MIN_TRAINING_IMAGES and not cfg.limit:
        folders = f" and {len(data.unreadable_folders)} folder(s)" if data.unreadable_folders else ""
        skipped = f" ({len(data.unreadable)} more{folders} could not be read)" if data.unreadable or folders else ""
        raise DataError(f"data.path {cfg.path} holds only {len(data)} readable images{skipped}; training needs "
                        f"at least {MIN_TRAINING_IMAGES} (a few hundred or more for varied results): add images")
    return data


class BatchPlan:
    """Which images make up the batch that starts at global position ``start`` (images shown so far), as indices
    on ``device``: the permutations are drawn on the CPU, and copied there once per epoch."""

    def __init__(self, n: int, seed: int, device: torch.device = CPU) -> None:
        self.n, self.seed, self.device = n, seed, device
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def perm(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            perm = torch.randperm(self.n, generator=g)
            if self.device.type != "cpu":  # from pageable memory: staged at once, with no wait for the device
                perm = perm.to(self.device, non_blocking=True)
            self._epoch, self._perm = epoch, perm
        return self._perm

    def indices(self, start: int, count: int) -> torch.Tensor:
        out, pos = [], start
        while pos < start + count:
            epoch, offset = divmod(pos, self.n)
            take = min(self.n - offset, start + count - pos)
            out.append(self.perm(epoch)[offset : offset + take])
            pos += take
        return torch.cat(out)


class Feed:
    """One process's training batches: ``feed(start)`` is (uint8 images (b, C, R, R), labels (b,) or None) of
    its ``rows`` of the global batch of ``size`` images that starts at plan position ``start``, on the set's
    :attr:`ImageSet.device`; the same images, in the same order, as ``data.batch(plan.indices(start, size)[rows])``.

    An in-memory set is gathered where it lives, from a plan kept there. A streamed set is read ahead: its
    workers decode the next batches while this one trains. A ``start`` other than the one after the last (the
    first batch, a resume, a stream another read interrupted) drops what was read ahead and restarts there.
    """

    def __init__(self, data: ImageSet, seed: int, size: int, rows: slice) -> None:
        self.data, self.seed, self.size, self.rows = data, seed, size, rows
        self.plan = BatchPlan(len(data), seed, data.index_device)
        self._next: int | None = None  # the start the stream's next batch is for

    def __call__(self, start: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = self.plan.indices(start, self.size)[self.rows]
        if self.data.pixels is not None:
            return self.data.take(idx)
        if start != self._next or self.data._stream is None:
            self.data.stream(self._ahead(start))
        self._next = start + self.size
        return self.data.streamed(idx)

    def _ahead(self, start: int) -> Iterator[torch.Tensor]:
        """The indices of every batch from ``start`` on (its own plan: the stream runs ahead of this one's)."""
        plan = BatchPlan(len(self.data), self.seed)
        return (plan.indices(at, self.size)[self.rows] for at in count(start, self.size))


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return batch.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded the way a saved PNG is."""
    return images.float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
