"""generator.kind: fastgan, Projected GAN's FastGAN-lite generator, and anime_pg, Projected GAN's own recipe."""

import copy
import json
import math

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ganxfer.card import model_card, run_info
from ganxfer.cli import main
from ganxfer.ema import recalibrated, update_ema
from ganxfer.nets import build_discriminator, build_generator, export_model, load_model, parameter_count, read_config
from ganxfer.nets.fastgan import FastGANGenerator, widths
from ganxfer.recipe import load_recipe
from ganxfer.schema import RecipeError
from ganxfer.transfer import TransferError, warm_start_generator


@pytest.mark.parametrize("resolution", [64, 128, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_images_have_the_shape_and_range_asked(resolution, channels):
    g = FastGANGenerator(resolution=resolution, channels=channels, ngf=8, latent_dim=16)
    z = torch.randn(2, 16) * 50  # large latents: the tanh, not their size, bounds the image
    image, pre = g(z, with_pre_tanh=True)
    assert image.shape == (2, channels, resolution, resolution)
    assert image.abs().max() <= 1 and torch.equal(image, torch.tanh(pre))
    assert len(g.blocks) == int(math.log2(resolution)) - 1  # the 4x4 layer, then one block per doubling


def test_parameters_match_projected_gans_lite_generator():
    """At PG's ngf 128 and z 256, exactly the parameters of what PG's FastganSynthesis(lite=True) runs: 79,354,307
    at 256 px (all of it), 78,679,939 at 128 px (it also builds the unused 256 px block and gate). PG's own class
    cannot make 64 px; ours stops at the 64 px features, 2.7M parameters fewer than 128 px."""
    counts = {res: parameter_count(lambda res=res: FastGANGenerator(res, 3, 128, 256)) for res in (64, 128, 256)}
    assert counts == {64: 75_979_523, 128: 78_679_939, 256: 79_354_307}
    assert parameter_count(lambda: FastGANGenerator(64, 3, 64, 256)) == 23_195_011  # anime_pg's ngf 64
    with torch.device("meta"):
        g = FastGANGenerator(256, 3, 128, 256)
    assert widths(128) == {4: 2048, 8: 1024, 16: 512, 32: 256, 64: 256, 128: 128, 256: 64}  # PG's nfc
    assert [b[-3].out_channels // 2 for b in g.blocks] == [2048, 1024, 512, 256, 256, 128, 64]  # conv, BN, GLU


@pytest.mark.parametrize(("resolution", "pairs"), [(64, [(4, 64)]), (128, [(4, 64), (8, 128)]),
                                                   (256, [(4, 64), (8, 128), (16, 256)])])
def test_skip_excitation_gates_each_large_side_by_a_small_one(resolution, pairs):
    """FastGAN's skip-layer excitation: the 64, 128 and 256 px features, those the output size has, are scaled
    channel-wise by gates in (0, 1) computed from the 4, 8 and 16 px ones."""
    g = FastGANGenerator(resolution=resolution, channels=3, ngf=8, latent_dim=16)
    seen, outputs = [], {}
    for side, skip in g.skips.items():
        skip.register_forward_hook(lambda m, args, out, side=side: seen.append(
            (int(side), args[0].shape[-1], args[1].shape[-1])) or outputs.__setitem__(side, (args[1], out)))
    g(torch.randn(3, 16))
    assert seen == [(big, small, big) for small, big in pairs]
    for big, out in outputs.values():
        ratio = out / big  # the gate: one value per image and channel
        assert ((ratio > 0) & (ratio < 1)).all()
        assert torch.allclose(ratio, ratio[..., :1, :1].expand_as(ratio), atol=1e-5)


def test_latents_are_read_on_the_sphere():
    """As in PG, z is divided by its root mean square: a latent and any positive multiple draw the same image."""
    g = FastGANGenerator(resolution=64, channels=3, ngf=8, latent_dim=16).eval()
    z = torch.randn(4, 16)
    assert torch.allclose(g(z), g(z * 7.5), atol=1e-5)
    assert not torch.allclose(g(z), g(-z), atol=1e-3)


def test_ema_and_batchnorm_recalibration_work_on_a_spectral_norm_generator():
    """What the loop does with the sampled generator: a deep-copied EMA, updated, then a copy whose BatchNorm
    statistics are recomputed from its own outputs, leaving both the EMA and its spectral-norm vectors as they were."""
    torch.manual_seed(0)
    g = FastGANGenerator(resolution=64, channels=3, ngf=8, latent_dim=16)
    ema = copy.deepcopy(g).eval().requires_grad_(False)
    g(torch.randn(8, 16)).square().mean().backward()
    with torch.no_grad():
        for p in g.parameters():
            p -= 0.1 * p.grad
    update_ema(ema, g, step=0, beta=0.999)  # decay 0.1 at step 0: mostly the new weights
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    sampled = recalibrated(ema, batches=2, batch_size=8, seed=0)
    assert all(torch.equal(v, before[k]) for k, v in ema.state_dict().items())
    stats = {k: v for k, v in sampled.state_dict().items() if k.endswith("running_mean")}
    assert stats and all(not torch.equal(v, before[k]) for k, v in stats.items())
    assert not sampled.training and sampled.sample(3, seed=1).shape == (3, 3, 64, 64)


def test_export_loads_back_and_samples_through_the_cli(tmp_path):
    g = FastGANGenerator(resolution=64, channels=3, ngf=8, latent_dim=16)
    g(torch.randn(8, 16))  # train-mode statistics and power-iteration vectors that differ from a fresh build
    export_model(g.eval(), tmp_path / "g", "generator")
    config = read_config(tmp_path / "g")
    assert config["ganxfer"]["kind"] == "fastgan"
    assert {k: config[k] for k in ("resolution", "channels", "ngf", "latent_dim")} == \
        {"resolution": 64, "channels": 3, "ngf": 8, "latent_dim": 16}
    again = load_model(tmp_path / "g")
    assert type(again) is FastGANGenerator
    assert torch.equal(g.sample(4, seed=3), again.sample(4, seed=3))
    assert torch.equal(torch.cat(list(again.iter_samples(40, seed=3, chunk=16))), again.sample(40, seed=3))
    res = CliRunner().invoke(main, ["sample", str(tmp_path / "g"), "--num", "4", "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "g.png").size[0] > 64


def test_warm_start_copies_a_fastgan_export_and_refuses_to_grow_it(tmp_path):
    source = FastGANGenerator(resolution=64, channels=3, ngf=8, latent_dim=16)
    export_model(source.eval(), tmp_path / "g", "generator")
    sets = ["generator.kind=fastgan", "generator.ngf=8", "generator.latent_dim=16", f"generator.init={tmp_path / 'g'}",
            "generator.freeze_blocks=2", "data.path=/faces"]
    recipe = load_recipe("recipes/anime_dcgan.yaml", sets)
    G = warm_start_generator(build_generator(recipe), recipe, tmp_path / "run")
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in G.state_dict().items())
    report = json.loads((tmp_path / "run" / "transfer.json").read_text())["generator"]
    assert not report["new"] and not report["unused"] and not report["adapted"]
    assert {n.split(".")[1] for n in report["frozen"]} == {"0", "1"}
    assert all(not p.requires_grad for p in G.blocks[:2].parameters()) and G.blocks[2][1].weight.requires_grad
    bigger = load_recipe("recipes/anime_dcgan.yaml", [*sets[:-2], "data.path=/faces", "data.resolution=128"])
    with pytest.raises(TransferError, match="64px fastgan generator, which cannot grow; set data.resolution=64"):
        warm_start_generator(build_generator(bigger), bigger, None)


def test_anime_pg_is_projected_gans_configuration():
    recipe = load_recipe("anime_pg")
    g, d = recipe.generator, recipe.discriminator
    assert (g.kind, g.latent_dim, g.ngf, recipe.data.resolution) == ("fastgan", 256, 64, 64)
    assert (d.kind, d.mode, d.projection, d.heads, d.head_channels) == ("projected", "frozen", True, "pg", 64)
    assert recipe.loss.kind == "hinge" and recipe.augment.policy == "color,translation,cutout"
    assert (recipe.optim.g_lr, recipe.optim.d_lr, recipe.optim.betas) == (2e-4, 2e-4, [0.0, 0.99])
    assert recipe.train.batch_size == 64 and recipe.train.minutes == 30
    assert 0.5 ** (64 / 20_000) == pytest.approx(recipe.train.ema, abs=1e-4)  # PG's EMA half-life: 20 kimg
    G = build_generator(recipe)
    assert type(G) is FastGANGenerator and G.sample(2, seed=0).shape == (2, 3, 64, 64)
    recipe = load_recipe("anime_pg", ["discriminator.pretrained=false"])
    assert len(build_discriminator(recipe).heads) == 4  # PG's four lite0 levels


def test_fastgan_resolutions_are_checked_when_the_recipe_loads():
    with pytest.raises(RecipeError, match="data.resolution=32: a fastgan generator makes 64, 128, 256 pixels"):
        load_recipe("anime_pg", ["data.resolution=32"])


def test_anime_pg_trains_and_its_generator_samples(lite0_cache, anime_dir, tmp_path):
    """Two steps of `ganxfer train anime_pg` (32 faces each, a narrow G): the exported generator is a fastgan
    one that `ganxfer sample` reads back, from the run folder and from the exported folder."""
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(main, ["train", "anime_pg", "--run-dir", str(run), "--set", "data.limit=256",
                               "--set", "train.kimg=0.064", "--set", "train.batch_size=32",
                               "--set", "train.num_samples=16", "--set", "train.bn_batches=2",
                               "--set", "generator.ngf=16"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss_d" in r]
    assert rows[-1]["kimg"] == 0.064 and all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in rows)
    config = read_config(run / "generator")
    assert config["ganxfer"]["kind"] == "fastgan" and config["latent_dim"] == 256 and config["ngf"] == 16
    card = str(model_card("me/anime-pg", config, run_info(run), ["config.json", "model.safetensors"]))
    assert "A FastGAN-lite generator of 64×64 RGB images (latent size 256)" in card
    assert "| generator | fastgan, ngf 16, latent 256 |" in card
    for source, out in ((run, tmp_path / "grid.png"), (run / "generator", tmp_path / "faces")):
        res = runner.invoke(main, ["sample", str(source), "--num", "4", "--out", str(out), "--seed", "1"])
        assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "faces").iterdir()) == [f"00000{i}.png" for i in range(4)]
    assert Image.open(tmp_path / "faces" / "000000.png").size == (64, 64)
