"""Checkpoints on real MNIST runs: pickle-free contents, resume past damage, and storage faults as one line."""

import errno
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import asdict

import pytest
from click.testing import CliRunner

from ganxfer.checkpoint import Damaged, checkpoints, read_checkpoint
from ganxfer.cli import main

TINY = ["--set", "data.limit=256", "--set", "data.resolution=32", "--set", "generator.ngf=8",
        "--set", "discriminator.ndf=8", "--set", "train.batch_size=16", "--set", "train.log_every_kimg=0.032",
        "--set", "train.checkpoint_every_kimg=0.032", "--set", "train.ema=0.9"]
STEP32, STEP64 = "step-000000000032", "step-000000000064"


def train(run, *args):
    return CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--run-dir", str(run),
                                     *map(str, args)])


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def base_run(mnist_data, tmp_path_factory):
    """A finished 0.064 kimg run with checkpoints at 0.032 and 0.064 kimg (mnist_data: GANXFER_DATA is set)."""
    run = tmp_path_factory.mktemp("base") / "run"
    res = train(run, "--set", "train.kimg=0.064")
    assert res.exit_code == 0, res.output
    return run


@pytest.fixture
def run(base_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy)
    return copy


def test_checkpoints_hold_no_pickles(base_run):
    assert [p.name for p in checkpoints(base_run)] == [STEP32, STEP64]
    names = {p.name for p in (base_run / "checkpoints" / STEP64).iterdir()}
    assert names == {"G.safetensors", "D.safetensors", "ema.safetensors", "optim.safetensors", "optim.json",
                     "rng_0.safetensors", "trainer.json"}
    counters = json.loads((base_run / "checkpoints" / STEP64 / "trainer.json").read_text())
    assert counters == {"images_seen": 64, "step": 4, "d_step": 4, "wall_s": counters["wall_s"], "best": None}
    assert not list(base_run.rglob("*.bin")) and not list(base_run.rglob("*.pkl"))
    assert not (base_run / ".lock").exists()  # released on exit


def _empty_trainer(c):
    (c / "trainer.json").write_text("")


def _counter(key, value):
    def damage(c):
        (c / "trainer.json").write_text(json.dumps({**json.loads((c / "trainer.json").read_text()), key: value}))
    damage.__name__ = f"_{key}_{value!r}"
    return damage


def _truncated_weights(c):
    (c / "G.safetensors").write_bytes((c / "G.safetensors").read_bytes()[:1000])


def _truncated_optimizer(c):
    (c / "optim.safetensors").write_bytes((c / "optim.safetensors").read_bytes()[:-8])


@pytest.mark.parametrize("damage", [_empty_trainer, _truncated_weights, _truncated_optimizer, _counter("wall_s", "ten"),
                                    _counter("step", -1), _counter("d_step", 2.5), _counter("best", "low")])
def test_resume_falls_back_past_a_damaged_checkpoint(run, damage, caplog):
    caplog.set_level(logging.INFO)
    damage(run / "checkpoints" / STEP64)
    (run / "checkpoints" / "step-abc").mkdir()
    (run / "checkpoints" / ".tmp-step-000000000080").mkdir()  # an interrupted write
    (run / "checkpoints" / ".old-step-000000000016").mkdir()  # an interrupted prune
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"kimg": 0.0')  # a crash mid-line
    res = train(run, "--set", "train.kimg=0.096", "--resume")
    assert res.exit_code == 0, res.output
    assert f"skipping checkpoints/{STEP64}" in caplog.text and "skipping checkpoints/step-abc" in caplog.text
    assert f"resumed from {run / 'checkpoints' / STEP32}" in caplog.text
    assert "dropped 1 damaged line" in caplog.text
    assert [p.name for p in checkpoints(run)] == [STEP64, "step-000000000096"]  # the damaged one was rewritten
    assert not list((run / "checkpoints").glob(".*")) and (run / "checkpoints" / "step-abc").is_dir()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in rows if "loss_d" in r] == [0.032, 0.064, 0.096]


def test_damaged_counters_make_a_checkpoint_unloadable(base_run, tmp_path):
    """Each counter of trainer.json is checked as it is read: a string, a negative or a fractional count, a
    non-finite time or best is damage, which --resume skips past."""
    good = read_checkpoint(base_run / "checkpoints" / STEP64, 0, ["G", "D", "ema"]).counters
    assert good.images_seen == 64 and isinstance(good.wall_s, float)
    for key, value in (("wall_s", "ten"), ("wall_s", float("inf")), ("step", -1), ("d_step", 2.5), ("best", "low"),
                       ("images_seen", True), ("step", None)):
        folder = tmp_path / f"{key}-{value}" / STEP64
        shutil.copytree(base_run / "checkpoints" / STEP64, folder)
        (folder / "trainer.json").write_text(json.dumps({**asdict(good), key: value}))
        with pytest.raises(Damaged, match=f"{key}="):
            read_checkpoint(folder, 0, ["G", "D", "ema"])


def test_no_loadable_checkpoint_is_one_line(run):
    for c in checkpoints(run):
        _empty_trainer(c)
    res = train(run, "--set", "train.kimg=0.096", "--resume")
    assert res.exit_code == 2 and "none of the 2 checkpoint(s)" in res.output and "--overwrite" in res.output
    assert len(error_lines(res.output)) == 1 and "Traceback" not in res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "generator.ngf=16", "--set", "train.kimg=0.096"], "does not fit this recipe"),
    (["--set", "train.kimg=0.032"], "train.kimg=0.032 is below the 0.064 kimg"),
])
def test_resume_that_cannot_continue_is_one_line(run, args, message):
    files = lambda: {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    res = train(run, *args, "--resume")
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert len(error_lines(res.output)) == 1
    assert files() == before  # nothing lost, nothing changed


@pytest.mark.parametrize(("code", "message"), [(errno.ENOSPC, "no space left to write into"),
                                               (errno.EROFS, "is not writable")])
def test_storage_fault_during_a_checkpoint_is_one_line(run, monkeypatch, code, message):
    """The disk fills (or turns read-only) halfway through a checkpoint's optimizer file (the OS edge is faked:
    files that checkpoint.py opens get half their bytes, then the OS error): the temporary folder goes."""
    import builtins

    import ganxfer.checkpoint

    class Full(io.FileIO):
        def write(self, data):
            super().write(bytes(data)[: len(data) // 2])
            raise OSError(code, os.strerror(code), self.name)

    def fake_open(path, mode="r", *args, **kwargs):
        if "optim.safetensors" in str(path) and "w" in mode:
            return Full(path, "w")
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(ganxfer.checkpoint, "open", fake_open, raising=False)
    res = train(run, "--set", "train.kimg=0.096", "--resume")
    assert res.exit_code == 2 and message in res.output and str(run / "checkpoints") in res.output
    assert "previous checkpoint is intact" in res.output
    assert len(error_lines(res.output)) == 1 and "Traceback" not in res.output
    assert [p.name for p in checkpoints(run)] == [STEP32, STEP64]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert not (run / ".lock").exists()


def test_file_size_limit_is_one_line(run):
    """A real ``ulimit -f`` (EFBIG) in a child process: one line naming the limit, no traceback."""
    import resource

    limit = 300_000  # above the log, sample grids and weights (250 kB), below the optimizer state (590 kB)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "ganxfer", "train", "recipes/mnist_dcgan.yaml", *TINY,
                           "--run-dir", str(run), "--set", "train.kimg=0.096", "--resume"],
                          preexec_fn=small_files, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(error_lines(proc.stderr)) == 1 and "Traceback" not in proc.stderr
    assert "exceeds the file-size limit" in proc.stderr and "ulimit -f" in proc.stderr
    assert [p.name for p in checkpoints(run)] == [STEP32, STEP64]
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_resume_on_another_device_type_reseeds_the_loop_and_says_so(run, tmp_path, caplog):
    """A checkpoint whose loop random state is a GPU's (Philox, 16 bytes) resumes on a CPU (mt19937): the loop's
    generator is seeded from that state and the images seen, the same on every resume, with a warning that the
    run is no longer bit-exact."""
    import safetensors.torch
    import torch

    newest = run / "checkpoints" / STEP64
    rng = safetensors.torch.load_file(str(newest / "rng_0.safetensors"))
    rng["loop"] = torch.arange(16, dtype=torch.uint8)  # what torch.Generator(device="cuda").get_state() holds
    safetensors.torch.save_file(rng, str(newest / "rng_0.safetensors"))
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    with caplog.at_level(logging.WARNING, logger="ganxfer.checkpoint"):
        for folder in (run, twin):
            res = train(folder, "--resume", "--set", "train.kimg=0.128")
            assert res.exit_code == 0, res.output
    assert caplog.text.count("holds the random state of another device type") == 2
    a, b = (safetensors.torch.load_file(str(f / "generator" / "model.safetensors")) for f in (run, twin))
    assert all(torch.equal(a[k], b[k]) for k in a)
