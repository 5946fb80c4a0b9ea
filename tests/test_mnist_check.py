"""The independent MNIST classifier behind benchmarks/mnist_check.py, on real digits."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import mnist_check  # noqa: E402


@pytest.fixture(scope="module")
def net(mnist_data):
    if not mnist_check.WEIGHTS.is_file():
        pytest.fail(f"{mnist_check.WEIGHTS} is missing: run python benchmarks/mnist_check.py --retrain")
    return mnist_check.load_classifier()


@pytest.fixture(autouse=True)
def mnist_env(mnist_data, monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))


def test_classifier_reads_the_test_split(net):
    assert mnist_check.accuracy(net) >= 0.98


def test_check_passes_real_digits_and_fails_noise_and_one_class(net):
    from ganxfer.data import load_data, to_float
    from ganxfer.schema import DataConfig

    x, y = mnist_check.mnist(train=False)
    real = torch.nn.functional.interpolate(x[:500], size=64, mode="bilinear")  # as a 64 px generator draws them
    ok = mnist_check.read(net, real)
    assert ok["passes"] and ok["confident"] >= 0.95
    training_view = to_float(load_data(DataConfig(path="mnist", resolution=64, channels=1, limit=500)).pixels)
    seen = mnist_check.read(net, training_view)
    assert seen["passes"] and seen["black_pixels"] > 0.7  # the digits a 64 px GAN learns from, on pure black
    noise = mnist_check.read(net, torch.rand(500, 1, 64, 64) * 2 - 1)
    assert not noise["passes"] and noise["confident"] < 0.5
    ones = mnist_check.read(net, real[y[:500] == 1])
    assert not ones["passes"] and ones["class_shares"][1] > 0.9  # a collapsed generator fails the class mix



@pytest.fixture(scope="module")
def bundled_read(net):
    import ganxfer

    return mnist_check.read(net, ganxfer.load_generator("dcgan-mnist-64").sample(500, seed=0))


def test_bundled_generator_keeps_what_it_reached(bundled_read):
    """The bundled generator as measured when it was bundled (docs/results.md): a floor, so it never regresses."""
    assert bundled_read["confident"] >= mnist_check.CONFIDENT_FLOOR, bundled_read
    assert min(bundled_read["class_shares"]) >= 0.05, bundled_read
    assert bundled_read["black_pixels"] >= 0.5, bundled_read  # MNIST's black background (real: 0.75)


def test_bundled_generator_meets_the_target(bundled_read):
    """The target: >= 90% of 500 samples read with confidence > 0.9, every class >= 5% of those reads."""
    assert bundled_read["passes"], bundled_read
