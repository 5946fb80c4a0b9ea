"""The training batches on a GPU, checked against the CPU: each of the three ways a :class:`ganxfer.data.Feed`
delivers them gives the images and labels of the CPU's in-memory set, in the same order, without a host sync.

- ``device``: the in-memory set and its labels live on the GPU, gathered there from a plan kept there;
- ``host``: an in-memory set too large for the GPU (here forced, ``DEVICE_SHARE`` 0), gathered into
  page-locked memory and copied without blocking;
- ``stream``: a streamed set (``data.in_memory_gb`` 0), its workers decoding ahead.

Each runs ``--steps`` batches across epoch boundaries and a resume, under ``torch.cuda.set_sync_debug_mode``
("warn": every synchronising call is counted), and prints one JSON line: identical, syncs, images/s of the feed
alone (the last is no training speed: nothing else runs, and each batch is waited for).

    source ../shared/env.sh && python benchmarks/feed_check.py            # on a GPU machine (--device cpu: smoke)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from ganxfer import data as data_module
from ganxfer.data import BatchPlan, Feed, load_data
from ganxfer.schema import DataConfig


def faces(n: int) -> Path:
    """The first ``n`` anime faces in two class folders, for labels."""
    src = Path(os.environ["GANXFER_DATA"]) / "anime-faces-64"
    root = Path(tempfile.mkdtemp(prefix="feed-check-"))
    for i in range(n):
        folder = root / ("a" if i < n // 2 else "b")
        folder.mkdir(exist_ok=True)
        shutil.copy(src / f"{i:05d}.jpg", folder / f"{i:05d}.jpg")
    return root


def check(mode: str, root: Path, device: torch.device, steps: int, batch: int) -> dict:
    """Feed ``steps`` batches of ``mode`` on ``device`` (a resume half-way), each compared with the CPU's."""
    reference = load_data(DataConfig(path=str(root), resolution=64))
    data = load_data(DataConfig(path=str(root), resolution=64, in_memory_gb=0 if mode == "stream" else 8, workers=4))
    share = data_module.DEVICE_SHARE
    data_module.DEVICE_SHARE = 0.0 if mode == "host" else share
    try:
        data.to(device)
    finally:
        data_module.DEVICE_SHARE = share
    plan, rows = BatchPlan(len(data), seed=1), slice(batch // 2, batch)  # rank 1 of 2
    starts = [k * batch for k in range(steps // 2)] + [7 + k * batch for k in range(steps - steps // 2)]
    feed, same, syncs, seconds = Feed(data, 1, batch, rows), True, 0, 0.0
    for k, start in enumerate(starts):
        if k == steps // 2:
            feed = Feed(data, 1, batch, rows)  # a resume
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            images, labels = feed(start)
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode(0)
                torch.cuda.synchronize(device)  # the copies done, for the time
        seconds += time.perf_counter() - t0
        syncs += sum("synchroniz" in str(w.message) for w in caught)
        idx = plan.indices(start, batch)[rows]
        same &= torch.equal(images.cpu(), reference.batch(idx)) and torch.equal(labels.cpu(), reference.labels[idx])
        same &= images.device.type == device.type
    return {"mode": mode, "device": str(device), "identical": bool(same), "syncs": syncs,
            "on_device": data.pixels is not None and data.pixels.device.type == device.type,
            "feed_images_per_s": round(steps * (batch - batch // 2) / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    root = faces(args.images)
    try:
        for mode in ("device", "host", "stream"):
            print(json.dumps(check(mode, root, torch.device(args.device), args.steps, args.batch)), flush=True)
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
