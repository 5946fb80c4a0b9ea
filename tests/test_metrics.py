"""Evaluation: real-Inception checks on anime faces and MNIST digits (few images: Inception runs at a few
images/s on these CPUs), agreement with torch-fidelity, the reference cache, and in-training KID."""

import json
import logging
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from torch import nn

from ganxfer import features, metrics
from ganxfer.cli import main
from ganxfer.data import load_data, to_uint8
from ganxfer.nets import export_model
from ganxfer.nets.dcgan import DCGANGenerator
from ganxfer.schema import DataConfig

N = 12  # images per real set: enough to separate anime from digits, cheap enough for a CPU


def cli(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


class FakeClock:
    """Stands in for the training clock's ``time`` module: real time plus whatever the tiny extractor says it took."""

    def __init__(self) -> None:
        self.offset, self.jump = 0.0, 0.0

    def time(self) -> float:
        return time.time() + self.offset


class TinyFeatures(nn.Module):
    """A stand-in for Inception in plumbing tests: 4x4-pooled RGB (48-d). Fast; meaningless as a score."""

    name = "tiny-test"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.clock = FakeClock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        self.clock.offset += self.clock.jump  # evaluation "takes" this long on the loop's clock
        self.seen.append(x.cpu())
        return F.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1)


@pytest.fixture
def tiny(monkeypatch) -> TinyFeatures:
    net = TinyFeatures()
    monkeypatch.setitem(features.EXTRACTORS, "tiny-test", lambda device: net)
    return net


# --- real Inception, shared across tests ------------------------------------------------------------------


@pytest.fixture(scope="session")
def sets(anime_dir, mnist_data, tmp_path_factory) -> dict[str, Path]:
    """Folders A and B of disjoint anime faces, and M of MNIST digits as 64x64 RGB PNGs (lossless)."""
    root = tmp_path_factory.mktemp("sets")
    out = {}
    for name, start in (("A", 0), ("B", 1000)):
        out[name] = root / name
        out[name].mkdir()
        for i in range(start, start + N):
            (out[name] / f"{i:05d}.jpg").write_bytes((anime_dir / f"{i:05d}.jpg").read_bytes())
    digits = load_data(DataConfig(path="mnist", resolution=64, channels=3, limit=N)).pixels
    out["M"] = root / "M"
    out["M"].mkdir()
    for i, img in enumerate(digits):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(out["M"] / f"{i:05d}.png")
    out["cache"] = root / "cache"
    return out


@pytest.fixture(scope="session")
def anime_vs_mnist(sets, inception_weights) -> dict:
    return metrics.evaluate(str(sets["A"]), str(sets["M"]), cache=sets["cache"] / "fid-stats")


@pytest.fixture(scope="session")
def anime_vs_anime(sets, anime_vs_mnist) -> dict:
    """KID and precision/recall only (FID at 12 images says little about same-distribution sets)."""
    return metrics.evaluate(str(sets["A"]), str(sets["B"]), metrics="kid,pr", cache=sets["cache"] / "fid-stats")


def test_anime_against_mnist_is_far(anime_vs_mnist):
    r = anime_vs_mnist
    assert r["num_fake"] == r["num_real"] == N and r["feature_extractor"] == "inception-v3-compat"
    assert r["feature_dim"] == 2048 and r["kid_subset_size"] == N // 2
    assert r["fid"] > 300  # two disjoint anime sets of 12 score about 230 (FID is biased upwards at small N)
    assert r["kid_mean"] > 5 * r["kid_std"] and r["kid_mean"] > 0.1
    assert r["precision"] == 0 and r["recall"] == 0
    assert r["cache_hit"] == {"fake": False, "real": False}


def test_two_disjoint_anime_sets_have_kid_near_zero(anime_vs_anime, anime_vs_mnist):
    r = anime_vs_anime
    assert r["cache_hit"] == {"fake": True, "real": False}  # A's features come back from the disk cache
    assert abs(r["kid_mean"]) < 3 * r["kid_std"]
    assert r["kid_mean"] < anime_vs_mnist["kid_mean"] / 10
    assert r["precision"] > 0.3 and r["recall"] > 0.3 and r["fid"] is None


def test_equals_torch_fidelity_on_the_same_folders(sets, anime_vs_mnist):
    import torch_fidelity

    direct = torch_fidelity.calculate_metrics(
        input1=str(sets["A"]), input2=str(sets["M"]), feature_extractor="inception-v3-compat", fid=True, kid=True,
        prc=True, kid_subset_size=N // 2, cuda=torch.cuda.is_available(), cache=False, verbose=False,
        save_cpu_ram=True)
    ours = anime_vs_mnist
    assert ours["fid"] == pytest.approx(direct[torch_fidelity.KEY_METRIC_FID], abs=1e-3)
    assert ours["kid_mean"] == pytest.approx(direct[torch_fidelity.KEY_METRIC_KID_MEAN], abs=1e-3)
    assert ours["kid_std"] == pytest.approx(direct[torch_fidelity.KEY_METRIC_KID_STD], abs=1e-3)
    assert ours["precision"] == pytest.approx(direct[torch_fidelity.KEY_METRIC_PRECISION], abs=1e-3)
    assert ours["recall"] == pytest.approx(direct[torch_fidelity.KEY_METRIC_RECALL], abs=1e-3)


def test_cli_second_call_hits_the_cache(sets, anime_vs_anime, tmp_path, monkeypatch):
    monkeypatch.setenv("GANXFER_CACHE", str(sets["cache"]))
    out = tmp_path / "eval.json"
    res = cli("evaluate", sets["A"], "--data", sets["B"], "--metrics", "kid,pr", "--json", out)
    assert res.exit_code == 0, res.output
    assert "KID" in res.output and "cache hit" in res.output and "inception-v3-compat" in res.output
    r = json.loads(out.read_text())
    assert r["cache_hit"] == {"fake": True, "real": True}
    assert {"fid", "kid_mean", "kid_std", "precision", "recall", "num_fake", "num_real", "feature_extractor",
            "versions"} <= r.keys()
    assert r["versions"]["torch_fidelity"] == "0.4.0" and r["versions"]["torch"] == torch.__version__
    assert r["kid_mean"] == anime_vs_anime["kid_mean"] and r["recall"] == anime_vs_anime["recall"]
    assert "scoring 12 source + 12 real images with Inception on cpu: all features cached" in res.stderr


def test_cli_says_what_it_will_extract_and_how_long_before_scoring(sets, anime_vs_mnist, tmp_path, monkeypatch):
    """A generator against cached reals: one line on stderr, before the first feature, with the rate measured here
    and the time it implies for this --num and for --num 10000."""
    import re

    monkeypatch.setenv("GANXFER_CACHE", str(sets["cache"]))
    folder = export_model(DCGANGenerator(resolution=64, channels=3, ngf=8), tmp_path / "g", "generator")
    res = cli("evaluate", folder, "--data", sets["M"], "--num", N, "--metrics", "kid", "--device", "cpu")
    assert res.exit_code == 0, res.output
    line = res.stderr.splitlines()[0]
    found = re.fullmatch(r"scoring 12 generated \+ 12 real images with Inception on cpu: 12 to extract \(12 cached\) "
                         r"at ([\d.,]+) images/s \(timed here on 8 just now\): under a minute; "
                         r"--num 10000 would take (under a minute|about [\d.]+ (min|h))", line)
    assert found, line
    rate = float(found.group(1).replace(",", ""))
    assert 0.1 < rate < 10_000  # Inception on a CPU: a few images/s
    # the reals are cached: only the generated images cost (the rate shown is rounded to two figures, the time too)
    value, unit = found.group(2).split()[1:] if found.group(3) else ("0.5", "min")
    seconds = float(value) * (60 if unit == "min" else 3600)
    assert 10_000 / (rate * 1.05) * 0.95 <= seconds <= 10_000 / (rate * 0.95) * 1.05 + 30, line
    assert res.output.index("scoring") < res.output.index("features of generated images") < res.output.index("KID")


# --- plumbing with the stand-in extractor -------------------------------------------------------------------


def test_generated_images_are_quantised_like_pngs(tiny, sets, tmp_path):
    gen = DCGANGenerator(resolution=64, channels=1, ngf=8)
    folder = export_model(gen, tmp_path / "g", "generator")
    r = metrics.evaluate(str(folder), str(sets["M"]), num=12, metrics="fid,kid", extractor="tiny-test",
                         cache=tmp_path / "cache")
    assert r["num_fake"] == 12 and r["num_real"] == N and r["channels"] == 1 and r["resolution"] == 64
    assert r["kid_subset_size"] == 6 and r["precision"] is None and r["cache_hit"] == {"real": False}
    fed = torch.cat(tiny.seen)[:12]  # generated first, then the real set
    expected = to_uint8(gen.eval().sample(12, seed=0))
    assert torch.equal(fed, expected.expand(-1, 3, -1, -1))


def test_default_num_is_cpu_sized(tiny, sets, tmp_path):
    """Without --num a CPU scores 1,000 generated images (Inception would take half an hour or more for 10,000
    there); any accelerator 10,000."""
    assert metrics.default_num("cpu") == 1_000
    assert metrics.default_num(torch.device("cuda", 0)) == metrics.default_num("mps") == 10_000
    folder = export_model(DCGANGenerator(resolution=64, channels=3, ngf=8), tmp_path / "g", "generator")
    lines = []
    r = metrics.evaluate(str(folder), str(sets["M"]), metrics="kid", extractor="tiny-test", device="cpu",
                         cache=tmp_path / "cache", say=lines.append)
    assert r["num_fake"] == 1_000 and sum(len(x) for x in tiny.seen) == 2 * metrics.PROBE + 1_000 + N
    assert lines[0].startswith(f"scoring 1,000 generated + {N} real images with tiny-test on cpu: 1,012 to extract at ")


def test_plan_line_arithmetic():
    line = metrics.plan_line(1_000, 2_000, 1_000, 2_000, "generated", "cpu", features.EXTRACTOR, 4.04, 10_000)
    assert line == ("scoring 1,000 generated + 2,000 real images with Inception on cpu: 3,000 to extract at 4.0 "
                    "images/s (timed here on 8 just now): about 12 min; --num 10000 would take about 50 min")
    line = metrics.plan_line(500, 2_000, 500, 0, "generated", "cuda", features.EXTRACTOR, 1234.5)
    assert line.endswith("500 to extract (2,000 cached) at 1,200 images/s (timed here on 8 just now): under a minute")
    assert metrics._duration(10_000 / 1.5) == "about 1.9 h"
    assert metrics.plan_line(9, 9, 0, 0, "source", "cpu", "tiny", None).endswith("tiny on cpu: all features cached")


def test_the_probe_leaves_torch_random_state_alone(tiny):
    state = torch.random.get_rng_state()
    assert metrics.images_per_second(tiny, 32) > 0 and len(tiny.seen) == 2
    assert tiny.seen[0].shape == (metrics.PROBE, 3, 32, 32)
    assert torch.equal(state, torch.random.get_rng_state())


def test_cache_key_follows_files_and_preprocessing(tiny, tmp_path, anime_subset):
    folder = anime_subset(6)
    cfg = DataConfig(path=str(folder), resolution=64, channels=3)
    key = features.fingerprint(cfg, "tiny-test")
    assert key == features.fingerprint(DataConfig(path=str(folder), resolution=64, channels=3), "tiny-test")
    others = {features.fingerprint(DataConfig(path=str(folder), resolution=32, channels=3), "tiny-test"),
              features.fingerprint(DataConfig(path=str(folder), resolution=64, channels=1), "tiny-test"),
              features.fingerprint(DataConfig(path=str(folder), resolution=64, channels=3, limit=5), "tiny-test"),
              features.fingerprint(cfg, "inception-v3-compat")}
    assert key not in others and len(others) == 4
    feats, hit = features.dataset_features(cfg, tiny, cache=tmp_path / "c")
    assert not hit and feats.shape == (6, 48)
    again, hit = features.dataset_features(cfg, tiny, cache=tmp_path / "c")
    assert hit and torch.equal(again, feats)
    (folder / "00003.jpg").write_bytes((folder / "00004.jpg").read_bytes())  # a changed file: a new key
    assert features.fingerprint(cfg, "tiny-test") != key
    assert not features.dataset_features(cfg, tiny, cache=tmp_path / "c")[1]


def test_a_full_disk_costs_only_the_cache(tiny, tmp_path, anime_subset, monkeypatch, caplog):
    import errno
    from pathlib import Path

    cfg = DataConfig(path=str(anime_subset(6)), resolution=64, channels=3)

    def full(self, data):  # the OS edge: the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    feats, hit = features.dataset_features(cfg, tiny, cache=tmp_path / "c")
    assert not hit and feats.shape == (6, 48)
    assert "could not cache the features" in caplog.text and "No space left" in caplog.text
    assert list((tmp_path / "c").iterdir()) == []


@pytest.mark.parametrize("n", [5, 40])  # fewer and more samples than feature dimensions
def test_frechet_distance_equals_torch_fidelity(n):
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    g = torch.Generator().manual_seed(n)
    a, b = torch.randn(n, 16, generator=g), torch.randn(n + 3, 16, generator=g) * 1.5 + 0.3
    stats = fid_features_to_statistics(a), fid_features_to_statistics(b)
    expected = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, abs=1e-4)
    assert metrics.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_mnist_cache_key(mnist_data, monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    a = features.fingerprint(DataConfig(path="mnist", limit=16), "x")
    assert a == features.fingerprint(DataConfig(path="mnist", limit=16), "x")
    assert a != features.fingerprint(DataConfig(path="mnist", limit=17), "x")


def test_too_few_images_and_bad_metric_names():
    f = torch.randn(3, 8)
    with pytest.raises(metrics.MetricsError, match="kid needs at least 4"):
        metrics.compute_metrics(f, f, ["kid"])
    with pytest.raises(metrics.MetricsError, match="unknown metric is"):
        metrics.parse_metrics("fid,is")


def test_in_training_evaluation_logs_kid_and_exports_best(tiny, mnist_data, tmp_path, monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    monkeypatch.setenv("GANXFER_CACHE", str(tmp_path / "cache"))
    tiny.clock.jump = 1000.0  # each feature batch takes 1000 s on the loop's clock
    monkeypatch.setattr("ganxfer.bookkeeping.time", tiny.clock)
    run = tmp_path / "run"
    res = cli("train", "recipes/mnist_dcgan.yaml", "--set", "data.limit=256", "--set", "data.resolution=32",
              "--set", "generator.ngf=8", "--set", "discriminator.ndf=8", "--set", "train.kimg=0.128",
              "--set", "train.batch_size=32", "--set", "train.log_every_kimg=0.064", "--set", "eval.every_kimg=0.064",
              "--set", "eval.num=32", "--set", "eval.metrics=[kid,fid]", "--set", "eval.feature_extractor=tiny-test",
              "--run-dir", run, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "kid_mean" in r]
    assert [r["kimg"] for r in evals] == [0.064, 0.128]
    assert all({"kid_std", "fid", "eval_s", "step"} <= r.keys() for r in evals)
    train_rows = [r for r in rows if "loss_d" in r]
    assert len(train_rows) == 2
    # wall_s counts training only: the evaluations' 1000 s pauses are not in it
    assert train_rows[-1]["wall_s"] < 500
    assert {p.name for p in (run / "generator-best").iterdir()} >= {"config.json", "model.safetensors"}
    assert len(list((tmp_path / "cache" / "fid-stats").glob("*.safetensors"))) == 1  # the reference, once
    out = tmp_path / "curves.png"
    assert cli("plot", run, "--out", out).exit_code == 0 and out.stat().st_size > 10_000


def test_best_metric_must_be_computed(mnist_data, tmp_path, monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    res = cli("train", "recipes/mnist_dcgan.yaml", "--set", "data.limit=64", "--set", "data.resolution=32",
              "--set", "eval.every_kimg=1", "--set", "eval.metrics=[fid]", "--run-dir", tmp_path / "r")
    assert res.exit_code == 2 and "eval.best_metric='kid_mean' must be one of fid" in res.output


# --- one-line errors -----------------------------------------------------------------------------------------


def test_offline_without_weights_is_one_line(tmp_path, monkeypatch):
    """An empty TORCH_HOME and no network: torch.hub's download fails, the user reads one line."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (i * 60, 0, 0)).save(folder / f"{i}.png")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GANXFER_CACHE", str(tmp_path / "cache"))
    res = cli("evaluate", folder, "--data", folder)
    assert res.exit_code == 2
    assert res.output.startswith("error: feature extractor inception-v3-compat: "
                                 "weights-inception-2015-12-05-6726825d.pth is not in ")
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_precision_recall_on_equal_sizes_and_the_collapse_flag():
    """PR cuts the larger set to the smaller's size; a generator drawing one image is flagged."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(300, 16, generator=g), torch.randn(60, 16, generator=g)
    got = metrics.compute_metrics(fake, real, ["pr"])
    f, r = metrics.equal_sizes(fake, real)
    assert len(f) == len(r) == 60 and torch.equal(f, fake)
    want = prc_features_to_metric(f, r, verbose=False)
    assert got["recall"] == pytest.approx(float(want["recall"])) and 0.9 < got["diversity"] < 1.1
    assert not metrics.collapsed(got)
    same = fake[:1].repeat(60, 1) + 0.01 * torch.randn(60, 16, generator=g)
    bad = metrics.compute_metrics(same, real, ["pr"])
    assert bad["diversity"] < 0.05 and bad["recall"] < 0.05 and metrics.collapsed(bad)


def test_fewer_images_than_asked_are_scored_with_a_warning(tiny, anime_subset, tmp_path, caplog):
    """--num 100 against a source folder of 8 scores 8 and says so; --num-real likewise (when asked for)."""
    source, real = anime_subset(8), anime_subset(8, start=8, name="real")
    with caplog.at_level(logging.WARNING, logger="ganxfer.metrics"):
        r = metrics.evaluate(str(source), str(real), num=100, num_real=50, metrics="kid", extractor="tiny-test",
                             cache=tmp_path / "cache")
    assert r["num_fake"] == 8 and r["num_real"] == 8
    assert f"--num 100: {source} holds 8 readable images; scoring those" in caplog.text
    assert f"--num-real 50: {real} holds 8 readable images; scoring those" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ganxfer.metrics"):
        metrics.evaluate(str(source), str(real), num=8, num_real=2000, metrics="kid", extractor="tiny-test",
                         cache=tmp_path / "cache", warn_real=False)  # the CLI's default --num-real: no warning
    assert "scoring those" not in caplog.text


def test_resolutions_inception_cannot_use_are_refused(tiny, anime_subset, tmp_path):
    """Below 32 px (CIFAR-10's side, the smallest FID and KID are reported at) a score compares with nothing:
    an explicit --resolution below it is refused, and a folder of smaller images is scored at 32."""
    source = anime_subset(4)
    for side in (8, 31):
        with pytest.raises(metrics.MetricsError, match=f"--resolution {side} is out of range; expected 32"):
            metrics.evaluate(str(source), str(source), resolution=side, metrics="kid", extractor="tiny-test",
                             cache=tmp_path / "cache")
    res = cli("evaluate", source, "--data", source, "--resolution", "8")
    assert res.exit_code == 2 and "8 is not in the range 32<=x<=1024" in res.output
    small = tmp_path / "small"
    small.mkdir()
    for p in sorted(source.iterdir()):
        Image.open(p).resize((28, 28)).save(small / f"{p.stem}.png")
    r = metrics.evaluate(str(small), str(source), metrics="kid", extractor="tiny-test", cache=tmp_path / "cache")
    assert r["resolution"] == 32


def test_the_cache_key_names_the_device_kind_but_cpu_keys_stay(tmp_path):
    """Features a GPU computed are not served to a CPU evaluation or the reverse; CPU keys are the ones caches
    already hold."""
    from ganxfer.schema import DataConfig

    cfg = DataConfig(path="mnist", limit=16)
    cpu = features.fingerprint(cfg, "x")
    assert cpu == features.fingerprint(cfg, "x", "cpu") != features.fingerprint(cfg, "x", "cuda")
