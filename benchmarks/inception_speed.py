"""Time of torch-fidelity's Inception (inception-v3-compat) feature extraction, per 1,000 images.

Times ``--images`` real anime faces (64x64, upsampled to 299 inside the network) after one warm-up batch,
and extrapolates to 1,000 images; the row says how many images were really timed and the load average,
since other work on the machine slows a CPU measurement down.

    source ../shared/env.sh && python benchmarks/inception_speed.py --images 64
    python benchmarks/inception_speed.py --images 2000 --device cuda --batch 200
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

import torch
from results import append_row, git_commit, machine

from ganxfer.data import load_data
from ganxfer.metrics import image_batches, load_extractor
from ganxfer.schema import DataConfig

HEADING = "## Inception feature extraction time (benchmarks/inception_speed.py)"
COLUMNS = ("| date | commit | machine | device | batch | images timed | s per image | s per 1,000 images "
           "(extrapolated) | load avg (1 min) |\n|---|---|---|---|---|---|---|---|---|")


def measure(n: int, batch: int, device: str) -> float:
    """Seconds per image over ``n`` images, after a warm-up batch."""
    root = Path(os.environ["GANXFER_DATA"]) / "anime-faces-64"
    data = load_data(DataConfig(path=str(root), resolution=64, channels=3, limit=n + batch))
    net = load_extractor(device=device)
    batches = list(image_batches(data, batch))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        net(batches[0].to(device))  # warm-up: allocation, kernels, caches
        sync()
        t0, done = time.perf_counter(), 0
        for b in batches[1:]:
            b = b[: n - done]
            if len(b):
                net(b.to(device))
                done += len(b)
        sync()
    return (time.perf_counter() - t0) / done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = ap.parse_args()
    per_image = measure(args.images, args.batch, args.device)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    row = (f"| {datetime.date.today()} | {git_commit()} | {machine()} | "
           f"{device} | {args.batch} | {args.images} | {per_image:.3f} | {per_image * 1000:.0f} s "
           f"({per_image * 1000 / 60:.1f} min) | {os.getloadavg()[0]:.1f} |")
    print(f"{per_image:.3f} s per image = {per_image * 1000:.0f} s per 1,000 images "
          f"(extrapolated from {args.images} on {device}, {1 / per_image:.2f} images/s)")
    append_row(args.results, HEADING, COLUMNS, row)


if __name__ == "__main__":
    main()
