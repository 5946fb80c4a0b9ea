"""The GAN objective: short real runs with every loss term switched on give the weights that the code before the
objective was a module gave (sha256 per tensor, recorded in tests/data/objective_hashes.json from that code
with the same settings, retired keys left out); the terms it
reports; a new term as one class; the view of the fakes the G step reuses."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner

from ganxfer.cli import main
from ganxfer.nets import export_model
from ganxfer.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from ganxfer.nets.projected import ProjectedDiscriminator
from ganxfer.objective import G_TERMS, Fakes, Judge, Objective, Term
from ganxfer.recipe import load_recipe

FIXTURE = Path(__file__).parent / "data" / "objective_hashes.json"
RECORD = os.environ.get("GANXFER_RECORD_OBJECTIVE") == "1"  # rewrite the fixture (only from a reference commit)
BASE = ["--set", "data.limit=64", "--set", "data.resolution=32", "--set", "generator.ngf=8",
        "--set", "discriminator.ndf=8", "--set", "train.batch_size=8", "--set", "train.log_every_kimg=0.016",
        "--set", "train.sample_every_kimg=1000", "--set", "train.checkpoint_every_kimg=1000",
        "--set", "augment.policy=color,translation,cutout", "--set", "data.hflip=true", "--set", "train.ema=0.9",
        "--set", "loss.r1_gamma=1.0", "--set", "loss.r1_every=2", "--set", "train.num_samples=4",
        "--set", "train.bn_batches=1"]
PROJECTED = ["--set", "discriminator.kind=projected", "--set", "discriminator.pixel_d=true",
             "--set", "discriminator.ndf=64", "--set", "discriminator.pixel_ndf=8",  # BASE's ndf was the pixel D's
             "--set", "discriminator.input_size=32", "--set", "discriminator.out_indices=[1,2]",
             "--set", "discriminator.conditional=10", "--set", "loss.classifier=1.0", "--set", "loss.kind=hinge"]
CONFIGS = {
    # every G term on a DCGAN D, warm-started, two D steps per G step
    "dcgan_all": ["--set", "loss.mode_seeking=1.0", "--set", "loss.saturation=1.0", "--set", "loss.fine_detail=1.0",
                  "--set", "loss.fine_detail_size=16", "--set", "loss.top_k=0.5", "--set", "loss.top_k_kimg=0.016",
                  "--set", "train.d_steps=2", "--set", "train.kimg=0.064"],
    # a conditional projected D (frozen lite0, features reused) with a pixel D and its class head (CatGAN's term)
    "projected_confident": [*PROJECTED, "--set", "train.kimg=0.032"],
}
LOGGED = {"dcgan_all": {"r1", "mode_seeking", "saturation", "fine_detail"}, "projected_confident": {"r1", "classifier"}}


def tensor_hashes(path: Path) -> dict[str, str]:
    """sha256 of each tensor's dtype, shape and bytes."""
    out = {}
    for name, t in sorted(safetensors.torch.load_file(str(path)).items()):
        h = hashlib.sha256(f"{t.dtype} {tuple(t.shape)}".encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        out[name] = h.hexdigest()
    return out


def checksums(path: Path) -> list[float]:
    """The sum of squares of each file's floating-point tensors (float64): a machine-independent fingerprint."""
    tensors = safetensors.torch.load_file(str(path))
    return [t.double().square().sum().item() for _, t in sorted(tensors.items()) if t.is_floating_point()]


def machine() -> str:
    """What CPU kernels depend on: torch's version and the instruction set it dispatches to."""
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"


def trained(config: str, run: Path, init: Path) -> dict[str, Path]:
    """Train ``config`` into ``run``; the files whose tensors the fixture records."""
    extra = ["--set", f"generator.init={init}"] if config == "dcgan_all" else []
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *BASE, *CONFIGS[config], *extra,
                                    "--run-dir", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {k for r in rows if "loss_d" in r for k in r} >= LOGGED[config]  # every term was on
    (last,) = sorted((run / "checkpoints").glob("step-*"))[-1:]
    return {"generator": run / "generator" / "model.safetensors",
            "discriminator": run / "discriminator" / "model.safetensors",
            **{f"checkpoint/{p.stem}": p for p in sorted(last.glob("*.safetensors")) if not p.stem.startswith("rng")}}


@pytest.fixture(scope="module")
def init_generator(tmp_path_factory) -> Path:
    """A seeded random 32 px generator, exported: the warm start that loss.anchor holds the fakes to."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("init") / "generator"
    export_model(DCGANGenerator(resolution=32, channels=1, ngf=8), folder, "generator")
    return folder


@pytest.mark.parametrize("config", CONFIGS)
def test_objective_gives_the_recorded_weights(config, mnist_data, lite0_cache, init_generator, tmp_path,
                                              monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    files = trained(config, tmp_path / "run", init_generator)
    found = {"hashes": {k: tensor_hashes(p) for k, p in files.items()},
             "checksums": {k: checksums(p) for k, p in files.items()}}
    if RECORD:
        recorded = json.loads(FIXTURE.read_text()) if FIXTURE.is_file() else {}
        recorded["machine"] = machine()
        recorded[config] = found
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        return
    recorded = json.loads(FIXTURE.read_text())
    assert found["hashes"].keys() == recorded[config]["hashes"].keys()
    if recorded["machine"] == machine():  # the same kernels: bit for bit
        for name, hashes in recorded[config]["hashes"].items():
            differ = [k for k in hashes if found["hashes"][name].get(k) != hashes[k]]
            assert not differ and found["hashes"][name].keys() == hashes.keys(), f"{name}: {differ}"
    else:  # other kernels round differently: the weights' fingerprints agree to float32 rounding
        for name, sums in recorded[config]["checksums"].items():
            assert found["checksums"][name] == pytest.approx(sums, rel=1e-5), name


def objective_for(*sets: str) -> Objective:
    recipe = load_recipe("recipes/mnist_dcgan.yaml", ["data.resolution=32", "generator.ngf=8", "discriminator.ndf=8",
                                                      *sets])
    return Objective(recipe)


def test_objective_reports_the_terms_the_recipe_switches_on():
    assert objective_for().names == ("loss_d", "loss_g")
    assert objective_for("loss.r1_gamma=1", "loss.mode_seeking=1", "loss.saturation=1").names == \
        ("loss_d", "loss_g", "r1", "mode_seeking", "saturation")
    assert objective_for("discriminator.conditional=10", "loss.classifier=1").terms == ("classifier",)  # G's side
    assert objective_for("loss.saturation=1").pre_tanh and not objective_for("loss.mode_seeking=1").pre_tanh


class Brightness(Term):
    """A term written for this test: the fakes' mean, which G lowers."""

    name = "brightness"

    @classmethod
    def build(cls, recipe):
        return cls(0.25)

    def __call__(self, seen):
        return seen.fakes.images.float().mean()


def test_a_new_term_is_one_class(monkeypatch):
    """Listing a Term class in G_TERMS is all it takes: the G loss gains weight x term, and it is reported."""
    torch.manual_seed(0)
    D = DCGANDiscriminator(resolution=32, channels=1, ndf=8)
    G = DCGANGenerator(resolution=32, channels=1, ngf=8)
    judge = Judge(D, lambda x: x)
    plain = objective_for()
    monkeypatch.setattr("ganxfer.objective.G_TERMS", (*G_TERMS, Brightness))
    extended = objective_for()
    assert extended.names[-1] == "brightness"
    fakes = plain.generate(G, torch.randn(4, 100))
    base, none = plain.g_loss(judge, fakes, 0.0)
    loss, terms = extended.g_loss(judge, fakes, 0.0)
    assert none == {} and torch.equal(terms["brightness"], fakes.images.mean())
    assert torch.allclose(loss, base + 0.25 * fakes.images.mean())


def test_judge_shows_the_g_step_the_d_steps_view_of_the_fakes():
    """With a frozen projected D's features, the fakes are augmented once per iteration (in the last D step) and
    the G step judges that view again; without them, each step augments afresh."""
    torch.manual_seed(0)
    D = ProjectedDiscriminator("test_efficientnet", resolution=32, channels=1, head_channels=8).eval()
    fakes = Fakes(torch.rand(2, 1, 32, 32, requires_grad=True) * 2 - 1, torch.randn(2, 100), None, None)
    for features, views in ((D.features, 1), (None, 2)):
        shown = []
        judge = Judge(D, lambda x, shown=shown: shown.append(x) or x + 0, features)
        d_view = judge.fakes_for_d(fakes, keep=True)
        g_view = judge.fakes_for_g(fakes)
        assert len(shown) == views
        assert all(torch.allclose(a, b) for a, b in zip(d_view.logits, g_view.logits, strict=True))
        (grad,) = torch.autograd.grad(sum(t.sum() for t in g_view.logits), fakes.images)  # G's gradient flows
        assert grad.abs().sum() > 0
