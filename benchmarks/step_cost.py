"""One full training step per discriminator variant, timed against the tutorial DCGAN (anime_dcgan) in the same run.

A step is G forward, D on real and fake, D backward and Adam, G backward through D and Adam, on the CPU.

Each variant is a recipe plus ``--set`` overrides, with extra switches: ``bf16`` (autocast), ``channels_last``
(weights and images), ``compile`` (``torch.compile`` of G and D, default mode; give it ``--warmup 3`` so
compilation stays out of the timing), ``frozen`` (D's weights get no gradient in the G step), ``cl_input`` (D's
images in channels-last layout, weights as they are), ``reuse`` (the G step reuses the D step's backbone
features of the fakes), ``cast`` (under autocast a frozen backbone runs as its copy with the weights already in
the autocast dtype; without it, autocast casts them on every pass), ``sn_once`` (spectral norm's power iteration
once per D step, none in the G step; without it, once per forward) and ``fused`` (fused Adam; without it,
torch's default, one tensor at a time on a CPU). The training loop does ``frozen``, ``cast``, ``sn_once`` and
``fused``, and by default ``channels_last`` and ``cl_input`` (``train.channels_last``) and ``reuse``
(``train.reuse_features``). All variants run once per round, in turn, so machine noise hits all; the result is
the median step time and images/s relative to the first variant. DiffAugment and the data are left out (same
for all). ``--results -`` prints the rows without adding them to RESULTS.md.

    source ../shared/env.sh && python benchmarks/step_cost.py --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import time
from pathlib import Path

import torch
from results import append_row, git_commit, machine

from ganxfer.loop import frozen, optimizer_groups
from ganxfer.losses import d_loss, g_loss
from ganxfer.nets import build_discriminator, build_generator
from ganxfer.nets.base import spectral_norm_held
from ganxfer.recipe import load_recipe

HEADING = "## Training step cost on CPU by discriminator variant (benchmarks/step_cost.py)"
COLUMNS = ("| date | commit | machine | batch | variant | step ms (median) | img/s | vs anime_dcgan | load avg |\n"
           "|---|---|---|---|---|---|---|---|---|")
PG = "recipes/anime_projected.yaml"
HEAD = "recipes/anime_from_mnist.yaml"
# the headline as it was before 2026-12-04: the backbone at the native 64 px, all four levels
AT64 = ["discriminator.input_size=null", "discriminator.out_indices=null"]
BEFORE = frozenset({"bf16", "frozen", "cl_input", "reuse"})  # the headline's loop without the four below
AFTER = frozenset({"channels_last", "cast", "sn_once", "fused"})  # the kernel changes the loop makes
VARIANTS: dict[str, tuple[str, list[str], set[str]]] = {
    "anime_dcgan (tutorial)": ("recipes/anime_dcgan.yaml", [], set()),
    "projected, light heads, 64 px": (PG, ["discriminator.heads=light"], set()),
    "projected, pg heads, 64 px": (PG, ["discriminator.heads=pg"], set()),
    "projected, separable heads, 64 px": (PG, ["discriminator.heads=separable"], set()),
    "projected, pg heads, 128 px": (PG, ["discriminator.heads=pg", "discriminator.input_size=128"], set()),
    "projected, pg heads, 224 px": (PG, ["discriminator.heads=pg", "discriminator.input_size=224"], set()),
    "projected, pg heads, 64 px, bf16": (PG, ["discriminator.heads=pg"], {"bf16"}),
    "projected, pg heads, 64 px, channels_last": (PG, ["discriminator.heads=pg"], {"channels_last"}),
    "anime_dcgan, bf16": ("recipes/anime_dcgan.yaml", [], {"bf16"}),
    "anime_from_mnist (headline D: light heads, mbstd, pixel_d), bf16": (HEAD, AT64, {"bf16"}),
    "anime_from_mnist, bf16, torch.compile": (HEAD, AT64, {"bf16", "compile"}),
    # where the headline's step goes: each leaves one part out or moves it
    "anime_from_mnist, bf16, no pixel_d": (HEAD, [*AT64, "discriminator.pixel_d=false"], {"bf16"}),
    "anime_from_mnist, bf16, levels [2,3,4]": (HEAD, [*AT64, "discriminator.out_indices=[2,3,4]"], {"bf16"}),
    "anime_from_mnist, bf16, 128 px, levels [2,3,4]": (HEAD, ["discriminator.input_size=128"], {"bf16"}),
    # the loop's step before and after D was frozen in the G step and fed channels-last images
    "anime_dcgan, fp32, the loop now": ("recipes/anime_dcgan.yaml", [], {"frozen", "cl_input"}),
    "anime_from_mnist, bf16, frozen D in the G step": (HEAD, AT64, {"bf16", "frozen"}),
    "anime_from_mnist, bf16, channels-last images": (HEAD, AT64, {"bf16", "cl_input"}),
    "anime_from_mnist, bf16, the loop now": (HEAD, AT64, {"bf16", "frozen", "cl_input"}),
    "anime_from_mnist, bf16, 96 px, levels [2,3,4], the loop now (the recipe now)": (
        HEAD, [], {"bf16", "frozen", "cl_input"}),
    "anime_from_mnist, bf16, 128 px, levels [2,3,4], the loop now": (
        HEAD, ["discriminator.input_size=128"], {"bf16", "frozen", "cl_input"}),
    # the G step reuses the D step's backbone features of the fakes (train.reuse_features, 2026-12-04)
    "anime_from_mnist, bf16, 96 px, levels [2,3,4], the loop now, features reused": (
        HEAD, [], {"bf16", "frozen", "cl_input", "reuse"}),
    "anime_from_mnist, bf16, 128 px, levels [2,3,4], the loop now, features reused": (
        HEAD, ["discriminator.input_size=128"], {"bf16", "frozen", "cl_input", "reuse"}),
    # the loop's kernel changes: each added alone to the loop without them, then all (the loop as it trains)
    "anime_from_mnist, bf16, without the kernel changes": (HEAD, [], BEFORE),
    "anime_from_mnist, bf16, + channels-last weights": (HEAD, [], BEFORE | {"channels_last"}),
    "anime_from_mnist, bf16, + frozen backbone cast once": (HEAD, [], BEFORE | {"cast"}),
    "anime_from_mnist, bf16, + spectral norm once per D step": (HEAD, [], BEFORE | {"sn_once"}),
    "anime_from_mnist, bf16, + fused Adam": (HEAD, [], BEFORE | {"fused"}),
    "anime_from_mnist, bf16, the loop as it trains": (HEAD, [], BEFORE | AFTER),
    "anime_from_mnist, fp32, without the kernel changes": (HEAD, ["train.mixed_precision=no"], BEFORE - {"bf16"}),
    "anime_from_mnist, fp32, the loop as it trains": (HEAD, ["train.mixed_precision=no"],
                                                        (BEFORE | AFTER) - {"bf16"}),
    "anime_dcgan, fp32, + channels-last weights": ("recipes/anime_dcgan.yaml", [],
                                                   {"frozen", "cl_input", "channels_last"}),
    "anime_dcgan, fp32, + fused Adam": ("recipes/anime_dcgan.yaml", [], {"frozen", "cl_input", "fused"}),
    "anime_dcgan, fp32, the loop as it trains": ("recipes/anime_dcgan.yaml", [],
                                                   {"frozen", "cl_input", "channels_last", "fused"}),
}


def build(path: str, sets: list[str], flags: set[str], batch: int):
    recipe = load_recipe(path, [f"train.batch_size={batch}", *sets])
    torch.manual_seed(0)
    G, D = build_generator(recipe).train(), build_discriminator(recipe).train()
    if "channels_last" in flags:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    if "cast" not in flags and hasattr(D, "_backbone_for"):  # autocast casts the frozen weights on every pass
        D._backbone_for = lambda x: D.backbone
    betas, fused = tuple(recipe.optim.betas), {"fused": True} if "fused" in flags else {}
    opt_g = torch.optim.Adam(G.parameters(), recipe.optim.g_lr, betas=betas, **fused)
    opt_d = torch.optim.Adam(optimizer_groups(D, recipe.optim.d_lr), betas=betas, **fused)
    if "compile" in flags:  # after the optimizers, which take the plain modules' parameters
        G, D = torch.compile(G), torch.compile(D)
    return G, D, opt_g, opt_d, recipe.loss.kind, recipe.generator.latent_dim


def step(G, D, opt_g, opt_d, kind: str, latent: int, real: torch.Tensor, flags: set[str]) -> float:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in flags else contextlib.nullcontext()
    layout = torch.channels_last if "cl_input" in flags else torch.contiguous_format
    once = "sn_once" in flags
    t0 = time.perf_counter()
    with autocast:
        fake = G(torch.randn(len(real), latent)).contiguous(memory_format=layout)
        with spectral_norm_held(D, advance=True) if once else contextlib.nullcontext():
            feats = D.features(fake) if "reuse" in flags else None
            fake_logits = (D(fake.detach(), feats=[f.detach() for f in feats]) if feats else D(fake.detach())).logits
            loss = d_loss(kind, D(real.contiguous(memory_format=layout)).logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    with frozen(D) if "frozen" in flags else contextlib.nullcontext():
        with autocast, spectral_norm_held(D) if once else contextlib.nullcontext():
            loss = g_loss(kind, (D(fake, feats=feats) if feats else D(fake)).logits)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
    opt_g.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    ap.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"),
                    help="the file the rows are added to; '-' prints them only")
    args = ap.parse_args()
    chosen = {k: v for k, v in VARIANTS.items() if not args.only or k in args.only}
    nets = {k: build(p, s, f, args.batch) for k, (p, s, f) in chosen.items()}
    real = torch.rand(args.batch, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    times: dict[str, list[float]] = {k: [] for k in nets}
    for r in range(args.warmup + args.repeats):
        for name, net in nets.items():
            x = real.contiguous(memory_format=torch.channels_last) if "channels_last" in chosen[name][2] else real
            t = step(*net, x, chosen[name][2])
            if r >= args.warmup:
                times[name].append(t)
    ref = statistics.median(next(iter(times.values())))
    for name, t in times.items():
        med = statistics.median(t)
        row = (f"| {datetime.date.today()} | {git_commit()} | {machine()} | {args.batch} | {name} | {med * 1000:.0f} | "
               f"{args.batch / med:.0f} | {ref / med:.2f}x | {os.getloadavg()[0]:.1f} |")
        print(row, flush=True)
        if str(args.results) != "-":
            append_row(args.results, HEADING, COLUMNS, row)


if __name__ == "__main__":
    main()
