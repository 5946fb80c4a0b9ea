"""CPU cost of one discriminator step: the projected lite0 D (frozen, pretrained, 64x64 native) against the
DCGAN D, in one run.

A D step is what the loop does for D: forward on a real and a fake batch, the loss, backward, Adam step
(DiffAugment and the generator are left out: they cost the same for both). The G pass is D's share of a
generator step: forward on the fakes and backward to the images. Each D comes from its recipe
(anime_projected, anime_dcgan) at batch 32; the two alternate in every round so machine noise hits both,
and the result is the ratio of medians.

    source ../shared/env.sh && python benchmarks/d_cost.py --repeats 5
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

import torch
from results import append_row, git_commit, machine

from ganxfer.loop import optimizer_groups
from ganxfer.losses import d_loss, g_loss
from ganxfer.nets import build_discriminator
from ganxfer.recipe import load_recipe

HEADING = "## D cost per step on CPU: projected lite0 (frozen) vs DCGAN D (benchmarks/d_cost.py)"
COLUMNS = ("| date | commit | machine | batch | DCGAN D step ms | projected D step ms | ratio | "
           "DCGAN G pass ms | projected G pass ms | ratio | load avg (1 min) |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|")


def build(recipe_path: str, batch: int):
    recipe = load_recipe(recipe_path, [f"train.batch_size={batch}"])
    torch.manual_seed(0)
    D = build_discriminator(recipe).train()
    opt = torch.optim.Adam(optimizer_groups(D, recipe.optim.d_lr), betas=tuple(recipe.optim.betas))
    return D, opt, recipe.loss.kind


def d_step(D, opt, loss_kind: str, real: torch.Tensor, fake: torch.Tensor) -> float:
    t0 = time.perf_counter()
    loss = d_loss(loss_kind, D(real).logits, D(fake).logits)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def g_pass(D, loss_kind: str, fake: torch.Tensor) -> float:
    fake = fake.clone().requires_grad_(True)  # stands in for G's output
    t0 = time.perf_counter()
    g_loss(loss_kind, D(fake).logits).backward()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = ap.parse_args()
    nets = {"dcgan": build("recipes/anime_dcgan.yaml", args.batch),
            "projected": build("recipes/anime_projected.yaml", args.batch)}
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(args.batch, 3, 64, 64, generator=gen) * 2 - 1
    fake = torch.rand(args.batch, 3, 64, 64, generator=gen) * 2 - 1
    times = {k: {"d": [], "g": []} for k in nets}
    for r in range(args.warmup + args.repeats):
        for name, (D, opt, kind) in nets.items():  # interleaved: every round runs both
            d, g = d_step(D, opt, kind, real, fake), g_pass(D, kind, fake)
            if r >= args.warmup:
                times[name]["d"].append(d)
                times[name]["g"].append(g)
    med = {k: {s: statistics.median(v) * 1000 for s, v in t.items()} for k, t in times.items()}
    ratio_d, ratio_g = med["projected"]["d"] / med["dcgan"]["d"], med["projected"]["g"] / med["dcgan"]["g"]
    print(f"D step (batch {args.batch}, median of {args.repeats}): DCGAN {med['dcgan']['d']:.0f} ms, "
          f"projected {med['projected']['d']:.0f} ms, ratio {ratio_d:.2f}x")
    print(f"G pass through D: DCGAN {med['dcgan']['g']:.0f} ms, projected {med['projected']['g']:.0f} ms, "
          f"ratio {ratio_g:.2f}x")
    row = (f"| {datetime.date.today()} | {git_commit()} | {machine()} | {args.batch} | {med['dcgan']['d']:.0f} | "
           f"{med['projected']['d']:.0f} | {ratio_d:.2f}x | {med['dcgan']['g']:.0f} | {med['projected']['g']:.0f} | "
           f"{ratio_g:.2f}x | {os.getloadavg()[0]:.1f} |")
    append_row(args.results, HEADING, COLUMNS, row)


if __name__ == "__main__":
    main()
