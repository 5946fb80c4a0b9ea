"""Shared fixtures. Asset fixtures skip with a reason when the shared assets are not configured;
with GANXFER_REQUIRE_ASSETS=1 (set by .ci/run) a missing asset fails the test instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LITE0 = "models--timm--tf_efficientnet_lite0.in1k"
INCEPTION = "hub/checkpoints/weights-inception-2015-12-05-6726825d.pth"


def _asset(var: str, sub: str, what: str) -> Path:
    base = os.environ.get(var)
    path = Path(base) / sub if base else None
    if path is None or not path.exists():
        msg = f"{what} not found: set {var} (source ../shared/env.sh)"
        if os.environ.get("GANXFER_REQUIRE_ASSETS"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def anime_dir() -> Path:
    """20,000 real anime faces, 64x64 JPEG (read-only)."""
    return _asset("GANXFER_DATA", "anime-faces-64", "anime faces")


@pytest.fixture(scope="session")
def mnist_data() -> Path:
    """MNIST raw IDX files in torchvision's layout (read-only)."""
    return _asset("GANXFER_DATA", "mnist/MNIST/raw", "MNIST")


@pytest.fixture(scope="session")
def lite0_cache() -> Path:
    """HF_HUB_CACHE holding timm's tf_efficientnet_lite0.in1k weights."""
    return _asset("HF_HUB_CACHE", LITE0, "tf_efficientnet_lite0.in1k weights")


@pytest.fixture(scope="session")
def inception_weights() -> Path:
    """torch-fidelity's Inception-v3 FID weights under TORCH_HOME."""
    return _asset("TORCH_HOME", INCEPTION, "Inception FID weights")


@pytest.fixture
def anime_subset(anime_dir: Path, tmp_path: Path):
    """A function copying the first n anime faces into a fresh folder of the test's own."""

    def make(n: int, start: int = 0, name: str = "anime") -> Path:
        out = tmp_path / f"{name}-{start}-{n}"
        out.mkdir()
        for i in range(start, start + n):
            (out / f"{i:05d}.jpg").write_bytes((anime_dir / f"{i:05d}.jpg").read_bytes())
        return out

    return make


@pytest.fixture
def one_thread():
    """Small tensors: one thread is faster, and immune to a busy machine's spinning OpenMP workers."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    """An empty Hub cache and no Hub: nothing can be loaded from or downloaded to it."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
