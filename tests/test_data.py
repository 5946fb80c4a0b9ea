import logging
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from ganxfer.data import BatchPlan, DataError, load_data, to_float, to_uint8
from ganxfer.recipe import DataConfig


def make_images(folder, n=6, size=(40, 30)):
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        ext = ["jpg", "png", "webp"][i % 3]
        img.save(folder / ("sub" if i % 2 else "") / f"{i:02d}.{ext}")
    return folder


def test_folder_recursive_formats_resize_and_crop(tmp_path):
    root = make_images(tmp_path / "imgs")
    data = load_data(DataConfig(path=str(root), resolution=16, channels=3))
    assert len(data) == 6 and data.pixels.dtype == torch.uint8
    assert data.pixels.shape == (6, 3, 16, 16)
    gray = load_data(DataConfig(path=str(root), resolution=16, channels=1, limit=4))
    assert gray.pixels.shape == (4, 1, 16, 16)


def test_center_crop_keeps_the_middle(tmp_path):
    img = np.zeros((20, 60, 3), np.uint8)
    img[:, 20:40] = 255  # a white middle third
    (tmp_path / "x").mkdir()
    Image.fromarray(img).save(tmp_path / "x" / "a.png")
    data = load_data(DataConfig(path=str(tmp_path / "x"), resolution=20))
    assert data.pixels.float().mean() > 250


def test_zip_matches_folder(tmp_path):
    root = make_images(tmp_path / "imgs")
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
        for p in sorted(root.rglob("*.*")):
            zf.write(p, p.relative_to(root))
    a = load_data(DataConfig(path=str(root), resolution=16))
    b = load_data(DataConfig(path=str(tmp_path / "imgs.zip"), resolution=16))
    assert torch.equal(a.pixels, b.pixels)


def test_streaming_matches_in_memory(tmp_path):
    root = make_images(tmp_path / "imgs")
    mem = load_data(DataConfig(path=str(root), resolution=16))
    stream = load_data(DataConfig(path=str(root), resolution=16, in_memory_gb=0))
    assert stream.pixels is None
    idx = torch.tensor([5, 0, 3])
    assert torch.equal(mem.batch(idx), stream.batch(idx))


def test_unreadable_files_are_reported(tmp_path, caplog):
    root = make_images(tmp_path / "imgs")
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING):
        data = load_data(DataConfig(path=str(root), resolution=16))
    assert len(data) == 6 and data.unreadable == ["broken.jpg"]
    assert "skipped 1 unreadable image(s)" in caplog.text


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig(path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_data(DataConfig(path=str(tmp_path / "empty")))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of the 1 images"):
        load_data(DataConfig(path=str(tmp_path / "bad")))


def test_batch_plan_is_a_function_of_position():
    plan = BatchPlan(10, seed=3)
    epoch0 = plan.indices(0, 10)
    assert sorted(epoch0.tolist()) == list(range(10))
    across = plan.indices(7, 6)  # crosses into epoch 1
    assert torch.equal(across[:3], epoch0[7:])
    assert torch.equal(BatchPlan(10, seed=3).indices(7, 6), across)
    assert not torch.equal(BatchPlan(10, seed=4).indices(0, 10), epoch0)


def test_float_round_trip():
    x = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(to_float(x)), x)
    assert to_float(x).min() == -1 and to_float(x).max() == 1


def test_mnist_from_shared_assets(mnist_data, monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", str(mnist_data.parents[2]))
    data = load_data(DataConfig(path="mnist", resolution=32, channels=1, limit=100))
    assert data.pixels.shape == (100, 1, 32, 32)
    assert data.pixels.float().mean() > 10  # white strokes on black


def test_real_anime_faces(anime_dir):
    data = load_data(DataConfig(path=str(anime_dir), resolution=64, channels=3, limit=200))
    assert data.pixels.shape == (200, 3, 64, 64)
    assert data.files[0] == "00000.jpg" and not data.unreadable
