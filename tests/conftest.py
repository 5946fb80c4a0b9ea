"""Shared fixtures. Asset fixtures (and the browser's) skip with a reason when the shared assets (Chromium,
Gradio, Playwright) are not there; with GANXFER_REQUIRE_ASSETS=1 (set by .ci/run) they fail the test instead."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

LITE0 = "models--timm--tf_efficientnet_lite0.in1k"
INCEPTION = "hub/checkpoints/weights-inception-2015-12-05-6726825d.pth"


def missing(msg: str) -> None:
    """Skip with ``msg``; under GANXFER_REQUIRE_ASSETS=1 (CI) fail with it, since CI must run everything."""
    if os.environ.get("GANXFER_REQUIRE_ASSETS"):
        pytest.fail(msg)
    pytest.skip(msg)


def _asset(var: str, sub: str, what: str) -> Path:
    base = os.environ.get(var)
    path = Path(base) / sub if base else None
    if path is None or not path.exists():
        missing(f"{what} not found: set {var} (source ../shared/env.sh)")
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


@pytest.fixture(scope="session")
def gradio():
    """The Gradio package (the demo extra)."""
    try:
        import gradio
    except ImportError:
        missing("gradio is not installed: pip install -e '.[test]' (it includes the demo extra)")
    return gradio


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch) -> Path:
    """Weights & Biases in offline mode, writing only under the test's folder; the folder its runs land in."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        missing("wandb is not installed: pip install -e '.[test]'")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path / "wandb-home" / "wandb"


@pytest.fixture(scope="session")
def chromium() -> str:
    """A Chromium executable for Playwright: $GANXFER_CHROMIUM, else chromium on PATH (apt-get install chromium)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("playwright is not installed: pip install -e '.[test]'")
    path = os.environ.get("GANXFER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        missing("no Chromium for the browser test: apt-get install chromium, or set GANXFER_CHROMIUM")
    return path


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


@pytest.fixture
def host_copies(monkeypatch):
    """A ``collections.Counter`` of the copies from host memory that ganxfer's own code starts, by call site
    (``file:line``): ``.to(<device>)`` and ``.cuda()`` of a CPU tensor, ``copy_`` of a CPU tensor into another
    device's, ``new_tensor``, and ``torch.tensor`` / ``torch.as_tensor`` given a device. A CPU tensor's
    ``.to(device)`` counts whatever the device, so that a CPU run sees the copies a GPU run would make. Only
    frames in ganxfer's own package count (not torch's, nor a venv's under a clone named ganxfer)."""
    import functools
    import sys
    from collections import Counter

    import torch

    import ganxfer

    package = str(Path(ganxfer.__file__).resolve().parent) + "/"
    ours = functools.cache(lambda filename: str(Path(filename).resolve()).startswith(package))
    seen: Counter = Counter()

    def note() -> None:
        frame = sys._getframe(2)
        if ours(frame.f_code.co_filename):
            seen[f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"] += 1

    def wrap(owner, name: str, copies) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            if copies(*args, **kwargs):
                note()
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    def moved(t: torch.Tensor, *args, **kwargs) -> bool:  # a device among .to's arguments (a tensor's included)
        return t.device.type == "cpu" and torch._C._nn._parse_to(*args, **kwargs)[0] is not None

    wrap(torch.Tensor, "to", moved)
    wrap(torch.Tensor, "cuda", lambda t, *a, **k: True)
    wrap(torch.Tensor, "copy_", lambda t, src, *a, **k: src.device.type == "cpu" and t.device.type != "cpu")
    wrap(torch.Tensor, "new_tensor", lambda t, *a, **k: True)
    wrap(torch, "tensor", lambda *a, **k: k.get("device") is not None)
    wrap(torch, "as_tensor", lambda *a, **k: k.get("device", a[2] if len(a) > 2 else None) is not None)
    return seen
