"""One place for cache locations and the offline policy: every module follows HF_HOME and GANXFER_CACHE."""

import os
from pathlib import Path

from ganxfer import cache, features
from ganxfer.nets import backbones

LITE0 = "tf_efficientnet_lite0.in1k"


def test_hf_home_moves_the_hub_cache_for_backbones_too(lite0_cache, tmp_path, monkeypatch):
    home = tmp_path / "hf-home"
    home.mkdir()
    (home / "hub").symlink_to(Path(os.environ["HF_HUB_CACHE"]), target_is_directory=True)
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(home))
    assert cache.hub_cache() == str(home / "hub")
    assert backbones.cached_weights(LITE0) is not None  # found through HF_HOME, as timm itself would
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    assert backbones.cached_weights(LITE0) is None


def test_ganxfer_cache_holds_features_and_mnist_without_ganxfer_data(tmp_path, monkeypatch):
    monkeypatch.setenv("GANXFER_CACHE", str(tmp_path / "gc"))
    monkeypatch.delenv("GANXFER_DATA", raising=False)
    assert features.cache_dir() == tmp_path / "gc" / "fid-stats"
    assert cache.mnist_root() == tmp_path / "gc" / "mnist"
    monkeypatch.delenv("GANXFER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.mnist_root() == tmp_path / "xdg" / "ganxfer" / "mnist"
    monkeypatch.setenv("GANXFER_DATA", str(tmp_path / "data"))
    assert cache.mnist_root() == tmp_path / "data" / "mnist"
