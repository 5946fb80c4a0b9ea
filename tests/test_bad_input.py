"""The bad-input matrix: every refused input ends in exit code 2, one line `error: ...`, no traceback, and
leaves an existing run folder exactly as it was. Inputs are real files (a tiny MNIST run, its exported
generator, damaged copies of it); nothing is mocked."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner

from ganxfer.cli import main

TINY = ["--set", "data.limit=64", "--set", "data.resolution=32", "--set", "generator.ngf=8",
        "--set", "discriminator.ndf=8", "--set", "train.batch_size=16", "--set", "train.kimg=0.032",
        "--set", "train.log_with=[]"]


@dataclass
class Ctx:
    """What a case may point at: a finished run, a scratch folder, and helpers that write damaged inputs."""

    run: Path
    tmp: Path

    def recipe(self, text: str | bytes) -> str:
        path = self.tmp / "recipe.yaml"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return str(path)

    def generator(self, config: Callable[[dict], object] | None = None,
                  weights: Callable[[Path], None] | None = None) -> str:
        """A copy of the run's exported generator with its config.json and/or model.safetensors changed."""
        folder = self.tmp / "g"
        shutil.copytree(self.run / "generator", folder)
        if config is not None:
            (folder / "config.json").write_text(json.dumps(config(json.loads((folder / "config.json").read_text()))))
        if weights is not None:
            weights(folder / "model.safetensors")
        return str(folder)


def _set(key: str, value):
    def change(config: dict) -> dict:
        config[key] = value
        return config
    return change


def _without_ganxfer(config: dict) -> dict:
    del config["ganxfer"]
    return config


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bad_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:8] + b"{not json" + data[17:])


def _tensors(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        state = safetensors.torch.load_file(str(path))
        change(state)
        safetensors.torch.save_file(state, str(path))
    return write


def _nan(state: dict) -> None:
    state["to_rgb.weight"][0, 0, 0, 0] = float("nan")


def _int32(state: dict) -> None:
    state["to_rgb.weight"] = state["to_rgb.weight"].to(torch.int32)


def _link_out(ctx: Ctx) -> str:
    """A copy of the run whose recipe.yaml is a link to a file outside it."""
    run = Path(_run_copy(ctx))
    secret = ctx.tmp / "secret.txt"
    secret.write_text("not for upload\n")
    (run / "recipe.yaml").unlink()
    (run / "recipe.yaml").symlink_to(secret)
    return str(run)


def _run_copy(ctx: Ctx, recipe: str | None = None) -> str:
    """A copy of the run (without checkpoints and logs of TensorBoard), its recipe.yaml replaced when given."""
    run = ctx.tmp / "copy"
    shutil.copytree(ctx.run, run, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    if recipe is not None:
        (run / "recipe.yaml").write_text(recipe)
    return str(run)


def _junk_images(ctx: Ctx) -> str:
    folder = ctx.tmp / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not an image")
    (folder / "b.png").write_bytes(b"")
    (folder / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return str(folder)


def train(ctx: Ctx, *sets: str, recipe: str = "recipes/mnist_dcgan.yaml", dry_run: bool = True) -> list[str]:
    args = ["train", recipe, *TINY, *[a for s in sets for a in ("--set", s)], "--run-dir", str(ctx.run)]
    return args + (["--dry-run"] if dry_run else ["--overwrite"])


def sample(source: str, ctx: Ctx, *extra: str) -> list[str]:
    return ["sample", source, "--out", str(ctx.tmp / "out.png"), *extra]


# one --set each (or two), caught by recipe.check at load time: --dry-run reports them
SETS: dict[str, tuple[tuple[str, ...], str]] = {
    "unknown key": (("train.kimgg=3",), "did you mean 'train.kimg'"),
    "channels 2": (("data.channels=2",), "data.channels=2: use 1"),
    "augment colour": (("augment.policy=color,colour",), "did you mean 'color'"),
    "resolution 48": (("data.resolution=48",), "data.resolution=48: a dcgan generator makes"),
    "resolution 63": (("data.resolution=63",), "data.resolution=63"),
    "resolution 1024": (("data.resolution=1024",), "data.resolution=1024"),
    "generator kind": (("generator.kind=stylegan",), "generator.kind='stylegan' is unknown"),
    "discriminator kind": (("discriminator.kind=bogus",), "use one of dcgan, projected"),
    "freeze without init": (("generator.freeze_blocks=2",), "set generator.init too"),
    "best metric": (("eval.every_kimg=1", "eval.metrics=[pr]"), "eval.best_metric='kid_mean'"),
    "unknown metric": (("eval.metrics=[is]",), "eval.metrics: unknown metric is"),
    "betas 1.0": (("optim.betas=[0.5, 1.0]",), "Adam takes two betas"),
    "betas one": (("optim.betas=[0.5]",), "Adam takes two betas"),
    "betas three": (("optim.betas=[2, 3, 4]",), "Adam takes two betas"),
    "kimg inf": (("train.kimg=.inf",), "train.kimg=inf is not a finite number"),
    "kimg nan": (("train.kimg=.nan",), "train.kimg=nan is not a finite number"),
    "precision bogus": (("train.mixed_precision=fp8",), "'fp8' is not one of no, bf16, fp16, auto"),
    "generator too large": (("data.resolution=128", "generator.ngf=1024", "generator.latent_dim=4096"),
                            "the generator would have 3,925,948,416 parameters, over ganxfer's cap"),
}


CASES: dict[str, tuple[Callable[[Ctx], list[str]], str]] = {
    # recipes: each caught at load time, so --dry-run catches it (and --overwrite never gets to delete)
    "empty recipe": (lambda c: train(c, recipe=c.recipe("# nothing\n")), "is empty"),
    "yaml syntax": (lambda c: train(c, recipe=c.recipe("name: x\ntrain: {kimg: [\n")), "invalid YAML at line 3"),
    "python tag": (lambda c: train(c, recipe=c.recipe("name: !!python/object/apply:os.system [ls]\n")),
                   "tag !!python/object/apply:os.system at line 1 is refused"),
    "not utf-8": (lambda c: train(c, recipe=c.recipe(b"name: caf\xe9\n")), "is not UTF-8 text"),
    "absolute name": (lambda c: train(c, f"name={c.run}", dry_run=False), "must be a plain name"),
    "dotdot name": (lambda c: train(c, "name=../../x", dry_run=False), "must be a plain name"),
    "secret variable": (lambda c: train(c, recipe=c.recipe("name: x\ndata: {path: '${HF_TOKEN}'}\n"),
                                        dry_run=False), "${HF_TOKEN} is not expanded"),
    "mode seeking, batch 1": (lambda c: train(c, "loss.mode_seeking=1", "train.batch_size=1"),
                              "raise train.batch_size (now 1) to 2 or more"),
    "info code, projected D": (lambda c: train(c, "loss.info_classes=10", "discriminator.kind=projected"),
                               "only discriminator.kind=dcgan has"),
    "info code, too long": (lambda c: train(c, "loss.info_classes=200"), "use 2 to generator.latent_dim=100"),
    "cluster, no code": (lambda c: train(c, "loss.info_cluster=1"), "set loss.info_classes too"),
    "hub data dotdot": (lambda c: train(c, "data.path=hub:owner/..", dry_run=False), "is not a valid Hub id"),
    "init revision": (lambda c: train(c, "generator.init=owner/name@../../x"), "is not a valid Hub id"),
    "junk images": (lambda c: ["train", "recipes/mnist_dcgan.yaml", *TINY, "--set", f"data.path={_junk_images(c)}",
                               "--set", "data.in_memory_gb=0", "--run-dir", str(c.tmp / "new")],
                    "none of the 3 images"),
    # model files
    "truncated weights": (lambda c: sample(c.generator(weights=_truncate), c), "is not a readable safetensors"),
    "empty weights": (lambda c: sample(c.generator(weights=lambda p: p.write_bytes(b"")), c), "header too small"),
    "bad header": (lambda c: sample(c.generator(weights=_bad_header), c), "is not a readable safetensors"),
    "nan weights": (lambda c: sample(c.generator(weights=_tensors(_nan)), c), "holds NaN or infinite values"),
    "int32 weights": (lambda c: sample(c.generator(weights=_tensors(_int32)), c), "is torch.int32"),
    "config list": (lambda c: sample(c.generator(config=lambda cfg: [cfg]), c), "holds a JSON list"),
    "config no ganxfer": (lambda c: sample(c.generator(config=_without_ganxfer), c), "no 'ganxfer' block"),
    "ngf huge": (lambda c: sample(c.generator(config=_set("ngf", 1_000_000)), c), "ngf=1000000 is out of range"),
    "latent float": (lambda c: sample(c.generator(config=_set("latent_dim", 1e9)), c), "latent_dim: expected int"),
    "ngf negative": (lambda c: sample(c.generator(config=_set("ngf", -8)), c), "ngf=-8 is out of range"),
    "resolution zero": (lambda c: sample(c.generator(config=_set("resolution", 0)), c), "resolution=0 is out"),
    "resolution string": (lambda c: sample(c.generator(config=_set("resolution", "32")), c), "expected int"),
    "grow negative": (lambda c: sample(c.generator(config=_set("grow", -3)), c), "grow=-3 is out of range"),
    "parameter cap": (lambda c: sample(c.generator(config=lambda cfg: {**cfg, "resolution": 128, "ngf": 1024,
                                                                        "latent_dim": 4096}), c), "over ganxfer's cap"),
    "push nan": (lambda c: ["push", c.generator(weights=_tensors(_nan)), "someone/x", "--dry-run", str(c.tmp / "up")],
                 "holds NaN"),
    "evaluate nan": (lambda c: ["evaluate", c.generator(weights=_tensors(_nan)), "--data", "mnist"], "holds NaN"),
    # Hub ids, uploads, limits
    "hub id dotdot": (lambda c: sample("a/..", c), "is not a local path, a bundled model"),
    "hub revision": (lambda c: sample("owner/name@../../x", c), "is not a local path, a bundled model"),
    "push repo dotdot": (lambda c: ["push", str(c.run), "a/..", "--dry-run", str(c.tmp / "up")], "must be owner/name"),
    "push link out": (lambda c: ["push", _link_out(c), "someone/x", "--dry-run", str(c.tmp / "up")],
                      "push uploads only regular files"),
    "push bad recipe": (lambda c: ["push", _run_copy(c, "name: !!python/name:os.system\n"), "someone/x", "--dry-run",
                                   str(c.tmp / "up")], "recipe.yaml is not a YAML mapping"),
    "finetune no ganxfer": (lambda c: ["finetune", "recipes/mnist_dcgan.yaml", *TINY, "--set",
                                       f"generator.init={c.generator(config=_without_ganxfer)}",
                                       "--run-dir", str(c.tmp / "new")], "no 'ganxfer' block"),
    "evaluate resolution": (lambda c: ["evaluate", str(c.run), "--data", "mnist", "--resolution", "100000"],
                            "100000 is not in the range 8<=x<=1024"),
    **{name: ((lambda c, sets=sets: train(c, *sets)), expected) for name, (sets, expected) in SETS.items()},
    # inputs found bad only while the run builds: --overwrite must not have deleted the earlier run by then
    "overwrite, init NaN": (lambda c: train(c, f"generator.init={c.generator(weights=_tensors(_nan))}",
                                            dry_run=False), "holds NaN or infinite values"),
    "overwrite, junk data": (lambda c: train(c, f"data.path={_junk_images(c)}", "data.channels=3",
                                             dry_run=False), "could be decoded"),
    "grid too large": (lambda c: sample(str(c.run), c, "--num", "100000"), "a .png grid holds at most 1024"),
    "num zero": (lambda c: sample(str(c.run), c, "--num", "0"), "Invalid value for '--num'"),
}


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(mnist_data, tmp_path_factory) -> Path:
    """A real, tiny MNIST run with a checkpoint, a log and an exported generator."""
    run = tmp_path_factory.mktemp("bad-input") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
        res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--run-dir", str(run)],
                                 catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return run


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_deletes_nothing(case, finished_run, mnist_data, tmp_path, monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    make, expected = CASES[case]
    before = files_of(finished_run)
    args = make(Ctx(finished_run, tmp_path))
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert expected in lines[0] and "Traceback" not in res.output
    assert "hf_not_a_real_token" not in res.output
    assert files_of(finished_run) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is supported on this machine")
def test_fp16_on_a_cpu_is_refused_before_the_run_folder_is_touched(finished_run, mnist_data, monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    before = files_of(finished_run)
    res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--set",
                                    "train.mixed_precision=fp16", "--run-dir", str(finished_run), "--overwrite"])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
        "error: train.mixed_precision=fp16 needs a GPU, and none is visible; on a CPU use "
        "train.mixed_precision=bf16 (native) or no"]
    assert files_of(finished_run) == before


def test_a_secret_never_reaches_the_run_or_the_upload(finished_run, tmp_path, monkeypatch):
    """A run folder whose recipe.yaml names ${HF_TOKEN} (written by hand) is pushed as written, unexpanded."""
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("tb"))
    for damaged in run.glob("checkpoints/*/trainer.json"):  # a damaged counter makes the card less complete only
        damaged.write_text("")
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write("{not json\n[1, 2]\n")
    with open(run / "recipe.yaml", "a") as fh:
        fh.write("# token: ${HF_TOKEN}\n")
    res = CliRunner().invoke(main, ["push", str(run), "someone/x", "--dry-run", str(tmp_path / "up")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for path in (tmp_path / "up").rglob("*"):
        assert b"hf_not_a_real_token" not in path.read_bytes(), path
    assert "${HF_TOKEN}" in (tmp_path / "up" / "recipe.yaml").read_text()


def test_sample_streams_a_folder_with_the_grid_images(finished_run, tmp_path):
    """A folder is written in batches of 256 and holds exactly the images of one .sample(n) call."""
    import numpy as np
    from PIL import Image

    from ganxfer.data import to_uint8
    from ganxfer.sources import load_generator

    res = CliRunner().invoke(main, ["sample", str(finished_run), "--num", "300", "--out", str(tmp_path / "f"),
                                    "--seed", "3"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    files = sorted((tmp_path / "f").iterdir())
    assert len(files) == 300
    expected = to_uint8(load_generator(str(finished_run)).sample(300, seed=3))
    for i in (0, 255, 256, 299):
        saved = torch.from_numpy(np.array(Image.open(files[i]).convert("L")))
        assert (saved.int() - expected[i, 0].int()).abs().max() <= 1, files[i]
