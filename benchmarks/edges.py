"""Border artefacts: the share of samples with a stripe or checkered patch along an edge, against real faces.

A generator's border is judged less than its middle: a discriminator's strided convs see an edge pixel through
fewer windows, and a zero-filled translation covers it half the time. Stripes and patches then come and go
there during training (docs/research/losses-and-levers.md). This measures them: for each side, the mean
absolute difference between neighbouring pixels in the outer ``STRIP`` px, divided by the same in the strip
``INSET`` px further in (the busiest quarter of the edge against the whole inner strip). An image is
flagged when some side's ratio exceeds ``FLAG``. Real anime faces: 4% of 1,000; the same faces with a 16 px
checkered patch on the left edge: 74%.

For a generator it also counts dark blotches (:func:`dark_blotches`): pixels driven so far below the tanh's
range that D's gradient no longer reaches them. The blotched seed-2 run of 2026-12-05: 28% of samples; with
``loss.saturation`` 0.1%. Colour specks, dead in some channels only, are counted beside them (``speck_share``).

    source ../shared/env.sh && python benchmarks/edges.py reals
    python benchmarks/edges.py runs/study/anime_from_mnist-s0/snapshots/min-30 dcgan-mnist-64 --num 1000
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

STRIP, INSET, SEGMENTS, FLAG = 4, 8, 4, 3.0
BLOTCH_PX = 16  # dead black pixels that make a sample blotched (a 4x4 patch)
SPECK_PX = 4  # pixels dead in some channels but not all that make a sample specked
SIDES = ("left", "right", "top", "bottom")


def _detail(strip: torch.Tensor, segments: int = 1) -> torch.Tensor:
    """Mean absolute neighbour difference (down plus across) per image of a tall strip (N, C, H, W); with
    ``segments`` > 1, the largest over that many equal runs of rows, so that a patch along a quarter of the
    edge is not averaged away."""
    dy = (strip[..., 1:, :] - strip[..., :-1, :]).abs().mean(dim=(1, 3))
    dx = (strip[..., :-1, 1:] - strip[..., :-1, :-1]).abs().mean(dim=(1, 3))
    return torch.stack([r.mean(1) for r in (dy + dx).tensor_split(segments, dim=1)]).amax(0)


def side_ratios(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per side, each image's border detail (the busiest quarter of the edge) over the detail of the whole strip
    ``INSET`` px further in (about 1 for real images)."""
    x = images.float()
    t = x.transpose(-1, -2)
    inner = slice(STRIP + INSET, 2 * STRIP + INSET)
    outer_r, inner_r = slice(-STRIP, None), slice(-(2 * STRIP + INSET), -(STRIP + INSET))
    eps = 1e-6
    return {side: _detail(img[..., outer], SEGMENTS) / (_detail(img[..., inn]) + eps)
            for side, img, outer, inn in (("left", x, slice(0, STRIP), inner), ("right", x, outer_r, inner_r),
                                          ("top", t, slice(0, STRIP), inner), ("bottom", t, outer_r, inner_r))}


def border_artefacts(images: torch.Tensor) -> dict:
    """The share of images with a flagged side (``edge_share``), and the share per side."""
    r = side_ratios(images)
    flagged = torch.stack([r[s] > FLAG for s in SIDES]).any(0)
    return {"edge_share": round(float(flagged.float().mean()), 4),
            **{f"edge_{s}": round(float((r[s] > FLAG).float().mean()), 4) for s in SIDES}}


def dark_blotches(generator: torch.nn.Module, num: int = 1000, seed: int = 0) -> dict:
    """Dead black pixels of a tanh generator (one with ``forward(z, with_pre_tanh=True)``, such as DCGAN's): where
    every channel's value before the tanh is below ``-SATURATION_EDGE``, the tanh passes D's gradient on at under
    1% and the pixel stays black whatever D says. Returns their share of all pixels (``dead_dark``) and the share
    of samples with at least ``BLOTCH_PX`` of them (``blotch_share``), for the samples of ``sample(num, seed)``.
    Pixels dead in some channels but not all are colour specks (a cyan fleck where only red is dead): the share
    of samples with at least ``SPECK_PX`` of them is ``speck_share``."""
    from ganxfer.losses import SATURATION_EDGE

    z = torch.randn(num, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        param = next(generator.parameters())
        dead = torch.cat([generator(zb.to(param), with_pre_tanh=True)[1].float() < -SATURATION_EDGE
                          for zb in z.split(250)])
    generator.train(was_training)
    dark = dead.all(1)
    speck = dead.any(1) & ~dark
    return {"dead_dark": round(float(dark.float().mean()), 5),
            "blotch_share": round(float((dark.flatten(1).sum(1) >= BLOTCH_PX).float().mean()), 4),
            "speck_share": round(float((speck.flatten(1).sum(1) >= SPECK_PX).float().mean()), 4)}


def reals(num: int, folder: str | Path | None = None) -> torch.Tensor:
    """The first ``num`` real faces of ``folder`` (default ``$GANXFER_DATA/anime-faces-64``), in [-1, 1]."""
    from ganxfer.data import load_data, to_float
    from ganxfer.schema import DataConfig

    folder = folder or Path(os.environ["GANXFER_DATA"]) / "anime-faces-64"
    return to_float(load_data(DataConfig(path=str(folder), resolution=64, channels=3, limit=num)).pixels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sources", nargs="+", help="generator sources, or 'reals' for $GANXFER_DATA/anime-faces-64")
    ap.add_argument("--num", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import ganxfer

    for source in args.sources:
        if source == "reals":
            print(json.dumps({"source": source, "num": args.num, **border_artefacts(reals(args.num))}))
            continue
        g = ganxfer.load_generator(source)
        print(json.dumps({"source": source, "num": args.num, **border_artefacts(g.sample(args.num, seed=args.seed)),
                          **dark_blotches(g, args.num, args.seed)}))


if __name__ == "__main__":
    main()
