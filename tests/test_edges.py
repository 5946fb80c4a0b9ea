"""The border-artefact measure behind benchmarks/edges.py, on real anime faces."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import edges  # noqa: E402


def test_real_faces_are_rarely_flagged(anime_dir):
    assert edges.border_artefacts(edges.reals(200, anime_dir))["edge_share"] <= 0.08


def test_a_checkered_patch_on_one_edge_is_flagged_on_that_side_only(anime_dir):
    x = edges.reals(200, anime_dir)
    patched = x.clone()
    checker = (torch.arange(4)[:, None] + torch.arange(16)[None]) % 2 * 2.0 - 1  # (4 columns, 16 rows)
    patched[:100, 1, 24:40, :4] = checker.T  # a green/black patch on the left edge of half the faces
    before, after = edges.border_artefacts(x), edges.border_artefacts(patched)
    assert after["edge_left"] - before["edge_left"] >= 0.25
    assert after["edge_share"] >= 0.3
    for side in ("right", "top", "bottom"):
        assert after[f"edge_{side}"] == before[f"edge_{side}"]


def test_dark_blotches_are_pixels_driven_past_the_tanh():
    """A fresh DCGAN draws no dead pixel; the bundled MNIST generator's black background is dead almost
    everywhere (driven far below -3 before the tanh), so every sample counts as blotched."""
    import ganxfer
    from ganxfer.nets.dcgan import DCGANGenerator

    fresh = edges.dark_blotches(DCGANGenerator(resolution=64, channels=1, ngf=16), num=64)
    assert fresh == {"dead_dark": 0.0, "blotch_share": 0.0, "speck_share": 0.0}
    mnist = edges.dark_blotches(ganxfer.load_generator("dcgan-mnist-64"), num=64)
    assert mnist["dead_dark"] > 0.5 and mnist["blotch_share"] == 1.0
    assert mnist["speck_share"] == 0.0  # one channel: a dead pixel is dead in all of them


def test_a_pixel_dead_in_one_colour_is_a_speck_not_a_blotch():
    """Scaling a fresh colour generator's red output weights drives red alone past the tanh in spots."""
    from ganxfer.nets.dcgan import DCGANGenerator

    g = DCGANGenerator(resolution=64, channels=3, ngf=16)
    assert edges.dark_blotches(g, num=64)["speck_share"] == 0.0
    with torch.no_grad():
        g.to_rgb.weight[:, 0] *= 1e5  # a fresh net's values before the tanh are about 1e-4
    specked = edges.dark_blotches(g, num=64)
    assert specked["speck_share"] >= 0.5 and specked["blotch_share"] == 0.0
