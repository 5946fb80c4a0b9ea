"""Training throughput of ganxfer's loop against a plain PyTorch DCGAN loop, in one run.

Both train the same DCGAN G and D (fp32, BCE, Adam 2e-4/0.5, one D and one G step per iteration) on the
same anime faces at batch 64. The plain loop is the tutorial's: an ImageFolder-style Dataset decoding the
JPEG folder through a DataLoader (2 workers) every epoch. ganxfer decodes once into a uint8 tensor.
The two alternate in rounds so that machine noise hits both; the result is the ratio of medians.

    source ../shared/env.sh && python benchmarks/throughput.py --images 2000 --steps 12 --rounds 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from results import RESULTS, append_row, git_commit, machine
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from ganxfer.loop import train
from ganxfer.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from ganxfer.recipe import load_recipe

HEADING = "## Training throughput on CPU: ganxfer loop vs a plain PyTorch DCGAN loop (benchmarks/throughput.py)"
COLUMNS = ("| date | commit | machine | batch | plain img/s | ganxfer img/s | ratio | rounds (plain:ganxfer) |\n"
           "|---|---|---|---|---|---|---|---|")


class JpegFolder(Dataset):
    def __init__(self, root: Path, n: int) -> None:
        self.files = sorted(root.glob("*.jpg"))[:n]
        self.tf = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor(),
                                      transforms.Normalize((0.5,) * 3, (0.5,) * 3)])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tf(Image.open(self.files[i]).convert("RGB"))


def plain_loop(root: Path, n_images: int, steps: int, batch: int, device: str = "cpu") -> float:
    """The tutorial loop; returns images/s over ``steps`` iterations after two warm-up iterations."""
    torch.manual_seed(0)
    G, D = DCGANGenerator().to(device), DCGANDiscriminator().to(device)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    loader = DataLoader(JpegFolder(root, n_images), batch_size=batch, shuffle=True, num_workers=2, drop_last=True,
                        pin_memory=device.startswith("cuda"))
    done, t0 = 0, None
    while done < steps + 2:
        for real in loader:
            if done == 2:
                sync(device)
                t0 = time.perf_counter()
            real = real.to(device, non_blocking=True)
            fake = G(torch.randn(batch, 100, device=device))
            ones, zeros = torch.ones(batch, device=device), torch.zeros(batch, device=device)
            loss_d = (F.binary_cross_entropy_with_logits(D(real).logits, ones)
                      + F.binary_cross_entropy_with_logits(D(fake.detach()).logits, zeros))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = F.binary_cross_entropy_with_logits(D(fake).logits, ones)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            done += 1
            if done == steps + 2:
                break
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def sync(device: str) -> None:
    """Wait for the GPU's queued work, so that the clock reads what was done."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ganxfer_loop(root: Path, n_images: int, steps: int, batch: int) -> float:
    """``ganxfer train recipes/anime_dcgan.yaml`` in-process; images/s from metrics.jsonl after warm-up."""
    recipe = load_recipe(Path(__file__).parents[1] / "recipes" / "anime_dcgan.yaml", [
        f"data.path={root}", f"data.limit={n_images}", f"train.batch_size={batch}",
        f"train.kimg={(steps + 2) * batch / 1000}", f"train.log_every_kimg={batch / 1000}",
        "train.sample_every_kimg=0", "train.checkpoint_every_kimg=0"])
    with tempfile.TemporaryDirectory() as run:
        train(recipe, Path(run) / "run")
        rows = [json.loads(x) for x in (Path(run) / "run" / "metrics.jsonl").read_text().splitlines()]
    # every row is one iteration; the first two are warm-up, the last includes the final checkpoint
    times = [batch / r["images_per_s"] for r in rows[2:-1]]
    return len(times) * batch / sum(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    root = Path(os.environ["GANXFER_DATA"]) / "anime-faces-64"
    plain, ours = [], []
    for r in range(args.rounds):
        plain.append(plain_loop(root, args.images, args.steps, args.batch))
        ours.append(ganxfer_loop(root, args.images, args.steps, args.batch))
        print(f"round {r}: plain {plain[-1]:.1f} img/s, ganxfer {ours[-1]:.1f} img/s", flush=True)
    p, o = statistics.median(plain), statistics.median(ours)
    line = (f"| {datetime.date.today()} | {git_commit()} | {machine()} | {args.batch} | {p:.1f} | {o:.1f} | "
            f"{o / p:.2f}x | {' / '.join(f'{a:.1f}:{b:.1f}' for a, b in zip(plain, ours, strict=True))} |")
    print(f"plain {p:.1f} img/s, ganxfer {o:.1f} img/s, ratio {o / p:.2f}x")
    append_row(args.results, HEADING, COLUMNS, line)


if __name__ == "__main__":
    main()
