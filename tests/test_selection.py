"""Instance selection (data.select): the k-NN typicality score, the cut on real digits, and a run that uses it."""

import logging

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

from ganxfer import features
from ganxfer.cli import main
from ganxfer.data import load_data
from ganxfer.schema import DataConfig
from ganxfer.selection import select, typicality


def test_typicality_ranks_scattered_points_last_and_keeps_a_small_far_mode():
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(400, 8, generator=g)
    far_mode = torch.randn(40, 8, generator=g) * 0.3 + 20  # rare but tight: typical of itself
    scattered = torch.randn(10, 8, generator=g) * 8
    score = typicality(torch.cat([dense, far_mode, scattered]))
    assert set(score.argsort()[:10].tolist()) == set(range(440, 450))
    assert (score[400:440] > score[:400].median()).all()


def test_select_drops_junk_from_a_folder_of_digits(mnist_data, lite0_cache, tmp_path, monkeypatch):
    """Six junk images (noise, blank, checks, a ramp, stripes, a square) among 194 real digits:
    data.select=0.97 drops exactly them and keeps the digits in their order; a second call (the embedding cache,
    as on resume) keeps the same images. The folder is decoded once: the embedding reuses the loaded images."""
    monkeypatch.setenv("GANXFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    digits = load_data(DataConfig(path="mnist", channels=1, limit=194, resolution=32)).pixels
    folder = tmp_path / "digits"
    folder.mkdir()
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 32, dtype=np.uint8)
    noise = [rng.integers(0, 256, (32, 32), dtype=np.uint8),  # six kinds of junk, unlike each other
             np.full((32, 32), 255, np.uint8),
             ((np.indices((32, 32)).sum(0) // 4 % 2) * 255).astype(np.uint8),
             np.tile(ramp, (32, 1)),
             np.tile(((np.arange(32) // 2 % 2) * 255).astype(np.uint8)[:, None], (1, 32)),
             np.pad(np.full((12, 12), 200, np.uint8), 10)]
    for i, d in enumerate(digits):
        Image.fromarray(d[0].numpy()).save(folder / f"d{i:03d}.png")
    for i, n in enumerate(noise):
        Image.fromarray(n).save(folder / f"n{i}.png")
    cfg = DataConfig(path=str(folder), channels=1, resolution=32, select=0.97)
    decoded = []
    monkeypatch.setattr(features, "load_data", lambda c: decoded.append(c) or load_data(c))
    kept, preview = select(load_data(cfg), cfg)
    assert decoded == []
    assert kept.files == [f"d{i:03d}.png" for i in range(194)]
    assert torch.equal(kept.pixels, digits)
    noise_set = {n.tobytes() for n in noise}
    assert len(preview) == 6 and all(p[0].numpy().tobytes() in noise_set for p in preview)
    again, _ = select(load_data(cfg), cfg)
    assert again.files == kept.files and list((tmp_path / "cache").rglob("*.safetensors"))
    unchanged, none = select(load_data(DataConfig(path=str(folder), channels=1, resolution=32)), DataConfig())
    assert len(unchanged) == 200 and len(none) == 0


def test_a_run_with_select_trains_on_the_kept_share(mnist_data, lite0_cache, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("GANXFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    caplog.set_level(logging.INFO, logger="ganxfer.selection")
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", "--set", "data.limit=256",
                                    "--set", "data.resolution=32", "--set", "generator.ngf=8",
                                    "--set", "discriminator.ndf=8", "--set", "train.batch_size=16",
                                    "--set", "train.kimg=0.032", "--set", "data.select=0.5",
                                    "--run-dir", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert Image.open(run / "dropped.png").size[0] > 32 * 8  # an 8x8 grid of the least typical
    assert "select: 0.5" in (run / "recipe.yaml").read_text()
    assert "kept the 128 most typical of 256 images" in caplog.text
