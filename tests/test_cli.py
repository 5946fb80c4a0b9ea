import subprocess
import sys

import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from ganxfer import __version__
from ganxfer.cli import main


def test_version_and_help():
    runner = CliRunner()
    assert __version__ in runner.invoke(main, ["--version"]).output
    for command in main.commands:
        res = runner.invoke(main, [command, "--help"])
        assert res.exit_code == 0 and "ganxfer " + command in res.output, command


def test_dry_run_prints_the_resolved_recipe(monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", "/data")
    res = CliRunner().invoke(main, ["train", "recipes/anime_dcgan.yaml", "--set", "train.kimg=7", "--dry-run"])
    assert res.exit_code == 0
    resolved = yaml.safe_load(res.output)
    assert resolved["train"]["kimg"] == 7.0 and resolved["data"]["path"] == "/data/anime-faces-64"


def test_bad_recipe_is_one_line_no_traceback():
    """A real process: exit code 2, one line on stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "ganxfer", "train", "recipes/mnist_dcgan.yaml",
                           "--set", "train.kimgg=3"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: recipes/mnist_dcgan.yaml: unknown key 'train.kimgg'; "
                                   "did you mean 'train.kimg'?")


def test_finetune_requires_an_init():
    res = CliRunner().invoke(main, ["finetune", "recipes/mnist_dcgan.yaml", "--dry-run"])
    assert res.exit_code == 2 and "finetune needs generator.init" in res.output


def test_sample_unknown_source():
    res = CliRunner().invoke(main, ["sample", "no-such-model", "--out", "x.png"])
    assert res.exit_code == 2 and "'no-such-model' is not a local path" in res.output


def test_sample_grid_has_ceil_sqrt_columns(tmp_path):
    """One column rule for every grid (run samples, card, sample, demo): 10 images make 4 columns and 3 rows."""
    res = CliRunner().invoke(main, ["sample", "dcgan-mnist-64", "--num", "10", "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 0, res.output
    side = 64 + 1  # image plus the 1-pixel padding
    assert Image.open(tmp_path / "g.png").size == (4 * side + 1, 3 * side + 1)


def test_recipes_lists_every_shipped_recipe_with_when_to_use_it():
    from ganxfer.recipe import recipe_summary, shipped_recipes

    res = CliRunner().invoke(main, ["recipes"])
    assert res.exit_code == 0
    for name, path in shipped_recipes().items():
        assert any(line.startswith(name + " ") and recipe_summary(path) in line for line in res.output.splitlines())


def test_click_errors_before_a_command_are_one_error_line():
    """`ganxfer --bogus` fails in click's own parsing, before any command: still `error: ...`, exit 2."""
    proc = subprocess.run([sys.executable, "-m", "ganxfer", "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: No such option '--bogus'. (see 'python -m ganxfer --help')\n"
    proc = subprocess.run([sys.executable, "-m", "ganxfer", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_of_class_draws_the_class_and_keeps_each_rows_values():
    from ganxfer.nets.dcgan import DCGANGenerator

    G = DCGANGenerator(resolution=32, channels=1, ngf=8, latent_dim=16)
    G.classes = ["a", "b", "c", "d"]
    z = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    for label in range(4):
        w = G.of_class(z, label)
        assert (w[:, :4].argmax(1) == label).all()
        assert torch.equal(w.sort(1).values, z.sort(1).values) and torch.equal(w[:, 4:], z[:, 4:])
    assert torch.equal(G.sample(3, seed=5, label=2), G.sample_z(G.of_class(
        torch.randn(3, 16, generator=torch.Generator().manual_seed(5)), 2)))


def test_a_class_conditional_run_on_a_labelled_folder_samples_by_class(anime_subset, mnist_data, tmp_path):
    """discriminator.conditional on a folder with a subfolder per class; the export records the classes, and
    `sample --class` draws one of them by name or index."""
    from ganxfer.data import load_mnist

    root = tmp_path / "two"
    (root / "digits").mkdir(parents=True)
    for i, digit in enumerate(load_mnist()[0][:60]):
        Image.fromarray(digit.numpy()).convert("RGB").save(root / "digits" / f"{i}.png")
    anime_subset(60, name="faces").rename(root / "faces")
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "anime_dcgan", "--run-dir", str(run), "--set", f"data.path={root}",
                                    "--set", "discriminator.conditional=2", "--set", "data.resolution=32",
                                    "--set", "generator.ngf=8", "--set", "discriminator.ndf=8",
                                    "--set", "train.batch_size=16", "--set", "train.kimg=0.032",
                                    "--set", "train.log_with=[]"])
    assert res.exit_code == 0, res.output
    import json

    assert json.loads((run / "generator" / "config.json").read_text())["ganxfer"]["classes"] == ["digits", "faces"]
    for name in ("faces", "1"):
        res = CliRunner().invoke(main, ["sample", str(run), "--num", "4", "--out", str(tmp_path / f"{name}.png"),
                                        "--class", name])
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["sample", str(run), "--num", "4", "--out", str(tmp_path / "c.png"),
                                    "--class", "cats"])
    assert res.exit_code == 2 and "knows the classes digits, faces" in res.output
    from ganxfer.nets import export_model
    from ganxfer.nets.dcgan import DCGANGenerator

    plain = export_model(DCGANGenerator(resolution=32, ngf=8), tmp_path / "plain", "generator")
    res = CliRunner().invoke(main, ["sample", str(plain), "--num", "4", "--out", str(tmp_path / "d.png"),
                                    "--class", "faces"])
    assert res.exit_code == 2 and "was not trained class-conditionally" in res.output
