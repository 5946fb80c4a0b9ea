"""Warm starts: step-0 equality, channel adaptation, growth, refusal, freezing, the report."""

import json

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner

from ganxfer.cli import main
from ganxfer.nets import build_discriminator, build_generator, export_model, load_model
from ganxfer.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from ganxfer.recipe import load_recipe
from ganxfer.schema import RecipeError
from ganxfer.transfer import (
    TransferError,
    adapt_channels,
    transfer_state,
    warm_start_discriminator,
    warm_start_generator,
)

SMALL = ["--set", "data.limit=64", "--set", "train.batch_size=16", "--set", "generator.ngf=8",
         "--set", "discriminator.ndf=8", "--set", "generator.latent_dim=16"]


@pytest.fixture
def gray_source(tmp_path):
    """A trained-looking 1-channel 32px source (random weights, non-trivial BN statistics)."""
    g = DCGANGenerator(resolution=32, channels=1, ngf=8, latent_dim=16)
    g.train()
    with torch.no_grad():
        g(torch.randn(64, 16))  # move the BN running stats away from their init
    return export_model(g, tmp_path / "src", "generator")


def finetune(*args):
    return CliRunner().invoke(main, ["finetune", "recipes/anime_dcgan.yaml", *map(str, args)])


def test_step0_generator_equals_its_source(gray_source, anime_dir, monkeypatch, tmp_path):
    """kimg=0 exports the warm start: each colour channel is the grey source image, bit for bit (with the
    BatchNorm recalibration off; by default the export recomputes the statistics for its weights)."""
    monkeypatch.setenv("GANXFER_DATA", str(anime_dir.parent))
    run = tmp_path / "run"
    res = finetune(*SMALL, "--set", "data.resolution=32", "--set", f"generator.init={gray_source}",
                   "--set", "train.kimg=0", "--set", "train.bn_batches=0", "--run-dir", run)
    assert res.exit_code == 0, res.output
    src, dst = load_model(gray_source), load_model(run / "generator")
    z = torch.randn(8, 16)
    expected = src(z)
    assert torch.equal(dst(z), expected.expand(-1, 3, -1, -1))
    report = json.loads((run / "transfer.json").read_text())["generator"]
    assert report["adapted"] == {"to_rgb.weight": "1 -> 3 image channels (output preserved)"}
    assert report["new"] == [] and report["unused"] == [] and report["frozen"] == []
    assert len(report["copied"]) == len(src.state_dict()) - 1
    assert (run / "samples" / "000000000.png").is_file()


def test_discriminator_input_adaptation_preserves_grey_response():
    src, dst = DCGANDiscriminator(resolution=32, channels=1, ndf=8), DCGANDiscriminator(resolution=32, ndf=8)
    report = transfer_state(dst, src, "src")
    assert list(report["adapted"]) == ["blocks.0.0.weight"]
    grey = torch.rand(4, 1, 32, 32) * 2 - 1
    src.eval(), dst.eval()
    assert torch.allclose(dst(grey.expand(-1, 3, -1, -1)).logits, src(grey).logits, atol=1e-5)


def test_adapt_channels_back_to_grey():
    w = torch.randn(8, 3, 4, 4)
    assert torch.equal(adapt_channels(w, torch.Size([8, 1, 4, 4]), 1, "output"), w.mean(1, keepdim=True))


def test_incompatible_sources_are_refused_by_name(tmp_path):
    wide = DCGANGenerator(resolution=32, channels=1, ngf=16, latent_dim=16)
    with pytest.raises(TransferError, match=r"blocks\.0\.0\.weight \(16, 64, 4, 4\) vs \(16, 32, 4, 4\)"):
        transfer_state(DCGANGenerator(resolution=32, ngf=8, latent_dim=16), wide, "wide")
    with pytest.raises(TransferError, match=r"blocks\.0\.0\.weight \(16, 32, 4, 4\) vs \(32, 32, 4, 4\)"):
        transfer_state(DCGANGenerator(resolution=32, ngf=8, latent_dim=32),
                       DCGANGenerator(resolution=32, ngf=8, latent_dim=16), "z16")


def test_cli_refusal_is_one_line(gray_source, anime_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("GANXFER_DATA", str(anime_dir.parent))
    res = finetune(*SMALL, "--set", "data.resolution=32", "--set", "generator.latent_dim=100",
                   "--set", f"generator.init={gray_source}", "--set", "train.kimg=0", "--run-dir", tmp_path / "r")
    assert res.exit_code == 2
    assert "is incompatible with this recipe: blocks.0.0.weight (16, 32, 4, 4) vs (100, 32, 4, 4)" in res.output


def test_widen_keeps_the_images_and_lets_the_copies_drift_apart():
    """Net2Wider: the same images in train and eval mode; a channel and its copy get different gradients."""
    g = DCGANGenerator(resolution=64, channels=1, ngf=8, latent_dim=16, grow=1)
    g.train()
    with torch.no_grad():
        g(torch.randn(64, 16))
    wide = g.widen(12, seed=0)
    assert [b[0].out_channels for b in wide.blocks] == [48, 24, 12, 12] and wide.to_rgb.in_channels == 12
    z = torch.randn(32, 16)
    for mode in (True, False):
        g.train(mode), wide.train(mode)
        assert torch.allclose(wide(z), g(z), atol=1e-5)
    wide.train()
    wide(z).square().mean().backward()
    grad = wide.blocks[-1][0].weight.grad  # channel 8 copies channel 0
    assert (grad[:, 0] - grad[:, 8]).abs().max() > 0.1 * grad[:, 0].abs().max()
    with pytest.raises(ValueError, match="narrower"):
        wide.widen(8)


def test_warm_start_widens_a_narrower_source_and_reports_it(gray_source, tmp_path):
    recipe = load_recipe(None, ["data.resolution=32", "generator.ngf=16", "generator.latent_dim=16",
                                f"generator.init={gray_source}"])
    g = warm_start_generator(DCGANGenerator(resolution=32, ngf=16, latent_dim=16), recipe, tmp_path)
    src, z = load_model(gray_source), torch.randn(8, 16)
    for mode in (True, False):
        g.train(mode), src.train(mode)
        assert torch.allclose(g(z), src(z).expand(-1, 3, -1, -1), atol=1e-5)
    report = json.loads((tmp_path / "transfer.json").read_text())["generator"]
    assert report["adapted"]["blocks.0.0.weight"] == ("(16, 32, 4, 4) -> (16, 64, 4, 4) (widened to ngf 16: "
                                                      "channels copied, images kept)")
    assert report["adapted"]["to_rgb.weight"].endswith("; 1 -> 3 image channels (output preserved)")
    assert len(report["adapted"]) + len(report["copied"]) == len(src.state_dict())
    assert report["copied"] == [k for k in src.state_dict() if k.endswith("num_batches_tracked")]
    narrow = load_recipe(None, ["data.resolution=32", "generator.ngf=4", "generator.latent_dim=16",
                                f"generator.init={gray_source}"])
    with pytest.raises(TransferError, match="can widen a generator but not narrow it: set generator.ngf to 8"):
        warm_start_generator(DCGANGenerator(resolution=32, ngf=4, latent_dim=16), narrow, None)


def test_growing_resolution_adds_fresh_blocks(gray_source, tmp_path, caplog):
    recipe = load_recipe(None, ["data.resolution=64", "generator.ngf=8", "generator.latent_dim=16",
                                f"generator.init={gray_source}"])
    with caplog.at_level("INFO", "ganxfer.transfer"):
        g = warm_start_generator(DCGANGenerator(resolution=64, ngf=8, latent_dim=16), recipe, tmp_path)
    assert sum("generator warm start from" in r.getMessage() for r in caplog.records) == 1  # main process only
    assert g.sample(2).shape == (2, 3, 64, 64)
    report = json.loads((tmp_path / "transfer.json").read_text())["generator"]
    assert report["new"] == [k for k in g.state_dict() if k.startswith("blocks.3.")]
    src = load_model(gray_source).state_dict()
    assert all(torch.equal(g.state_dict()[k], src[k]) for k in report["copied"])
    big = export_model(DCGANGenerator(resolution=64, ngf=8, latent_dim=16), tmp_path / "big", "generator")
    with pytest.raises(TransferError, match="is 64px; it can grow to 128, 256, ... but not to data.resolution=32"):
        warm_start_generator(DCGANGenerator(resolution=32, ngf=8, latent_dim=16),
                             load_recipe(None, ["data.resolution=32", f"generator.init={big}"]), None)


def test_freeze_g_and_freeze_d(gray_source, anime_dir, monkeypatch, tmp_path):
    """FreezeG keeps the first blocks at the source; FreezeD keeps the warm-started D's first blocks."""
    monkeypatch.setenv("GANXFER_DATA", str(anime_dir.parent))
    d_src = export_model(DCGANDiscriminator(resolution=32, channels=3, ndf=8), tmp_path / "dsrc", "discriminator")
    run = tmp_path / "run"
    res = finetune(*SMALL, "--set", "data.resolution=32", "--set", f"generator.init={gray_source}",
                   "--set", "generator.freeze_blocks=2", "--set", f"discriminator.init={d_src}",
                   "--set", "discriminator.freeze_blocks=1", "--set", "train.kimg=0.064",
                   "--set", "optim.g_lr=1e-4", "--run-dir", run)
    assert res.exit_code == 0, res.output
    src = safetensors.torch.load_file(str(gray_source / "model.safetensors"))
    out = safetensors.torch.load_file(str(run / "generator" / "model.safetensors"))
    assert torch.equal(out["blocks.0.0.weight"], src["blocks.0.0.weight"])
    assert torch.equal(out["blocks.1.1.weight"], src["blocks.1.1.weight"])  # BN affine frozen too
    assert not torch.equal(out["blocks.2.0.weight"], src["blocks.2.0.weight"])
    d_in = safetensors.torch.load_file(str(d_src / "model.safetensors"))
    d_out = safetensors.torch.load_file(str(run / "discriminator" / "model.safetensors"))
    assert torch.equal(d_out["blocks.0.0.weight"], d_in["blocks.0.0.weight"])
    assert not torch.equal(d_out["blocks.1.0.weight"], d_in["blocks.1.0.weight"])
    report = json.loads((run / "transfer.json").read_text())
    assert report["generator"]["frozen"][:2] == ["blocks.0.0.weight", "blocks.0.1.weight"]
    assert report["discriminator"]["frozen"] == ["blocks.0.0.weight"]


def test_bundled_mnist_generator_draws_digits(mnist_data, monkeypatch, tmp_path):
    """dcgan-mnist-64 samples have MNIST's pixel statistics: a dark background and the digits' mean shape."""
    from ganxfer.data import load_data, to_float
    from ganxfer.schema import DataConfig
    from ganxfer.sources import load_generator

    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    fake = load_generator("dcgan-mnist-64").sample(256, seed=0)
    real = to_float(load_data(DataConfig(path="mnist", resolution=64, channels=1, limit=2000)).pixels)
    assert fake.shape == (256, 1, 64, 64)
    dark = lambda x: (x < -0.8).float().mean().item()  # noqa: E731
    assert abs(dark(fake) - dark(real)) < 0.1
    mean_fake, mean_real = fake.mean(0).flatten(), real.mean(0).flatten()
    assert torch.corrcoef(torch.stack([mean_fake, mean_real]))[0, 1] > 0.9
    assert fake.std(0).mean() > 0.2  # diverse, not one collapsed image
    res = CliRunner().invoke(main, ["sample", "dcgan-mnist-64", "--num", "64", "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 0 and (tmp_path / "g.png").is_file()


def test_finetune_headline_recipe_with_the_bundled_model(anime_dir, lite0_cache, monkeypatch, tmp_path):
    """`ganxfer finetune recipes/anime_from_mnist.yaml`, shortened: bundled G, frozen lite0 projected D."""
    monkeypatch.setenv("GANXFER_DATA", str(anime_dir.parent))
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["finetune", "recipes/anime_from_mnist.yaml", "--set", "data.limit=128",
                                    "--set", "train.batch_size=32", "--set", "train.kimg=0.064", "--run-dir", str(run)])
    assert res.exit_code == 0, res.output
    report = json.loads((run / "transfer.json").read_text())["generator"]
    assert report["source"] == "dcgan-mnist-64" and sorted(report["adapted"]) == ["blocks.0.0.weight", "to_rgb.weight"]
    assert "(generator.balance_latent)" in report["adapted"]["blocks.0.0.weight"]  # the recipe evens out z's rows
    assert report["new"] == ["excite.gate.1.weight", "excite.gate.3.weight"]  # the skip-layer excitation, gates at 1
    assert report["unused"] == []
    g = load_model(run / "generator")
    assert g.sample(2).shape == (2, 3, 64, 64)
    d = safetensors.torch.load_file(str(run / "discriminator" / "model.safetensors"))
    assert any(k.startswith("backbone.") for k in d)


def test_a_dcgan_discriminator_warm_starts_the_pixel_d_of_a_projected_one(tmp_path):
    """A stage-1 DCGAN D (here judging 32 px) becomes the projected ensemble's pixel D: same logits on the same
    images, FreezeD on its blocks, the heads reported new; without pixel_d the dcgan source is refused."""
    torch.manual_seed(0)
    src = DCGANDiscriminator(resolution=64, channels=1, ndf=8, input_size=32)
    src.train()
    with torch.no_grad():
        src(torch.rand(16, 1, 64, 64) * 2 - 1)  # BatchNorm statistics away from their init
    folder = export_model(src, tmp_path / "d32", "discriminator")
    sets = ["discriminator.backbone=test_efficientnet", "discriminator.pretrained=false", "discriminator.pixel_ndf=8",
            "discriminator.pixel_input_size=32", f"discriminator.init={folder}", "discriminator.freeze_blocks=1",
            "generator.init=null"]
    recipe = load_recipe("recipes/mnist_projected.yaml", sets)
    D = warm_start_discriminator(build_discriminator(recipe), recipe, tmp_path / "run")
    x = torch.rand(4, 1, 64, 64) * 2 - 1
    assert torch.equal(D.eval()(x).logits[-1].flatten(), load_model(folder).eval()(x).logits)
    report = json.loads((tmp_path / "run" / "transfer.json").read_text())["discriminator"]
    assert sorted(report["copied"]) == sorted(f"pixel.{n}" for n in src.state_dict())
    assert report["frozen"] == ["pixel.blocks.0.0.weight"] and not D.pixel.blocks[0][0].weight.requires_grad
    assert any(n.startswith("heads.") for n in report["new"]) and not any(n.startswith("pixel.") for n in report["new"])
    plain = load_recipe("recipes/mnist_projected.yaml", [*sets[:2], f"discriminator.init={folder}",
                                                         "discriminator.pixel_d=false", "generator.init=null"])
    with pytest.raises(TransferError, match="'dcgan', not 'projected'; a projected one takes a dcgan export only "
                                            "with pixel_d"):
        warm_start_discriminator(build_discriminator(plain), plain, None)
    with pytest.raises(RecipeError, match="pixel_input_size=48"):
        load_recipe("recipes/mnist_projected.yaml", [*sets[:3], "discriminator.pixel_input_size=48"])


def test_code_gain_scales_how_the_warm_start_reads_the_class_code(tmp_path):
    """generator.code_gain=3: the warm-started G draws for z what its source drew for z with z[:K] tripled (the
    same class, a sharper switch), the report says so, and without a conditional D or an init it is refused."""
    torch.manual_seed(0)
    src = DCGANGenerator(resolution=64, channels=1, ngf=8, latent_dim=16)
    src.train()
    with torch.no_grad():
        src(torch.randn(64, 16))
    folder = export_model(src, tmp_path / "src", "generator")
    sets = ["generator.ngf=8", "generator.latent_dim=16", f"generator.init={folder}", "discriminator.conditional=10"]
    recipe = load_recipe("recipes/mnist_projected.yaml", [*sets, "generator.code_gain=3"])
    g = warm_start_generator(DCGANGenerator(resolution=64, channels=1, ngf=8, latent_dim=16), recipe, tmp_path)
    z = torch.randn(32, 16)
    z3 = z.clone()
    z3[:, :10] *= 3
    g.train(), src.train()
    with torch.no_grad():
        assert torch.allclose(g(z), src(z3), atol=1e-5)
        assert (g(z) - src(z)).abs().max() > 0.1
    report = json.loads((tmp_path / "transfer.json").read_text())["generator"]
    assert report["adapted"] == {"blocks.0.0.weight": "rows z[:10] x 3 (generator.code_gain)"}
    assert "blocks.0.0.weight" not in report["copied"]
    with pytest.raises(RecipeError, match="generator.code_gain=3 scales .* set generator.init and "
                                          "discriminator.conditional, or generator.code_gain=1"):
        load_recipe("recipes/mnist_projected.yaml", [*sets[:3], "generator.code_gain=3"])
    with pytest.raises(RecipeError, match="generator.code_gain=2"):
        load_recipe(None, ["discriminator.conditional=10", "generator.code_gain=2"])


def test_balance_latent_scales_the_dominant_rows_of_z_down_to_the_median(tmp_path):
    """generator.balance_latent: rows of the first layer above the median norm (here z[:10], made 17x the rest as
    in dcgan-mnist-64) end at the median; the others are copied as they are, and the report says which changed."""
    torch.manual_seed(0)
    src = DCGANGenerator(resolution=64, channels=1, ngf=8, latent_dim=32)
    with torch.no_grad():
        src.blocks[0][0].weight[:10] *= 17
    folder = export_model(src, tmp_path / "src", "generator")
    recipe = load_recipe("recipes/mnist_projected.yaml", ["generator.ngf=8", "generator.latent_dim=32",
                                                          f"generator.init={folder}", "generator.balance_latent=true"])
    g = warm_start_generator(DCGANGenerator(resolution=64, channels=1, ngf=8, latent_dim=32), recipe, tmp_path)
    before = src.blocks[0][0].weight.flatten(1).norm(dim=1)
    after = g.blocks[0][0].weight.flatten(1).norm(dim=1)
    median = before.median()
    assert torch.allclose(after[:10], median.expand(10), rtol=1e-5)
    assert after.max() <= median * (1 + 1e-5) and (after[:10] / before[:10]).max() < 0.1
    unchanged = before <= median
    assert torch.equal(g.blocks[0][0].weight[unchanged], src.blocks[0][0].weight[unchanged])
    report = json.loads((tmp_path / "transfer.json").read_text())["generator"]
    cut = int((before > median).sum())
    assert report["adapted"]["blocks.0.0.weight"].startswith(f"{cut} rows of z scaled down to the median")
    assert cut >= 10 and "blocks.0.0.weight" not in report["copied"]


def test_a_damaged_transfer_report_is_written_again(tmp_path):
    """A transfer.json cut short by a crash, nested beyond what json parses, or not an object: the warm start's
    report replaces it rather than ending the run in a traceback."""
    from ganxfer.transfer import _publish

    report = {"source": "src", "copied": ["a"], "adapted": {}, "new": [], "unused": [], "frozen": []}
    for damaged in ('{"generator": {"sou', "[" * 100_000, "[1, 2]"):
        (tmp_path / "transfer.json").write_text(damaged)
        _publish(report, tmp_path, "generator")
        assert json.loads((tmp_path / "transfer.json").read_text()) == {"generator": report}


def test_excitation_starts_as_the_warm_start(gray_source, anime_dir, monkeypatch, tmp_path):
    """generator.excitation adds FastGAN's skip-layer excitation as new tensors that change nothing at step 0:
    the warm start draws its source's images, and the report lists exactly those tensors as new."""
    monkeypatch.setenv("GANXFER_DATA", str(anime_dir.parent))
    run = tmp_path / "run"
    res = finetune(*SMALL, "--set", "data.resolution=32", "--set", f"generator.init={gray_source}",
                   "--set", "generator.excitation=true", "--set", "train.kimg=0", "--set", "train.bn_batches=0",
                   "--run-dir", run)
    assert res.exit_code == 0, res.output
    src, dst = load_model(gray_source), load_model(run / "generator")
    assert dst.excitation
    z = torch.randn(8, 16)
    for mode in (False, True):  # eval mode and training mode (BatchNorm on the batch)
        assert torch.equal(dst.train(mode)(z), src.train(mode)(z).expand(-1, 3, -1, -1))
    report = json.loads((run / "transfer.json").read_text())["generator"]
    assert report["new"] == ["excite.gate.1.weight", "excite.gate.3.weight"]


def test_excitation_gates_each_image_by_its_coarse_features():
    """Once its last conv has weights, the excitation scales the last hidden block's channels differently for
    each image, by what the 4x4 block drew for it, within (0, 2)."""
    g = DCGANGenerator(resolution=32, ngf=8, latent_dim=16, excitation=True).eval()
    z = torch.randn(4, 16)
    plain = g(z)
    with torch.no_grad():
        g.excite.gate[-1].weight.normal_()
        early = g.blocks[0](z.view(4, 16, 1, 1))
        gates = 2 * torch.sigmoid(g.excite.gate(early))
    assert gates.shape == (4, 8, 1, 1) and 0 < gates.min() and gates.max() < 2
    assert (gates.std(0) > 1e-3).all()  # each image its own gates
    assert not torch.equal(g(z), plain)


def test_a_source_with_excitation_is_not_widened(tmp_path):
    source = export_model(DCGANGenerator(resolution=32, ngf=8, latent_dim=16, excitation=True), tmp_path / "src",
                          "generator")
    recipe = load_recipe("recipes/anime_dcgan.yaml", ["data.resolution=32", "generator.ngf=16",
                                                      "generator.latent_dim=16", f"generator.init={source}"])
    with pytest.raises(TransferError, match="skip-layer excitation, which cannot be widened: set generator.ngf to 8"):
        warm_start_generator(build_generator(recipe), recipe, None)


def test_excitation_needs_a_dcgan_generator():
    with pytest.raises(RecipeError, match="generator.excitation=True does nothing unless generator.kind=dcgan"):
        load_recipe("recipes/anime_pg.yaml", ["generator.excitation=true"])
