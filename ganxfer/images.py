"""Image files in and out: list and open (guarded) folders or zips of images, square them, write sample grids.

Every image read for training, evaluation or a Hub dataset goes through :func:`open_image`; every grid of
samples (run, model card, ``ganxfer sample``, demo) through :func:`make_sheet` with :func:`columns` columns.
"""

from __future__ import annotations

import io
import math
import os
import stat
import zipfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ganxfer.errors import GanxferError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_FILE_BYTES = 64 * 2**20  # one image file or zip member; larger ones count as unreadable
MAX_SIDE = 16_384  # pixels along either side (PIL's area guard alone lets a 1 x 89,000,000 strip through)
HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit grayscale (PNG, TIFF) and 32-bit integer modes


class DataError(GanxferError):
    """A data problem, phrased as one line for the user."""


def check_root(path: Path) -> None:
    """Refuse a data path that is neither a folder nor a regular file: reading a device (``/dev/zero``), FIFO or
    socket would never end."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; point it at a folder or zip of images") from None
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise DataError(f"{path} is a special file (a device, FIFO or socket), not a folder or zip of images; "
                        "point it at a folder or zip of images")


def walk_images(path: Path) -> tuple[list[str], list[str]]:
    """Image files under a folder (recursive; regular files only) or inside a zip, sorted by name, and the
    folders that could not be read (permission denied), relative to ``path`` ('.' for ``path`` itself)."""
    check_root(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return sorted(n for n in zf.namelist() if n.lower().endswith(IMAGE_EXTENSIONS)), []
    names, unreadable = [], []
    for folder, _, files in os.walk(path, onerror=lambda e: unreadable.append(os.path.relpath(e.filename, path))):
        names += [os.path.relpath(os.path.join(folder, f), path) for f in files
                  if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))]
    return sorted(names), sorted(unreadable)


def list_images(path: Path) -> list[str]:
    """Image files under a folder (recursive) or inside a zip, sorted by name (:func:`walk_images`)."""
    return walk_images(path)[0]


def open_image(root: Path, name: str, archive: zipfile.ZipFile | None = None) -> Image.Image:
    """One image of a folder or zip, opened lazily, with two guards: files (and zip members, by their declared
    size) over :data:`MAX_FILE_BYTES`, and images over PIL's ``Image.MAX_IMAGE_PIXELS`` (decompression
    bombs), and sides over :data:`MAX_SIDE` raise before any pixel is decoded; so does a file that is no regular
    file (a FIFO named ``x.png``). ``archive``: ``root`` already opened as a zip, read as it is."""
    if archive is None:
        check_root(root)
    if archive is not None or zipfile.is_zipfile(root):
        with zipfile.ZipFile(root) if archive is None else nullcontext(archive) as zf:
            size = zf.getinfo(name).file_size
            data = zf.read(name) if size <= MAX_FILE_BYTES else b""
        img = Image.open(io.BytesIO(data)) if data else None
    else:
        if not (root / name).is_file():
            raise DataError(f"{name} is not a regular file")
        size = (root / name).stat().st_size
        img = Image.open(root / name) if size <= MAX_FILE_BYTES else None
    if img is None:
        raise DataError(f"{name} is {size:,} bytes, over the {MAX_FILE_BYTES:,} a training image may take")
    if img.width * img.height > Image.MAX_IMAGE_PIXELS:
        img.close()
        raise Image.DecompressionBombError(f"{name} has {img.width * img.height:,} pixels, over "
                                           f"Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS:,}")
    if max(img.size) > MAX_SIDE:
        img.close()
        raise DataError(f"{name} is {img.width}x{img.height} px, a side over the {MAX_SIDE:,} px a training image "
                        "may have")
    return img


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit (and integer) grayscale to 8-bit 'L' by scaling 0..65535 to 0..255; PIL's own conversion clips,
    which turns a 16-bit image white. Integer images that hold 8-bit values already are kept as they are."""
    if img.mode not in HIGH_DEPTH:
        return img
    arr = np.asarray(img).astype(np.int64)
    if img.mode != "I" or arr.max(initial=0) > 255:
        arr = (arr.clip(0, 65535) + 128) // 257
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "L")


def upright(img: Image.Image) -> Image.Image:
    """The image as it is shown: turned by its EXIF orientation (phone photos), and any transparency laid
    over white (a transparent PNG or GIF would otherwise show whatever colour its hidden pixels hold)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img


def to_square(img: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """Turn upright, convert mode, resize the short side to ``resolution`` (Lanczos) and center-crop: (H, W, C)
    uint8. An animated GIF gives its first frame."""
    img = to_8bit(upright(img)).convert("L" if channels == 1 else "RGB")
    w, h = img.size
    if max(w, h) > 4 * min(w, h):  # a strip: its middle square first, or the resize below would grow it to GBs
        side = min(w, h)
        img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
        w, h = img.size
    if (w, h) != (resolution, resolution):
        scale = resolution / min(w, h)
        nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
        img = img.resize((nw, nh), Image.LANCZOS)
        left, top = (nw - resolution) // 2, (nh - resolution) // 2
        img = img.crop((left, top, left + resolution, top + resolution))
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def columns(n: int) -> int:
    """Columns of a grid of ``n`` images: ceil(sqrt(n)), so 10 images make 4 columns (and 3 rows)."""
    return max(1, math.ceil(math.sqrt(n)))


def make_sheet(images: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """Images in [-1, 1] (B, C, H, W) as one grid tensor in [0, 1] with :func:`columns` columns."""
    from torchvision.utils import make_grid

    return make_grid(images, nrow=columns(len(images)), padding=padding, normalize=True, value_range=(-1, 1))


def write_grid(images: torch.Tensor, path: str | Path, padding: int = 1) -> Path:
    """Write images in [-1, 1] (B, C, H, W) as one PNG grid (:func:`make_sheet`); return the path."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_sheet(images, padding), str(path))
    return path
