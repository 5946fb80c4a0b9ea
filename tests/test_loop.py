"""End-to-end runs of the training loop through the CLI, on real MNIST digits and anime faces."""

import json
import math
import shutil

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner

from ganxfer.checkpoint import checkpoints
from ganxfer.cli import main
from ganxfer.data import load_mnist
from ganxfer.nets import load_model
from ganxfer.sources import load_generator

TINY = ["--set", "data.limit=256", "--set", "data.resolution=32", "--set", "generator.ngf=8",
        "--set", "discriminator.ndf=8", "--set", "train.batch_size=16", "--set", "train.log_every_kimg=0.032"]


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def weights(path):
    return safetensors.torch.load_file(str(path))


@pytest.fixture
def mnist_env(mnist_data, monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))


def test_mnist_run_writes_the_run_folder(mnist_env, tmp_path):
    run = tmp_path / "run"
    res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.096",
              "--set", "train.sample_every_kimg=0.048", "--set", "train.checkpoint_every_kimg=0.032",
              "--set", "train.keep_checkpoints=2", "--run-dir", run)
    assert res.exit_code == 0, res.output
    assert (run / "recipe.yaml").read_text().startswith("name: mnist_dcgan")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss_d" in r]
    assert [r["kimg"] for r in train] == [0.032, 0.064, 0.096]
    assert all(r["images_per_s"] > 0 and "loss_g" in r for r in train)
    assert [r["kimg"] for r in rows if "grid_diversity" in r] == [0, 0.048, 0.096]  # one per grid
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["000000000.png", "000000048.png", "000000096.png"]
    assert [p.name for p in checkpoints(run)] == ["step-000000000064", "step-000000000096"]
    assert list((run / "tb").rglob("events.out.tfevents.*"))
    for part in ("generator", "discriminator"):
        assert {p.name for p in (run / part).iterdir()} >= {"config.json", "model.safetensors"}
    g = load_generator(str(run))
    assert g.sample(2, seed=0).shape == (2, 1, 32, 32)


def test_resume_equals_one_run(mnist_env, tmp_path):
    """2N steps in one run == N steps + resume to 2N (augmentation, flips, R1, Top-k, a conditional D with its class
    head and the saturation penalty included)."""
    extra = ["--set", "augment.policy=color,translation,cutout", "--set", "data.hflip=true",
             "--set", "loss.r1_gamma=1.0", "--set", "loss.r1_every=2", "--set", "train.ema=0.9",
             "--set", "loss.mode_seeking=1.0", "--set", "loss.top_k=0.5", "--set", "loss.top_k_kimg=0.1",
             "--set", "discriminator.conditional=10", "--set", "loss.classifier=1.0", "--set", "loss.saturation=1.0"]
    full, half = tmp_path / "full", tmp_path / "half"
    assert cli("train", "recipes/mnist_dcgan.yaml", *TINY, *extra, "--set", "train.kimg=0.128",
               "--run-dir", full).exit_code == 0
    assert cli("train", "recipes/mnist_dcgan.yaml", *TINY, *extra, "--set", "train.kimg=0.064",
               "--run-dir", half).exit_code == 0
    first_half = weights(half / "generator" / "model.safetensors")
    res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, *extra, "--set", "train.kimg=0.128",
              "--run-dir", half, "--resume")
    assert res.exit_code == 0, res.output
    a, b = weights(full / "generator" / "model.safetensors"), weights(half / "generator" / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) <= 1e-6
    assert any(not torch.equal(first_half[k], b[k]) for k in b)  # the resumed run really trained on
    rows = lambda run: [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["kimg"] for r in rows(full) if "loss_d" in r] == [r["kimg"] for r in rows(half) if "loss_d" in r]
    assert all(r["mode_seeking"] > 0 for r in rows(full) if "loss_d" in r)  # the term is on and logged
    assert all(r["saturation"] >= 0 for r in rows(full) if "loss_d" in r)  # logged (0 while inside +-3)


def test_top_k_changes_what_g_learns(mnist_env, tmp_path):
    """loss.top_k reaches the G step: the same seed and data, with and without it, train different generators."""
    runs = {}
    for name, share in (("all", "1.0"), ("top", "0.25")):
        runs[name] = tmp_path / name
        res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.064", "--set", "train.ema=0",
                  "--set", f"loss.top_k={share}", "--run-dir", runs[name])
        assert res.exit_code == 0, res.output
    a, b = (weights(runs[n] / "generator" / "model.safetensors") for n in ("all", "top"))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_conditional_d_learns_the_labels(mnist_env, tmp_path):
    """discriminator.conditional: reals reach D with their MNIST labels and fakes with their code, so after a short
    run D scores most unseen real digits higher as their own class than as another."""
    run = tmp_path / "run"
    res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "data.limit=2048", "--set", "train.kimg=3",
              "--set", "train.batch_size=32", "--set", "train.ema=0", "--set", "discriminator.conditional=10",
              "--set", "discriminator.ndf=16", "--run-dir", run)
    assert res.exit_code == 0, res.output
    d = load_model(run / "discriminator").eval()
    digits, labels = load_mnist(train=False)
    x = F.interpolate(digits[:512, None].float(), size=32, mode="bilinear", antialias=True) / 127.5 - 1
    with torch.no_grad():
        own, other = d(x, labels=labels[:512]).logits, d(x, labels=(labels[:512] + 5) % 10).logits
    assert (own > other).float().mean() > 0.65, (own > other).float().mean()  # 0.74 measured; chance 0.5


def test_reused_features_change_only_the_cost(lite0_cache, anime_dir, tmp_path):
    """With a frozen projected D and no augmentation (the one draw the two steps would otherwise not share),
    ``train.reuse_features`` trains the same generator as running the backbone again in the G step."""
    gens = {}
    for reuse in ("true", "false"):
        run = tmp_path / reuse
        res = cli("train", "recipes/anime_projected.yaml", "--run-dir", run, "--set", "data.limit=256",
                  "--set", "train.kimg=0.064", "--set", "train.batch_size=16", "--set", "train.num_samples=16",
                  "--set", "generator.ngf=16", "--set", "augment.policy=''", "--set", "train.ema=0",
                  "--set", f"train.reuse_features={reuse}")
        assert res.exit_code == 0, res.output
        gens[reuse] = weights(run / "generator" / "model.safetensors")
    a, b = gens["true"], gens["false"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_minutes_budget_and_snapshots(mnist_env, tmp_path):
    """train.minutes stops on training time, before the kimg budget; snapshots are loadable exports."""
    run = tmp_path / "run"
    res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=1000", "--set", "train.minutes=0.01",
              "--set", "train.snapshot_every_minutes=0.004", "--set", "train.snapshot_at_minutes=[0.002]",
              "--run-dir", run)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss_d" in r]
    assert 0.6 <= train_rows[-1]["wall_s"] < 60 and train_rows[-1]["kimg"] < 1000
    snaps = [r for r in rows if "snapshot" in r]
    names = [r["snapshot"] for r in snaps]  # a slow last step may pass several marks at once
    assert names[:3] == ["snapshots/min-0.002", "snapshots/min-0.004", "snapshots/min-0.008"]
    marks = [float(n.split("min-")[1]) for n in names]
    assert marks == sorted(marks) and all(m == 0.002 or round(m / 0.004, 6).is_integer() for m in marks)
    assert all(r["wall_s"] >= 60 * m for r, m in zip(snaps, marks, strict=True))
    for r in snaps:
        assert load_generator(str(run / r["snapshot"])).sample(2).shape == (2, 1, 32, 32)


def test_resume_takes_the_runs_own_recipe(mnist_env, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.032", "--set", "train.ema=0.9",
               "--run-dir", run).exit_code == 0
    res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.064", "--run-dir", run, "--resume")
    assert res.exit_code == 0, res.output
    assert "--set changes train.kimg: 0.032 -> 0.064" in res.output
    assert "differs from it in train.ema" in res.output
    assert "ema: 0.9" in (run / "recipe.yaml").read_text()


def test_tensorboard_gets_scalars_grids_and_the_recipe(mnist_env, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.032", "--run-dir", run).exit_code == 0
    events = [p for p in (run / "tb").rglob("events.out.tfevents.*") if p.parent.name == "mnist_dcgan"]
    acc = EventAccumulator(str(events[0].parent), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert {"loss_d", "loss_g", "grid_diversity"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Images("samples")] == [0, 32]
    assert (acc.Images("samples")[0].width, acc.Images("samples")[0].height) == (8 * 32 + 18, 8 * 32 + 18)
    hparams = list((run / "tb" / "mnist_dcgan").rglob("hparams.yml"))
    assert hparams and "train.batch_size: 16" in hparams[0].read_text()


def test_unknown_tracker_is_one_line(mnist_env):
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", "--set", "train.log_with=[tensorbord]",
                                    "--dry-run"])
    assert res.exit_code == 2 and "unknown tracker 'tensorbord'" in res.output and "wandb" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_interrupted_checkpoint_write_is_ignored(mnist_env, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.032", "--run-dir", run).exit_code == 0
    good = checkpoints(run)[-1]
    partial = run / "checkpoints" / ".tmp-step-000000000064"  # what a crash mid-write leaves
    shutil.copytree(good, partial)
    (partial / "trainer.json").unlink()
    assert checkpoints(run) == [good]
    res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.064", "--run-dir", run, "--resume")
    assert res.exit_code == 0, res.output
    assert json.loads((checkpoints(run)[-1] / "trainer.json").read_text())["images_seen"] == 64


def test_run_folder_guards(mnist_env, tmp_path):
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--run-dir", str(run), "--resume"])
    assert res.exit_code == 2 and "no checkpoint" in res.output and "Traceback" not in res.output
    assert cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.016", "--run-dir", run).exit_code == 0
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--run-dir", str(run)])
    assert res.exit_code == 2 and "already holds checkpoints" in res.output
    assert checkpoints(run)  # nothing lost
    res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.016", "--run-dir", run, "--overwrite")
    assert res.exit_code == 0


def test_anime_dcgan_on_real_faces(anime_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", str(anime_dir.parent))
    run = tmp_path / "anime"
    res = cli("train", "recipes/anime_dcgan.yaml", "--set", "data.limit=200", "--set", "generator.ngf=16",
              "--set", "discriminator.ndf=16", "--set", "train.batch_size=32", "--set", "train.kimg=0.064",
              "--run-dir", run)
    assert res.exit_code == 0, res.output
    assert weights(run / "generator" / "model.safetensors")["to_rgb.weight"].shape == (16, 3, 4, 4)
    out = tmp_path / "grid.png"
    assert cli("sample", run / "generator", "--num", "9", "--out", out).exit_code == 0
    from PIL import Image

    assert Image.open(out).size == (3 * 64 + 4, 3 * 64 + 4)
    folder = tmp_path / "fakes"
    assert cli("sample", run, "--num", "5", "--out", folder, "--seed", "3").exit_code == 0
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:06d}.png" for i in range(5)]


def test_divergence_stops_the_run_and_keeps_the_checkpoints(mnist_env, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.032", "--run-dir", run).exit_code == 0
    files = lambda: {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "tb" not in p.parts}  # noqa: E731
    before = files()
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.64",
                                    "--set", "optim.g_lr=1.0e+30", "--run-dir", str(run), "--resume"])
    errors = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "Traceback" not in res.output
    assert "training diverged" in errors[0] and "newest checkpoint is checkpoints/step-000000000032" in errors[0]
    after = files()  # recipe.yaml records the resume's --set; checkpoints, exports, samples and log are as they were
    assert {p: b for p, b in after.items() if p.name != "recipe.yaml"} == \
        {p: b for p, b in before.items() if p.name != "recipe.yaml"}


def test_divergence_before_any_checkpoint_exports_nothing(mnist_env, tmp_path):
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.064",
                                    "--set", "optim.g_lr=1.0e+30", "--set", "optim.d_lr=1.0e+30",
                                    "--run-dir", str(run)])
    assert res.exit_code == 2 and "training diverged" in res.output and "no checkpoint was written" in res.output
    assert not checkpoints(run) and not (run / "generator").exists() and not (run / "discriminator").exists()
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["000000000.png"]  # the untrained grid only


def test_fp16_on_the_cpu_is_refused(mnist_env, tmp_path):
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "loss.r1_gamma=0",
                                    "--set", "train.mixed_precision=fp16", "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2 and "fp16 needs a GPU" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()


def test_precisions_one_after_another_in_one_process(mnist_env, tmp_path):
    """Accelerate keeps one state per process; a second run of another precision (here bf16, then ``auto``)
    still trains, in the precision it asked for, and ``auto`` stays ``auto`` in RUN/recipe.yaml."""
    from ganxfer.parallel import native_precision

    for name, precision in (("no", "no"), ("bf16", "bf16"), ("auto", native_precision())):
        run = tmp_path / name
        res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.032",
                  "--set", f"train.mixed_precision={name}", "--run-dir", run)
        assert res.exit_code == 0, res.output
        assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["mixed_precision"] == name
        last = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "hardware" in r][-1]
        assert last["mixed_precision"] == precision
    assert native_precision() in ("no", "bf16")


def test_no_host_sync_per_step(mnist_env, tmp_path, monkeypatch, host_copies):
    """Losses stay on the device, and so do the images and labels: a run of 16 steps reads tensors into Python,
    and copies host memory to the device, exactly as often as a run of 9. Both check health twice (every 8 steps
    and at the end) and write one log row, two grids and one checkpoint; a read or a copy per step would make
    7 more. Counted reads: every way a tensor's value reaches ganxfer's code (torch's own reads, such as Adam's
    step count, which lives on the CPU by design, are not host syncs); copies: see ``host_copies``, which counts
    a CPU tensor's ``.to(device)`` on the CPU too. Only frames in ganxfer's own package count, wherever the
    clone and the venv live (a venv inside a clone named ganxfer holds torch under a path with /ganxfer/ in it).
    The D is class-conditional, so that the real labels take part."""
    import functools
    import sys
    from pathlib import Path

    import ganxfer

    package = str(Path(ganxfer.__file__).resolve().parent) + "/"
    ours = functools.cache(lambda filename: str(Path(filename).resolve()).startswith(package))
    reads = {"n": 0}
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            reads["n"] += ours(sys._getframe(1).f_code.co_filename)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    counts, copies = [], []
    for kimg in ("0.144", "0.256"):  # 9 and 16 steps of 16 images
        reads["n"] = 0
        host_copies.clear()
        res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", f"train.kimg={kimg}",
                  "--set", f"train.log_every_kimg={kimg}", "--set", "train.sample_every_kimg=0",
                  "--set", "train.checkpoint_every_kimg=0", "--set", "loss.r1_gamma=1", "--set", "loss.r1_every=2",
                  "--set", "discriminator.conditional=10", "--run-dir", tmp_path / kimg)
        assert res.exit_code == 0, res.output
        counts.append(reads["n"])
        copies.append(dict(host_copies))
    assert counts[0] > 0 and counts[1] == counts[0], counts
    per_step = {site: (copies[0].get(site, 0), n) for site, n in copies[1].items() if n != copies[0].get(site, 0)}
    assert copies[0] and not per_step, per_step  # the build's copies (e.g. the fixed latents) are seen


def test_frozen_discriminator_passes_gradient_to_the_images_only():
    """The G step's ``frozen(D)``: the backward reaches the images and leaves D's weights without gradients; then
    exactly the parameters that were trainable before are trainable again, even when the block raises."""
    from ganxfer.loop import frozen
    from ganxfer.nets.dcgan import DCGANDiscriminator

    D = DCGANDiscriminator(32, 3, 8)
    first = next(D.parameters()).requires_grad_(False)  # as a frozen backbone's would be
    trainable = [p.requires_grad for p in D.parameters()]
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    with frozen(D):
        D(x).logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in D.parameters())
    assert [p.requires_grad for p in D.parameters()] == trainable and not first.requires_grad
    with pytest.raises(RuntimeError), frozen(D):
        raise RuntimeError("a failed step")
    assert [p.requires_grad for p in D.parameters()] == trainable
    D(x).logits.sum().backward()  # outside the block D learns again
    assert all((p.grad is not None) == p.requires_grad for p in D.parameters())


def test_classifier_head_learns_the_real_labels(mnist_env, tmp_path):
    """loss.classifier on a projected D: the pixel D's class head, trained on real labels only, reads most unseen
    real digits after a short run, and G's term is logged: CatGAN's confidence term (mean entropy minus the batch
    mean's, in [-ln 10, ln 10], below 0 once the head reads the fakes as some class); the recipe refuses it
    without a conditional D or without a pixel D."""
    run = tmp_path / "run"
    res = cli("train", "recipes/mnist_projected.yaml", *TINY, "--set", "data.limit=2048", "--set", "train.kimg=4",
              "--set", "train.batch_size=32", "--set", "train.log_every_kimg=1", "--set", "train.ema=0",
              "--set", "generator.init=null", "--set", "discriminator.backbone=test_efficientnet",
              "--set", "discriminator.pretrained=false", "--set", "discriminator.conditional=10",
              "--set", "discriminator.ndf=64", "--set", "discriminator.pixel_ndf=8",
              "--set", "loss.classifier=1", "--run-dir", run)
    assert res.exit_code == 0, res.output
    lines = (run / "metrics.jsonl").read_text().splitlines()
    terms = [json.loads(x)["classifier"] for x in lines if '"classifier"' in x]
    assert len(terms) == 4 and all(math.isfinite(t) for t in terms)
    assert all(abs(t) <= math.log(10) + 1e-4 for t in terms) and terms[-1] < 0, terms
    d = load_model(run / "discriminator").train()  # D judges a batch of reals on its own statistics, as in training
    digits, labels = load_mnist(train=False)
    x = F.interpolate(digits[:512, None].float(), size=32, mode="bilinear", antialias=True) / 127.5 - 1
    with torch.no_grad():
        classes = d(x, labels=labels[:512]).classes
    acc = (classes.argmax(1) == labels[:512]).float().mean()
    assert acc > 0.35, acc  # 0.54 measured; chance 0.1
    for sets, hint in ((["discriminator.conditional=0"], "set discriminator.conditional to their number too"),
                       (["discriminator.conditional=10", "discriminator.pixel_d=false"], "discriminator.pixel_d=true")):
        res = cli("train", "recipes/mnist_projected.yaml", "--set", "loss.classifier=1",
                  *[a for s in sets for a in ("--set", s)], "--run-dir", tmp_path / "bad")
        assert res.exit_code != 0 and hint in res.output, res.output


def test_cadence_by_images_or_by_training_time():
    """A kimg setting counts images (0: never, only the run's end); without one the cadence counts seconds."""
    from ganxfer.bookkeeping import Cadence

    every_32 = Cadence(0.032, 20)
    assert [every_32.by_images(a, a + 16) for a in range(0, 96, 16)] == [False, True, False, True, False, True]
    assert not every_32.by_time(0, 1000)  # a kimg setting wins over the clock
    assert not any(Cadence(0, 20).by_images(a, a + 16) for a in range(0, 1000, 16))
    timed = Cadence(None, 20)
    assert not timed.by_images(0, 10**6)
    assert [timed.by_time(s, s + 8) for s in range(0, 48, 8)] == [False, False, True, False, True, False]


def test_default_cadence_follows_training_time(mnist_env, tmp_path, monkeypatch):
    """With no kimg cadence in the recipe, log rows, grids and checkpoints come every so many seconds of training
    time (here shortened), however fast the steps are; a kimg setting still wins."""
    import ganxfer.loop

    monkeypatch.setattr(ganxfer.loop, "LOG_S", 1.0)
    monkeypatch.setattr(ganxfer.loop, "GRID_S", 2.0)
    monkeypatch.setattr(ganxfer.loop, "CHECKPOINT_S", 3.0)
    monkeypatch.setattr(ganxfer.loop, "CHECK_EVERY", 1)  # the clock is read every step: a busy machine's slow steps
    run = tmp_path / "timed"
    res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.log_every_kimg=null",
              "--set", "train.kimg=1000", "--set", "train.minutes=0.12", "--set", "train.keep_checkpoints=100",
              "--set", "train.log_with=[]", "--run-dir", run)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r["wall_s"] for r in rows if "loss_d" in r]
    wall = logged[-1]
    assert wall >= 7.2  # the 0.12-minute budget
    assert len({int(s // 1.0) for s in logged[:-1]}) == len(logged) - 1 >= 3  # at most one per s, and the end
    steps = [r["step"] for r in rows if "loss_d" in r]
    assert steps[-1] > 3 * len(steps)  # rows by time, not one per step
    grids = sorted(int(p.stem) for p in (run / "samples").iterdir())
    assert 1 <= len(grids) - 2 <= wall // 2 + 1  # at most one per 2 s, kimg 0, the end (and 1 kimg)
    saved = checkpoints(run)
    assert 2 <= len(saved) <= wall // 3 + 1  # at most one per 3 s, and the end

    run = tmp_path / "by_kimg"  # an explicit kimg cadence wins over the clock
    res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.256", "--set", "train.log_with=[]",
              "--set", "train.checkpoint_every_kimg=0.128", "--set", "train.sample_every_kimg=0", "--run-dir", run)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in rows if "loss_d" in r] == [0.032 * k for k in range(1, 9)]
    assert [p.name for p in checkpoints(run)] == ["step-000000000128", "step-000000000256"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["000000000.png", "000000256.png"]


def test_channels_last_runs_g_and_d_end_to_end(mnist_env, tmp_path, monkeypatch):
    """train.channels_last: G's and D's weights are channels-last, and so are G's images and every image D judges
    (the reals and, through DiffAugment, the fakes); switched off, all are NCHW."""
    from ganxfer.nets.dcgan import DCGANDiscriminator, DCGANGenerator

    seen: list[tuple[str, torch.Tensor]] = []
    for cls, role in ((DCGANGenerator, "G"), (DCGANDiscriminator, "D")):
        def forward(self, x, *args, _original=cls.forward, _role=role, **kwargs):
            out = _original(self, x, *args, **kwargs)
            seen.extend((f"{_role} weight", p) for p in self.parameters() if p.dim() == 4)
            seen.append((f"{_role} {'images' if _role == 'G' else 'input'}", out if _role == "G" else x))
            return out

        monkeypatch.setattr(cls, "forward", forward)
    for on in (True, False):
        seen.clear()
        res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "data.channels=3", "--set", "train.kimg=0.032",
                  "--set", "augment.policy=color,translation,cutout", "--set", f"train.channels_last={str(on).lower()}",
                  "--run-dir", tmp_path / str(on))
        assert res.exit_code == 0, res.output
        assert {what for what, _ in seen} == {"G weight", "G images", "D weight", "D input"}
        layout = torch.channels_last if on else torch.contiguous_format
        wrong = [what for what, t in seen if not t.is_contiguous(memory_format=layout)]
        assert not wrong, (on, sorted(set(wrong)))


def test_spectral_norm_iterates_once_per_d_step(mnist_env, tmp_path, monkeypatch):
    """Spectral norm's power iteration runs once per D step in training: D's forwards on the reals and the fakes
    divide by one estimate, and the G step does not move it (torch would iterate on each of the three forwards)."""
    from collections import Counter

    from torch.nn.utils.parametrizations import _SpectralNorm

    calls: Counter = Counter()
    original = _SpectralNorm._power_method

    def counted(self, weight_mat, n_power_iterations):
        if n_power_iterations == self.n_power_iterations:  # not the 15 iterations at construction
            calls[id(self)] += 1
        return original(self, weight_mat, n_power_iterations)

    monkeypatch.setattr(_SpectralNorm, "_power_method", counted)
    res = cli("train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "discriminator.norm=spectral",
              "--set", "train.d_steps=2", "--set", "train.kimg=0.128", "--run-dir", tmp_path / "run")
    assert res.exit_code == 0, res.output
    # 4 normalised convs, each iterated once as torch registers it, then in each of the 8 D steps (4 x 2)
    assert len(calls) == 4 and set(calls.values()) == {1 + 8}, calls


def test_fused_adam_resumes_channels_last_state_exactly():
    """The loop's Adam is fused where torch has it (CPU float tensors); a checkpoint's optimizer state, stored NCHW,
    takes the layout of channels-last parameters when loaded, so the next step is the uninterrupted one (fused Adam
    reads parameter and state as flat memory: NCHW state would update them wrongly, with no error)."""
    from ganxfer.checkpoint import _join, _split
    from ganxfer.loop import fused_adam, optimizer_groups
    from ganxfer.nets.dcgan import DCGANDiscriminator

    torch.manual_seed(0)
    nets = [DCGANDiscriminator(32, 3, 8).to(memory_format=torch.channels_last) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [fused_adam(optimizer_groups(d, 1e-2), (0.5, 0.99)) for d in nets]
    assert all(o.param_groups[0]["fused"] for o in opts)
    x = torch.randn(4, 3, 32, 32)

    def step(d: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        d(x).logits.square().mean().backward()
        opt.step()

    for d, o in zip(nets, opts, strict=True):
        step(d, o)
    tensors: dict[str, torch.Tensor] = {}
    opts[1].load_state_dict(_join(_split(opts[1].state_dict(), "opt_d", tensors), tensors))  # as a resume does
    for d, o in zip(nets, opts, strict=True):
        step(d, o)
    assert all(torch.equal(a, b) for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True))
