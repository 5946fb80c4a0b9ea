"""Several processes training one run on the CPU (gloo), launched as a user would: torchrun, one or two "machines".

The equivalence test is the proof that data parallelism is right: with ``train.sync_bn`` two processes of batch 8
train the weights that one process of batch 16 trains, through DiffAugment, flips, R1, two D steps per G step
and the fake-reuse step. Every multi-process run asserts that two processes really took part.
"""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner

from ganxfer.checkpoint import checkpoints
from ganxfer.cli import main

TINY = ["--set", "data.limit=256", "--set", "data.resolution=32", "--set", "generator.ngf=16",
        "--set", "discriminator.ndf=16", "--set", "train.batch_size=16", "--set", "train.log_every_kimg=0.032",
        "--set", "train.checkpoint_every_kimg=0.032", "--set", "train.keep_checkpoints=4", "--set", "train.ema=0.9",
        "--set", "augment.policy=color,translation,cutout", "--set", "data.hflip=true", "--set", "loss.r1_gamma=1.0",
        "--set", "loss.r1_every=2", "--set", "train.d_steps=2"]
SYNC = ["--set", "train.sync_bn=true"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TOL = 1e-5  # measured: 3e-7 with sync_bn; 5e-3 without it after one step


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(run, *args, nodes: int = 1, recipe: str = "recipes/mnist_dcgan.yaml", extra_env=None,
             accelerate: bool = False):
    """``ganxfer train`` in two processes: one machine with two (torchrun, or ``accelerate launch --multi_gpu``
    when ``accelerate``), or two "machines" (node ranks 0 and 1) with one each, meeting at a c10d rendezvous on
    localhost. Returns the processes' output, checked for exit 0."""
    port = free_port()
    env = {**os.environ, **ONE_THREAD, **(extra_env or {})}
    env.pop("ACCELERATE_USE_CPU", None)  # nothing but the launcher: ganxfer must see the two processes itself
    train = ["-m", "ganxfer", "train", recipe, *TINY, "--run-dir", str(run), *map(str, args)]
    if accelerate:  # on a machine without GPUs too: ganxfer asks Accelerate for gloo
        cmds = [[sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                 "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                 "--main_process_port", str(port), *train]]
    elif nodes == 1:
        cmds = [[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                 "--master_port", str(port), *train]]
    else:  # what each machine of a 2-node job runs (rendezvous id and endpoint shared)
        cmds = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                 "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "ganxfer-test",
                 "--node-rank", str(rank), *train] for rank in range(nodes)]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return "".join(out + err for out, err in outs)


def one_process(run, *args):
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--run-dir", str(run),
                                    *map(str, args)])
    assert res.exit_code == 0, res.output
    return res.output


def rows(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run, images: int, net: str = "G") -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run / "checkpoints" / f"step-{images:012d}" / f"{net}.safetensors"))


def gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest difference between two state dicts' float tensors."""
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())


def assert_two_processes(run, output: str, kimg: list[float]) -> None:
    """Two processes trained one run: one log row per kimg, each saying 2, and one exported generator."""
    log = rows(run)
    assert [r["kimg"] for r in log if "loss_d" in r] == kimg
    assert all(r["num_processes"] == 2 for r in log)
    assert all(r["batch_per_process"] == 8 for r in log if "loss_d" in r)
    assert [r["hardware"] for r in log if "hardware" in r] == [f"2x CPU ({len(os.sched_getaffinity(0))} cores)"]
    assert "global batch 16 = 2 x 8 per process" in output
    assert output.count("exported generator:") == 1
    assert {"rng_0.safetensors", "rng_1.safetensors"} <= {p.name for p in checkpoints(run)[-1].iterdir()}
    assert not (run / ".lock").exists()


@pytest.fixture(scope="module")
def one(mnist_data, tmp_path_factory):
    """The reference: one process, global batch 16, to 0.096 kimg (checkpoints at 32, 64 and 96 images)."""
    run = tmp_path_factory.mktemp("one") / "run"
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_process(run, *SYNC, "--set", "train.kimg=0.096")
    finally:
        torch.set_num_threads(torch_threads)
    return run


@pytest.fixture(scope="module")
def two(mnist_data, tmp_path_factory):
    """Two processes of batch 8 with train.sync_bn, to 0.064 kimg, launched by torchrun alone."""
    run = tmp_path_factory.mktemp("two") / "run"
    output = torchrun(run, *SYNC, "--set", "train.kimg=0.064")
    return run, output


def test_two_processes_train_one_run(two):
    run, output = two
    assert_two_processes(run, output, [0.032, 0.064])
    assert json.loads((checkpoints(run)[-1] / "trainer.json").read_text())["images_seen"] == 64


def test_sync_bn_two_processes_equal_one(one, two):
    """Same seed, same data order, global batch 16: 2 x 8 with sync_bn trains what 1 x 16 does."""
    run, _ = two
    for images in (32, 64):
        for net in ("G", "D"):
            assert gap(weights(one, images, net), weights(run, images, net)) < TOL, (images, net)
        assert gap(weights(one, images, "ema"), weights(run, images, "ema")) < TOL
    assert [r["kimg"] for r in rows(one) if "loss_d" in r][:2] == [r["kimg"] for r in rows(run) if "loss_d" in r]
    losses = lambda r: [(x["loss_d"], x["loss_g"], x["r1"]) for x in rows(r) if "loss_d" in x][:2]  # noqa: E731
    for a, b in zip(losses(one), losses(run), strict=True):
        assert a == pytest.approx(b, rel=1e-4)


def test_resume_across_world_sizes(one, two, tmp_path, caplog):
    """2 processes (torchrun) -> resume with 1 -> resume with 2 (accelerate launch): the images seen, the data
    order and the weights stay those of the uninterrupted one-process run."""
    run = tmp_path / "run"
    shutil.copytree(two[0], run)
    shutil.rmtree(run / "checkpoints" / "step-000000000064")  # continue from 32 images, written by 2 processes
    caplog.set_level(logging.INFO)
    one_process(run, *SYNC, "--set", "train.kimg=0.064", "--resume")
    assert "written by 2 process(es) and continues with 1" in caplog.text
    assert gap(weights(one, 64), weights(run, 64)) < TOL
    assert {p.name for p in checkpoints(run)[-1].iterdir() if p.name.startswith("rng_")} == {"rng_0.safetensors"}
    output = torchrun(run, *SYNC, "--set", "train.kimg=0.096", "--resume", accelerate=True)
    assert "written by 1 process(es) and continues with 2" in output
    assert gap(weights(one, 96), weights(run, 96)) < TOL
    log = rows(run)
    assert [r["kimg"] for r in log if "loss_d" in r] == [0.032, 0.064, 0.096]
    assert [r["num_processes"] for r in log if "loss_d" in r] == [2, 1, 2]
    assert json.loads((checkpoints(run)[-1] / "trainer.json").read_text())["images_seen"] == 96


def test_two_machines_without_sync_bn(one, tmp_path):
    """torchrun --nnodes 2 --nproc_per_node 1, rendezvous on localhost: one run, one export. Without sync_bn
    each process normalises by its own 8 images, so the weights leave the one-process run's (by far more than
    the float tolerance): BatchNorm is the only difference."""
    run = tmp_path / "run"
    output = torchrun(run, "--set", "train.kimg=0.032", nodes=2)
    assert_two_processes(run, output, [0.032])
    assert (run / "generator" / "model.safetensors").is_file() and (run / "discriminator" / "config.json").is_file()
    assert gap(weights(one, 32), weights(run, 32)) > 100 * TOL
    assert output.count("normalises BatchNorm over its own 8 images") == 1  # said once, by the main process
    assert "set train.sync_bn=true" in output


def test_projected_partial_backbone_two_processes(lite0_cache, anime_dir, tmp_path):
    """The traps of a pretrained D under DDP: frozen backbone stages (no gradients, eval-mode BatchNorm whose
    statistics the two D forwards of a step read), trained later stages, R1 through the backbone, the fake reuse.
    Frozen stages stay bit-identical to the pretrained weights; the trained stage moves."""
    run = tmp_path / "run"
    output = torchrun(run, "--set", "train.kimg=0.032", "--set", "discriminator.mode=partial",
                      "--set", "discriminator.trainable_from=3", "--set", "train.num_samples=16",
                      "--set", "discriminator.ndf=64",  # TINY's ndf is a dcgan D's; this projected D has none
                      recipe="recipes/anime_projected.yaml", extra_env={"GANXFER_DATA": str(anime_dir.parent)})
    assert_two_processes(run, output, [0.032])
    ref = safetensors.torch.load_file(str(next(lite0_cache.rglob("model.safetensors"))))
    body = {k.removeprefix("backbone."): v for k, v in weights(run, 32, "D").items() if k.startswith("backbone.")}
    late = [k for k in body if k.startswith(("blocks.3", "blocks.4", "blocks.5", "blocks.6", "conv_head"))]
    assert late and all(torch.equal(v, ref[k]) for k, v in body.items() if k not in late)
    assert any(not torch.equal(body[k], ref[k]) for k in late if k.endswith("weight"))


def hub_faces(cache: Path, faces: list[Path]) -> None:
    """A Hub dataset repo of one parquet shard of these JPEG faces (an Image feature, as `datasets` stores it),
    placed in huggingface_hub's cache layout under ``cache``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    snapshot = cache / "datasets--someone--faces" / "snapshots" / ("a" * 40)
    (snapshot / "data").mkdir(parents=True)
    (cache / "datasets--someone--faces" / "refs").mkdir()
    (cache / "datasets--someone--faces" / "refs" / "main").write_text("a" * 40)
    image = pa.array([{"bytes": f.read_bytes(), "path": f.name} for f in faces],
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": image}), snapshot / "data" / "train-00000-of-00001.parquet")


def test_the_main_process_extracts_and_embeds_first(lite0_cache, anime_dir, tmp_path):
    """Two processes on a hub: dataset of parquet shards with data.select: the main process extracts the images
    and embeds them for the selection (and caches both) while the other waits, which then finds both cached:
    one extraction and one embedding between them, not a race of two."""
    cache = tmp_path / "hf-cache"
    shutil.copytree(lite0_cache, cache / lite0_cache.name)
    hub_faces(cache, [anime_dir / f"{i:05d}.jpg" for i in range(128)])
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "GANXFER_CACHE": str(tmp_path / "ganxfer-cache")}
    run = tmp_path / "run"
    output = torchrun(run, "--set", "train.kimg=0.032", "--set", "data.path=hub:someone/faces",
                      "--set", "data.select=0.9", extra_env=env)
    assert_two_processes(run, output, [0.032])
    assert output.count("extracted 128 images from 1 parquet shard(s)") == 1
    assert output.count("features of 128 images from hub:someone/faces in") == 1  # computed and cached once
    assert output.count("features of hub:someone/faces: cache hit") == 1  # and read by the other process
    assert output.count("kept the 115 most typical of 128 images") == 2


def test_world_size_without_a_launcher_is_one_line(mnist_data, tmp_path):
    """WORLD_SIZE=2 set by hand, no launcher: no process could meet the other; one line says how to launch."""
    env = {**os.environ, **ONE_THREAD, "WORLD_SIZE": "2"}
    for var in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "RANK", "ACCELERATE_USE_CPU"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "ganxfer", "train", "recipes/mnist_dcgan.yaml", *TINY,
                           "--run-dir", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120)
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "WORLD_SIZE=2" in errors[0] and "torchrun --nproc_per_node N" in errors[0]
    assert not (tmp_path / "run").exists()


def test_sync_batchnorm_counts_in_python_and_keeps_r1s_gradient(mnist_data, monkeypatch, host_copies):
    """SyncBatchNorm in a world of two processes holding the same real digits (the all-reduce doubles what it is
    given): D's scores and its R1 gradient penalty's weight gradients (a gradient of a gradient through the
    all-reduce) are those of plain BatchNorm on the digits, and a forward copies nothing from the host."""
    import copy

    import torch.distributed as dist

    from ganxfer.data import load_data, to_float
    from ganxfer.nets.dcgan import DCGANDiscriminator
    from ganxfer.parallel import sync_batchnorm
    from ganxfer.schema import DataConfig

    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    x = to_float(load_data(DataConfig(path="mnist", resolution=32, channels=1, limit=16)).pixels)
    torch.manual_seed(0)
    plain = DCGANDiscriminator(32, 1, ndf=8).train()
    synced = sync_batchnorm(copy.deepcopy(plain))

    def r1(D: torch.nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
        images = x.clone().requires_grad_(True)
        scores = D(images).logits
        (grad,) = torch.autograd.grad(scores.sum(), images, create_graph=True)
        grad.square().sum().backward()
        return scores.detach(), [p.grad for p in D.parameters()]

    want = r1(plain)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: t.mul_(2))
    got = r1(synced)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
    for g, w in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-5)
    assert not [site for site in host_copies if site.startswith("parallel.py")], host_copies


def test_sync_batchnorm_converts_only_plain_batchnorm_and_back(lite0_cache):
    """sync_batchnorm swaps the BatchNorm2d layers of G and D in place (same state dict, same trainability; one
    process: same outputs), leaves a timm backbone's BatchNormAct2d alone; local_batchnorm gives a plain copy."""
    from ganxfer.nets.dcgan import DCGANDiscriminator, DCGANGenerator
    from ganxfer.nets.projected import ProjectedDiscriminator
    from ganxfer.parallel import SyncBatchNorm, local_batchnorm, sync_batchnorm

    torch.manual_seed(0)
    G = DCGANGenerator(32, 1, ngf=8, latent_dim=16)
    G.blocks[0].requires_grad_(False)
    z = torch.randn(4, 16)
    before, out = G.state_dict(), G(z)
    synced = sync_batchnorm(G)
    assert synced is G and sum(type(m) is SyncBatchNorm for m in G.modules()) == 3
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items()) and before.keys() == G.state_dict().keys()
    assert not G.blocks[0][1].weight.requires_grad and G.blocks[1][1].weight.requires_grad
    assert torch.equal(G(z), out)  # one process: plain BatchNorm
    plain = local_batchnorm(G)
    assert not any(isinstance(m, SyncBatchNorm) for m in plain.modules()) and any(
        isinstance(m, SyncBatchNorm) for m in G.modules())
    assert sum(type(m) is SyncBatchNorm for m in sync_batchnorm(DCGANDiscriminator(32, 1, ndf=8)).modules()) == 2
    D = sync_batchnorm(ProjectedDiscriminator(pretrained=True, resolution=64, heads="pg", pixel_ndf=8))
    assert not any(isinstance(m, SyncBatchNorm) for m in D.backbone.modules())
    assert any(isinstance(m, SyncBatchNorm) for m in D.heads.modules())
    assert any(isinstance(m, SyncBatchNorm) for m in D.pixel.modules())
