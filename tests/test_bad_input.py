"""The bad-input matrix: every refused input ends in exit code 2, one line `error: ...`, no traceback, and
leaves an existing run folder exactly as it was. Inputs are real files (a tiny MNIST run, its exported
generator, damaged copies of it); nothing is mocked."""

from __future__ import annotations

import json
import os
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


def _many_faces(ctx: Ctx) -> str:
    """A folder of 100 small pictures in no class subfolders."""
    from PIL import Image

    folder = ctx.tmp / "faces"
    folder.mkdir(exist_ok=True)
    for i in range(100):
        Image.new("RGB", (8, 8), (i, 2 * i, 0)).save(folder / f"{i}.png")
    return str(folder)


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
    "fp16 with R1": (("train.mixed_precision=fp16", "loss.r1_gamma=1"),
                     "loss.r1_gamma with train.mixed_precision=fp16 would take R1's gradient without loss scaling; "
                     "use train.mixed_precision=bf16, or loss.r1_gamma=0"),
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
                              "raise train.batch_size to 2 or more"),
    "retired key": (lambda c: train(c, "loss.info_classes=10"), "loss.info_classes=10 was retired: InfoGAN's code"),
    "key of a feature that is off": (lambda c: train(c, "discriminator.pixel_d=true"),
                                     "discriminator.pixel_d=True does nothing unless discriminator.kind=projected"),
    "conditional on unlabelled data": (lambda c: train(c, "discriminator.conditional=2", "data.channels=3",
                                                       f"data.path={_many_faces(c)}", dry_run=False),
                                       "needs labelled images"),
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
                            "100000 is not in the range 32<=x<=1024"),
    # numbers out of range: seeds beyond what numpy's generator takes, sizes beyond any memory, devices not here
    "recipe seed 2**64": (lambda c: train(c, f"seed={2**64}"), "seed=18446744073709551616 is out of range"),
    "sample seed 2**64": (lambda c: sample(str(c.run), c, "--seed", str(2**64)), "not in the range 0<=x<=4294967295"),
    "evaluate seed 2**64": (lambda c: ["evaluate", str(c.run), "--data", "mnist", "--seed", str(2**64)],
                            "not in the range 0<=x<=4294967295"),
    "batch 1e11": (lambda c: train(c, "train.batch_size=100000000000", dry_run=False),
                   "train.batch_size=100,000,000,000 would need about"),
    "device foo": (lambda c: sample(str(c.run), c, "--device", "foo"), "--device 'foo' is not a torch device"),
    "device meta": (lambda c: ["evaluate", str(c.run), "--data", "mnist", "--device", "meta"], "not on meta"),
    "device cuda:7": (lambda c: sample(str(c.run), c, "--device", "cuda:7"), "--device cuda:7:"),
    "sexagesimal minutes": (lambda c: train(c, "train.minutes=1:30"), "train.minutes: expected float, got str '1:30'"),
    "yes for a bool": (lambda c: train(c, recipe=c.recipe("name: x\ndata: {hflip: yes}\n")), "expected bool"),
    # parsing bounded: depth, aliases, duplicate keys, sections, weight files, damaged run files
    "yaml 500 deep": (lambda c: train(c, recipe=c.recipe("name: x\ndata: " + "[" * 500 + "]" * 500 + "\n")),
                      "nested more than 32 deep are refused"),
    "yaml alias": (lambda c: train(c, recipe=c.recipe(LAUGHS)), "line 3: the YAML alias *a is refused"),
    "yaml duplicate key": (lambda c: train(c, recipe=c.recipe("name: x\ntrain:\n  kimg: 1\n  kimg: 2\n")),
                           "line 4: duplicate key 'kimg' (first at line 3)"),
    "section null": (lambda c: ["train", c.recipe("name: x\ntrain:\n"), "--dry-run"], "'train' must be a mapping"),
    "section list": (lambda c: ["train", c.recipe("name: x\ntrain: [1, 2]\n"), "--dry-run"],
                     "'train' must be a mapping"),
    "pretrained_file text": (lambda c: train(c, f"discriminator.pretrained_file={c.recipe('name: x')}"),
                             "is not a .safetensors file"),
    "pretrained_file damaged": (lambda c: train(c, f"discriminator.pretrained_file={_junk_weights(c)}"),
                                "is not a readable safetensors file"),
    "config 500 deep": (lambda c: sample(c.generator(config=_set("ngf", _nested(500))), c), "nested more than 8 deep"),
    "config 5000 deep": (lambda c: sample(c.generator(weights=_deep_config), c), "is nested too deep"),
    "trainer.json string": (lambda c: ["train", "recipes/mnist_dcgan.yaml", *TINY, "--run-dir", _damaged_trainer(c),
                                       "--resume"], "none of the 1 checkpoint(s)"),
    # data: special files, a strip of a million pixels, counts beyond any use
    "data /dev/zero": (lambda c: train(c, "data.path=/dev/zero", dry_run=False), "/dev/zero is a special file"),
    "data FIFO zip": (lambda c: train(c, f"data.path={_fifo(c, 'pipe.zip')}", dry_run=False), "is a special file"),
    "evaluate FIFO": (lambda c: ["evaluate", _fifo(c, "g"), "--data", "mnist"], "is a special file"),
    "image 1 x 1,000,000": (lambda c: train(c, f"data.path={_strip_image(c)}", "data.channels=3", dry_run=False),
                            "none of the 1 images"),
    "sample num 1e20": (lambda c: ["sample", str(c.run), "--num", "99999999999999999999", "--out", str(c.tmp / "d")],
                        "is not in the range 1<=x<=1000000"),
    **{name: ((lambda c, sets=sets: train(c, *sets)), expected) for name, (sets, expected) in SETS.items()},
    # inputs found bad only while the run builds: --overwrite must not have deleted the earlier run by then
    "overwrite, init NaN": (lambda c: train(c, f"generator.init={c.generator(weights=_tensors(_nan))}",
                                            dry_run=False), "holds NaN or infinite values"),
    "overwrite, junk data": (lambda c: train(c, f"data.path={_junk_images(c)}", "data.channels=3",
                                             dry_run=False), "could be decoded"),
    "overwrite, unknown eval extractor": (lambda c: train(c, "eval.every_kimg=0.016", "eval.feature_extractor=evil",
                                                          dry_run=False), "feature extractor 'evil' is unknown"),
    "overwrite, missing eval data": (lambda c: train(c, "eval.every_kimg=0.016", "eval.data=/nonexistent",
                                                     dry_run=False), "/nonexistent does not exist"),
    "grid too large": (lambda c: sample(str(c.run), c, "--num", "100000"), "a .png grid holds at most 1024"),
    "num zero": (lambda c: sample(str(c.run), c, "--num", "0"), "Invalid value for '--num'"),
}


LAUGHS = "name: x\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
    "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"  # billion laughs, three levels


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _deep_config(weights: Path) -> None:
    """The config.json beside ``weights`` given a value 5,000 lists deep, too deep for json's parser (written as
    text: json.dumps would recurse as deep)."""
    config = weights.parent / "config.json"
    config.write_text('{"ngf": ' + "[" * 5000 + "]" * 5000 + ", " + config.read_text().lstrip()[1:])


def _junk_weights(ctx: Ctx) -> str:
    path = ctx.tmp / "junk.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    return str(path)


def _damaged_trainer(ctx: Ctx) -> str:
    """A copy of the run whose one checkpoint's trainer.json holds a string for wall_s."""
    run = ctx.tmp / "damaged"
    shutil.copytree(ctx.run, run)
    for path in run.glob("checkpoints/*/trainer.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "wall_s": "ten"}))
    return str(run)


def _fifo(ctx: Ctx, name: str) -> str:
    path = ctx.tmp / name
    os.mkfifo(path)
    return str(path)


def _strip_image(ctx: Ctx) -> str:
    from PIL import Image

    folder = ctx.tmp / "strip"
    folder.mkdir()
    Image.new("L", (1_000_000, 1), 128).save(folder / "strip.png")  # a few KB on disk; 4 GB once squared at 64 px
    return str(folder)


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
    with open(run / "metrics.jsonl", "a") as fh:  # damaged rows are skipped: the card is less complete, no more
        fh.write('{not json\n[1, 2]\n"fid"\n{"kimg": "x", "wall_s": "y"}\n{"kimg": 1, "kid_mean": "low"}\n'
                 '{"kimg": Infinity, "fid": NaN}\n' + "[" * 5000 + "]" * 5000 + "\n")
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


# --- the output-path rule, walked over every command that writes ------------------------------------------------

# command -> (its arguments given the output path, what it writes there: a file of this suffix, or a folder)
WRITERS: dict[str, tuple[Callable[[Ctx, str], list[str]], str]] = {
    "sample --out grid": (lambda c, out: ["sample", str(c.run), "--num", "4", "--out", out], ".png"),
    "sample --out folder": (lambda c, out: ["sample", str(c.run), "--num", "4", "--out", out], "folder"),
    "evaluate --json": (lambda c, out: ["evaluate", str(c.run), "--data", "mnist", "--json", out], ".json"),
    "plot --out": (lambda c, out: ["plot", str(c.run), "--out", out], ".png"),
    "push --dry-run": (lambda c, out: ["push", str(c.run), "someone/x", "--dry-run", out], "folder"),
    "train --run-dir": (lambda c, out: ["train", "recipes/mnist_dcgan.yaml", *TINY, "--run-dir", out, "--overwrite"],
                        "run"),
}


def _under_a_file(ctx: Ctx, name: str) -> str:
    (ctx.tmp / "a-file").write_text("not a folder\n")
    return str(ctx.tmp / "a-file" / name)


def _wrong_kind(ctx: Ctx, name: str, writes: str) -> str:
    """A folder where a file is written, a file where a folder is."""
    path = ctx.tmp / name
    path.mkdir() if writes.startswith(".") else path.write_text("something of the user's\n")
    return str(path)


def _busy_folder(ctx: Ctx, name: str, writes: str) -> str:
    """An existing entry that is not the kind of output written: a file of another suffix, a folder with files."""
    if writes.startswith("."):
        (ctx.tmp / "notes.txt").write_text("the user's notes\n")
        return str(ctx.tmp / "notes.txt")
    (ctx.tmp / name).mkdir()
    (ctx.tmp / name / ("recipe.yaml" if writes == "run" else "mine.txt")).mkdir()
    return str(ctx.tmp / name)


# class -> (the output path, given the context, a plain name and what is written; what the one line says)
PATH_CLASSES: dict[str, tuple[Callable[[Ctx, str, str], str], str]] = {
    "empty": (lambda c, name, writes: "", "is empty; name"),
    "wrong kind": (_wrong_kind, "is a f"),
    "existing other output": (_busy_folder, ""),
    "under a file": (lambda c, name, writes: _under_a_file(c, name), "is a file, not a folder, so nothing can be"),
    "unwritable": (lambda c, name, writes: f"/proc/ganxfer-{name}", "is not writable"),
    "special file": (lambda c, name, writes: _fifo(c, name), "special file"),
}


@pytest.mark.parametrize("path_class", list(PATH_CLASSES))
@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_output_path_class_is_one_line_for_every_writer(writer, path_class, finished_run, mnist_data, tmp_path,
                                                               monkeypatch):
    """Each command that writes meets each kind of bad output path with one line naming the path, before anything
    is computed; the finished run and whatever was at the path stay as they were."""
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args, writes = WRITERS[writer]
    name = "out" + (writes if writes.startswith(".") else "")
    make, expected = PATH_CLASSES[path_class]
    ctx = Ctx(finished_run, tmp_path)
    out = make(ctx, name, writes)
    before, here = files_of(finished_run), files_of(tmp_path)
    res = CliRunner().invoke(main, args(ctx, out), catch_exceptions=False)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.stderr
    assert expected in lines[0] and (out in lines[0] or not out), lines[0]
    assert files_of(finished_run) == before and files_of(tmp_path) == here


@pytest.mark.parametrize("entry", ["checkpoints", "generator", "samples", ".lock", "metrics.jsonl", "recipe.yaml"])
def test_a_run_folder_entry_of_the_wrong_kind_is_one_line(entry, finished_run, mnist_data, tmp_path, monkeypatch):
    """A run folder whose checkpoints/ (and the like) is a file, or whose recipe.yaml (and the like) a folder, is
    refused before the loop touches it: nothing in it changes, on a fresh start, --overwrite and --resume."""
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    wrong = run / entry
    shutil.rmtree(wrong) if wrong.is_dir() else wrong.unlink(missing_ok=True)
    wrong.mkdir() if entry.startswith(".") or "." in entry else wrong.write_text("in the way\n")
    before = files_of(run)
    for flag in ("--overwrite", "--resume", "--dry-run"):
        res = CliRunner().invoke(main, ["train", "recipes/mnist_dcgan.yaml", *TINY, "--run-dir", str(run), flag],
                                 catch_exceptions=False)
        assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
            f"error: --run-dir {run}: {wrong} is {'a folder' if wrong.is_dir() else 'a file'} where the run writes "
            f"{'a file' if wrong.is_dir() else 'a folder'}; move it away, or pick another --run-dir"], res.output
    assert files_of(run) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (the walk covers /proc)")
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_read_only_folder_is_one_line(writer, finished_run, mnist_data, tmp_path, monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    args, writes = WRITERS[writer]
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    out = str(tmp_path / "ro" / ("out" + (writes if writes.startswith(".") else "")))
    res = CliRunner().invoke(main, args(Ctx(finished_run, tmp_path), out), catch_exceptions=False)
    assert res.exit_code == 2 and "is not writable" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_an_existing_output_of_the_same_kind_is_replaced(finished_run, tmp_path):
    """A .png grid over an earlier .png grid, and a plot over an earlier plot: the same kind of output, replaced."""
    for _ in range(2):
        res = CliRunner().invoke(main, ["sample", str(finished_run), "--num", "4", "--out", str(tmp_path / "g.png")],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(main, ["plot", str(finished_run), "--out", str(tmp_path / "c.svg")],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["sample", str(finished_run), "--num", "4", "--out", str(tmp_path / "g.jpg")])
    assert res.exit_code == 2 and "a grid is written as PNG; name it .png" in res.stderr
