"""Real processes on one run folder: the lock (a second writer is refused, a dead holder's lock is taken over),
and SIGINT / SIGTERM (a checkpoint is saved, or the message says truthfully that none exists)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from ganxfer import load_generator
from ganxfer.checkpoint import checkpoints
from ganxfer.cli import main
from ganxfer.lock import LockError, RunLock

TINY = ["--set", "data.limit=256", "--set", "data.resolution=32", "--set", "generator.ngf=8",
        "--set", "discriminator.ndf=8", "--set", "train.batch_size=16", "--set", "train.log_every_kimg=0.032"]


def start(run, *extra, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ganxfer", "train", "recipes/mnist_dcgan.yaml", *TINY,
                             "--run-dir", str(run), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def wait_for(predicate, proc: subprocess.Popen, seconds: float = 180) -> None:
    end = time.time() + seconds
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < end, "timed out"
        time.sleep(0.1)


def holder(run) -> dict:
    try:
        return json.loads((run / ".lock").read_text())
    except (OSError, ValueError):
        return {}


def test_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(mnist_data, tmp_path, caplog):
    run = tmp_path / "run"
    first = start(run, "--set", "train.kimg=1000")
    try:
        wait_for(lambda: holder(run).get("pid") == first.pid, first)
        assert holder(run)["host"] == socket.gethostname()
        second = subprocess.run([sys.executable, "-m", "ganxfer", "train", "recipes/mnist_dcgan.yaml", *TINY,
                                 "--run-dir", str(run), "--overwrite", "--set", "train.kimg=0.016"],
                                capture_output=True, text=True)
        errors = [x for x in second.stderr.splitlines() if x.startswith("error:")]
        assert second.returncode == 2 and len(errors) == 1 and "Traceback" not in second.stderr
        assert f"in use by another ganxfer run (PID {first.pid} on {socket.gethostname()}" in errors[0]
        assert first.poll() is None  # the holder trains on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert holder(run)["pid"] == first.pid  # a killed holder leaves its file, but the kernel dropped its lock
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--run-dir", str(run),
                                    "--overwrite", "--set", "train.kimg=0.016"])
    assert res.exit_code == 0, res.output
    assert f"left by PID {first.pid}" in caplog.text and "no longer running" in caplog.text
    assert not (run / ".lock").exists()


def test_lock_in_one_process(tmp_path):
    with RunLock(tmp_path / "run"):
        assert holder(tmp_path / "run")["pid"] == os.getpid()
        try:
            with RunLock(tmp_path / "run"):  # flock is per open file: a second holder is refused here too
                raise AssertionError("locked twice")
        except LockError as e:
            assert f"PID {os.getpid()}" in str(e)
    assert not (tmp_path / "run" / ".lock").exists()
    with RunLock(tmp_path / "other", enabled=False):  # a non-main process takes no lock
        assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(("sig", "when"), [(signal.SIGTERM, "training"), (signal.SIGINT, "starting")])
def test_a_signal_saves_a_checkpoint_or_says_none_exists(mnist_data, tmp_path, sig, when):
    run = tmp_path / "run"
    proc = start(run, "--set", "train.kimg=1000", "--set", "train.checkpoint_every_kimg=1000")
    log = run / "metrics.jsonl"
    if when == "training":
        wait_for(lambda: log.is_file() and "loss_d" in log.read_text(), proc)
    else:  # the lock is the first thing a run takes: setup has barely begun
        wait_for(lambda: holder(run).get("pid") == proc.pid, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], stderr[-2000:]
    errors = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr and f"stopped by {sig.name}" in errors[0]
    saved = checkpoints(run)
    if "saved checkpoints/" in errors[0]:  # the message names the checkpoint that exists
        assert [f"checkpoints/{p.name}" for p in saved] == [errors[0].split("saved ")[1].split(":")[0]]
        seen = json.loads((saved[0] / "trainer.json").read_text())["images_seen"]
        assert "generator/ holds the EMA generator so far" in errors[0]
        assert load_generator(str(run)).sample(2, seed=0).shape == (2, 1, 32, 32)  # `ganxfer sample RUN` works
        res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--run-dir", str(run),
                                        "--resume", "--set", f"train.kimg={(seen + 16) / 1000}"])
        assert res.exit_code == 0, res.output
    else:
        assert "no checkpoint was written" in errors[0] and saved == []
        assert when == "starting"
    assert not (run / ".lock").exists()


def test_ctrl_c_while_streaming_stops_the_run_with_a_checkpoint(anime_subset, tmp_path):
    """Ctrl-C signals the whole process group, the DataLoader's workers included: they leave it to the loop."""
    run = tmp_path / "run"
    proc = start(run, "--set", f"data.path={anime_subset(100)}", "--set", "data.in_memory_gb=0",
                 "--set", "data.workers=2", "--set", "train.kimg=1000", "--set", "train.checkpoint_every_kimg=1000",
                 start_new_session=True)  # its own process group, as a terminal's foreground job
    log = run / "metrics.jsonl"
    wait_for(lambda: log.is_file() and "loss_d" in log.read_text(), proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    errors = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr and "saved checkpoints/" in errors[0]


def test_an_overwrite_that_fails_after_its_checks_leaves_no_mixture(mnist_data, tmp_path):
    """--overwrite deletes the earlier run only once every check has passed, and then all of it: a new run that
    diverges right away leaves neither the old generator (another width) nor the old grids and warm-start report
    beside its recipe."""
    run = tmp_path / "run"
    first = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.032",
                                      "--run-dir", str(run)])
    assert first.exit_code == 0, first.output
    (run / "transfer.json").write_text(json.dumps({"generator": {"source": "an earlier start"}}))
    assert (run / "generator").is_dir() and len(list((run / "samples").iterdir())) > 1
    second = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "generator.ngf=16",
                                       "--set", "optim.g_lr=1e30", "--set", "optim.d_lr=1e30",
                                       "--set", "train.kimg=1", "--overwrite", "--run-dir", str(run)])
    assert second.exit_code == 2 and "diverged" in second.output, second.output
    assert not (run / "generator").exists() and not (run / "discriminator").exists()
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["000000000.png"]  # the new run's first grid
    assert not (run / "transfer.json").exists() and checkpoints(run) == []


def test_a_run_that_writes_nothing_leaves_no_empty_folder(tmp_path):
    """Bad data found when the run starts: the new run folder it made is gone again; an existing one stays."""
    run = tmp_path / "runs" / "new"
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--set",
                                    f"data.path={tmp_path / 'nothing-here'}", "--run-dir", str(run)])
    assert res.exit_code == 2 and "does not exist" in res.output and not run.exists()
    run.mkdir(parents=True)
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--set",
                                    f"data.path={tmp_path / 'nothing-here'}", "--run-dir", str(run)])
    assert res.exit_code == 2 and run.is_dir()
