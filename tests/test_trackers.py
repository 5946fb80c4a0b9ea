"""Experiment trackers through Accelerate (``train.log_with``): Weights & Biases in offline mode, read back from its
run file, and the one-line refusals. TensorBoard's own test is in test_loop.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from ganxfer.cli import main

TINY = ["--set", "data.limit=256", "--set", "data.resolution=32", "--set", "generator.ngf=8",
        "--set", "discriminator.ndf=8", "--set", "train.batch_size=16", "--set", "train.log_every_kimg=0.032"]
BLOCK, CHUNK_HEADER = 32768, 7


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` run file: W&B's LevelDB-style log of 32 KiB blocks after a 7-byte
    header, each chunk crc32c(4) + length(2, little-endian) + type(1: full, 2: first, 3: middle, 4: last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending, records = path.read_bytes(), CHUNK_HEADER, b"", []
    assert data[:4] == b":W&B", "not a W&B run file"
    while pos + CHUNK_HEADER <= len(data):
        if BLOCK - pos % BLOCK < CHUNK_HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:
            break
        pending += data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def finished(run_file: Path, timeout: float = 300) -> list:
    """The run file's records once W&B's service has written its exit record (it writes after finish() returns)."""
    import wandb
    from google.protobuf.message import DecodeError

    wandb.teardown()  # stops the service, which flushes and closes the run file
    deadline = time.time() + timeout
    while True:
        try:
            records = wandb_records(run_file)
            if any(r.WhichOneof("record_type") == "exit" for r in records):
                return records
        except DecodeError:  # a record still being written
            pass
        if time.time() > deadline:
            pytest.fail(f"{run_file} has no exit record after {timeout:g} s")
        time.sleep(0.2)


def test_wandb_offline_gets_scalars_grids_and_the_recipe(mnist_data, wandb_offline, tmp_path, monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--set", "train.kimg=0.032",
                                    "--set", "train.log_with=[tensorboard,wandb]", "--run-dir", str(tmp_path / "run")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (run_file,) = wandb_offline.glob("offline-run-*/run-*.wandb")
    records = finished(run_file)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.project == "mnist_dcgan"  # Accelerate names the W&B project after the run
    config = {i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for i in r.config.update}
    assert config["train.batch_size"] == 16 and config["data.path"] == "mnist" and config["train.kimg"] == 0.032
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    assert [row["_step"] for row in history] == [0, 32]
    assert {"loss_d", "loss_g", "images_per_s", "wall_s", "grid_diversity"} <= history[1].keys()
    assert all(row["samples/_type"] == "images/separated" and row["samples/width"] == 8 * 32 + 18 for row in history)
    sheets = sorted(run_file.parent.glob("files/media/images/samples_*.png"))
    assert len(sheets) == 2 and Image.open(sheets[0]).size == (8 * 32 + 18, 8 * 32 + 18)
    assert list((tmp_path / "run" / "tb").rglob("events.out.tfevents.*"))  # TensorBoard alongside


def test_a_tracker_that_is_not_installed_is_one_line(monkeypatch):
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    absent = [t.value for t in LoggerType if t not in get_available_trackers()]
    if not absent:
        pytest.skip("every tracker Accelerate knows is installed")
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", "--set", f"train.log_with=[{absent[0]}]",
                                    "--dry-run"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert f"the {absent[0]} tracker is not installed; pip install {absent[0]}" in res.output
