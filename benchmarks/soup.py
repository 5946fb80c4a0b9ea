"""Average two generators of one architecture into one (a model soup), recompute its BatchNorm, export it.

The bundled ``dcgan-mnist-64`` is such a soup: half the stage-2 generator, half the same generator trained on
for 30 minutes more with CatGAN's confidence term (its card has every command; RESULTS.md has the numbers).

    python benchmarks/soup.py dcgan-mnist-64 runs/m20/conf1 --weight 0.5 --out runs/soup
"""

from __future__ import annotations

import argparse

import ganxfer
from ganxfer.ema import recalibrated
from ganxfer.nets import export_model
from ganxfer.transfer import soup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first", help="generator source (bundled name, run or exported folder, Hub id)")
    ap.add_argument("second", help="generator source of the same architecture")
    ap.add_argument("--weight", type=float, default=0.5, help="the first generator's share (0 to 1)")
    ap.add_argument("--out", required=True, help="folder to export the soup to")
    ap.add_argument("--bn-batches", type=int, default=16, help="batches of 64 latents for BatchNorm")
    ap.add_argument("--seed", type=int, default=0, help="seed of those latents")
    args = ap.parse_args()
    mixed = soup(ganxfer.load_generator(args.first), ganxfer.load_generator(args.second), args.weight)
    print(export_model(recalibrated(mixed, args.bn_batches, 64, args.seed), args.out, "generator"))


if __name__ == "__main__":
    main()
