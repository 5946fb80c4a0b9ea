"""The bundled dcgan-mnist-64 can be rebuilt from the repository: its stages are shipped recipes, every init
names an earlier stage, and the soup that ends the build averages two of them."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ganxfer.bundle import BUILDS, Soup, plan, soup
from ganxfer.errors import GanxferError
from ganxfer.nets.dcgan import DCGANGenerator

PRETRAINED = Path(__file__).parent.parent / "ganxfer" / "pretrained"


def test_the_build_dry_runs_every_stage_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # stage inits are runs/<stage>: nothing may exist yet for the plan to hold
    steps = plan("dcgan-mnist-64")
    *stages, last = steps
    assert isinstance(last, Soup) and len(stages) == len(BUILDS["dcgan-mnist-64"].stages) == 7
    names = [r.name for r in stages]
    for i, recipe in enumerate(stages):
        for init in (recipe.generator.init, recipe.discriminator.init):
            if init:
                assert init.startswith("runs/") and init[5:] in names[:i], (recipe.name, init)
    assert stages[0].generator.init is None and stages[-1].loss.classifier == 1.0
    assert {last.first, last.second} <= set(names)
    assert sum(r.train.kimg for r in stages if r.data.path == "mnist") > 1000


def test_the_build_command_dry_run_prints_the_stages(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ganxfer.bundle", "dcgan-mnist-64", "--out", str(tmp_path),
                           "--dry-run"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "dcgan-mnist-64-stage1: 250 kimg, from scratch"
    assert lines[-1] == "soup: 0.5 x dcgan-mnist-64-stage5 + 0.5 x dcgan-mnist-64-stage7"
    assert list(tmp_path.iterdir()) == []


def test_an_init_that_no_earlier_stage_makes_is_refused(monkeypatch):
    build = BUILDS["dcgan-mnist-64"]
    monkeypatch.setitem(BUILDS, "broken", type(build)(stages=build.stages[1:], soup=build.soup))
    with pytest.raises(GanxferError, match=r"generator.init=runs/dcgan-mnist-64-stage1 is not the output of an "
                                           r"earlier stage \(none yet\)"):
        plan("broken")


def test_nothing_bundled_names_a_private_run_folder():
    for path in PRETRAINED.rglob("*"):
        if path.is_file() and path.suffix in (".md", ".yaml", ".json"):
            text = path.read_text()
            assert "runs/m" not in text and "recipe.yaml" not in text, path
    card = (PRETRAINED / "dcgan-mnist-64" / "README.md").read_text()
    assert "python -m ganxfer.bundle dcgan-mnist-64 --out DIR" in card
    for stage in BUILDS["dcgan-mnist-64"].stages:
        assert f"`{stage}`" in card, stage


def test_soup_averages_one_architecture_and_refuses_two():
    """A model soup: every float tensor is the weighted mean of the two networks', the BatchNorm batch count is the
    first's, neither input changes; another width or a weight outside [0, 1] is refused in one line."""
    torch.manual_seed(0)
    a, b = (DCGANGenerator(resolution=32, channels=1, ngf=8, latent_dim=16) for _ in range(2))
    b.train()(torch.randn(8, 16))  # b's BatchNorm has seen a batch: other statistics, another batch count
    before = {k: v.clone() for k, v in a.state_dict().items()}
    mixed = soup(a, b, 0.25)
    sa, sb, sm = a.state_dict(), b.state_dict(), mixed.state_dict()
    assert all(torch.equal(before[k], sa[k]) for k in sa)
    for k in sm:
        expect = 0.25 * sa[k] + 0.75 * sb[k] if sa[k].is_floating_point() else sa[k]
        assert torch.allclose(sm[k], expect, atol=1e-6), k
    assert not torch.equal(sa["blocks.0.0.weight"], sb["blocks.0.0.weight"])
    with pytest.raises(GanxferError, match="one architecture"):
        soup(a, DCGANGenerator(resolution=32, channels=1, ngf=16, latent_dim=16), 0.5)
    with pytest.raises(GanxferError, match="between 0 and 1"):
        soup(a, b, 1.5)
