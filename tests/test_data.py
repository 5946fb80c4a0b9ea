import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganxfer import images as images_module
from ganxfer.data import BatchPlan, DataError, Feed, load_data, to_float, to_uint8
from ganxfer.schema import DataConfig


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
    # the labels a conditional D reads: MNIST's own, in order (its training split starts 5, 0, 4, 1, 9)
    assert data.labels.shape == (100,) and data.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert sorted(data.labels.unique().tolist()) == list(range(10))


def test_real_anime_faces(anime_dir):
    data = load_data(DataConfig(path=str(anime_dir), resolution=64, channels=3, limit=200))
    assert data.pixels.shape == (200, 3, 64, 64)
    assert data.files[0] == "00000.jpg" and not data.unreadable


def _damage(root: Path) -> list[str]:
    """Add the ways a real image set goes bad: junk, an empty file, a truncated JPEG and a text file named .png."""
    faces = sorted(root.glob("*.jpg"))
    (root / "junk.jpg").write_bytes(b"not a jpeg at all")
    (root / "empty.png").write_bytes(b"")
    (root / "half.jpg").write_bytes(faces[0].read_bytes()[:600])
    (root / "text.png").write_text("hello\n")
    return ["empty.png", "half.jpg", "junk.jpg", "text.png"]


def test_streaming_skips_and_counts_what_in_memory_skips(anime_subset, caplog):
    root = anime_subset(40)
    bad = _damage(root)
    mem = load_data(DataConfig(path=str(root), resolution=32, channels=3))
    with caplog.at_level(logging.WARNING):
        stream = load_data(DataConfig(path=str(root), resolution=32, channels=3, in_memory_gb=0))
    assert stream.pixels is None and sorted(stream.unreadable) == sorted(mem.unreadable) == bad
    assert stream.files == mem.files and len(stream) == len(mem) == 40
    assert "skipped 4 unreadable image(s)" in caplog.text
    for start in range(0, 40, 16):  # every streamed batch equals the in-memory one: nothing black is trained on
        idx = torch.arange(start, min(start + 16, 40))
        assert torch.equal(stream.batch(idx), mem.batch(idx))


def test_a_feed_gives_the_plans_batches_streamed_or_in_memory_and_reads_ahead(anime_subset, tmp_path):
    """Real faces in two classes: a Feed of the streamed set gives the images and labels that one of the in-memory
    set gives, and that the plan names (one process's rows of a global batch of 12), across epoch boundaries (40
    images), after a jump and after a resume at an arbitrary position, with what was read ahead dropped. While a
    streamed batch is used, the two after it are already requested from the loader's workers."""
    root = tmp_path / "two-classes"
    root.mkdir()
    for name, start in (("cats", 0), ("dogs", 20)):
        anime_subset(20, start=start, name=name).rename(root / name)
    mem = load_data(DataConfig(path=str(root), resolution=32))
    stream = load_data(DataConfig(path=str(root), resolution=32, in_memory_gb=0, workers=2))
    assert stream.pixels is None and mem.labels.tolist() == [0] * 20 + [1] * 20
    plan, rows = BatchPlan(40, seed=5), slice(6, 12)
    asked: list[int] = []

    class Watched(Feed):  # records the starts whose indices the stream hands the loader
        def _ahead(self, start):
            for at, idx in zip(range(start, 10**9, self.size), super()._ahead(start), strict=False):
                asked.append(at)
                yield idx

    def check(feeds: tuple[Feed, Feed], start: int) -> None:
        idx = plan.indices(start, 12)[rows]
        (a, la), (b, lb) = (feed(start) for feed in feeds)
        assert torch.equal(a, mem.batch(idx)) and torch.equal(b, a), start
        assert torch.equal(la, mem.labels[idx]) and torch.equal(lb, la), start

    feeds = (Feed(mem, 5, 12, rows), Watched(stream, 5, 12, rows))
    check(feeds, 0)
    assert asked == [0, 12, 24]  # read ahead: two batches in flight
    for start in (12, 24, 36, 48, 60, 72, 84):  # epoch boundaries at 40 and 80
        check(feeds, start)
    assert asked == list(range(0, 120, 12))  # each batch requested once, in order
    check(feeds, 100)  # a jump: what was read ahead for 96 is dropped
    assert torch.equal(stream.batch(torch.tensor([7, 31])), mem.batch(torch.tensor([7, 31])))  # a read between
    check(feeds, 112)
    asked.clear()
    resumed = (Feed(mem, 5, 12, rows), Watched(stream, 5, 12, rows))  # a resume at 57 images seen
    for start in (57, 69, 81):
        check(resumed, start)
    assert asked[:3] == [57, 69, 81]


def test_a_streamed_set_of_nothing_readable_is_an_error(tmp_path):
    root = tmp_path / "junk"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.jpg").write_bytes(b"\xff\xd8junk")
    with pytest.raises(DataError, match="none of the 3 images"):
        load_data(DataConfig(path=str(root), resolution=32, in_memory_gb=0))


def test_a_file_that_stops_decoding_while_streaming_is_one_line(anime_subset):
    root = anime_subset(8)
    data = load_data(DataConfig(path=str(root), resolution=32, in_memory_gb=0))
    (root / data.files[2]).write_bytes(b"gone bad")
    with pytest.raises(DataError, match="no longer decodes"):
        data.batch(torch.tensor([2]))


def test_16_bit_png_converts_like_its_8_bit_original(anime_subset, tmp_path):
    """Real faces as 16-bit grayscale PNGs (mode I;16) load like the 8-bit grayscale images they came from."""
    src = anime_subset(6)
    eight, sixteen = tmp_path / "eight", tmp_path / "sixteen"
    eight.mkdir()
    sixteen.mkdir()
    for p in sorted(src.iterdir()):
        gray = np.asarray(Image.open(p).convert("L"))
        Image.fromarray(gray).save(eight / f"{p.stem}.png")
        Image.fromarray(gray.astype(np.uint16) * 257).save(sixteen / f"{p.stem}.png")
    assert Image.open(next(sixteen.iterdir())).mode == "I;16"
    for channels in (1, 3):
        a = load_data(DataConfig(path=str(eight), resolution=32, channels=channels))
        b = load_data(DataConfig(path=str(sixteen), resolution=32, channels=channels))
        assert torch.equal(a.pixels, b.pixels)
        assert b.pixels.float().std() > 20  # a face, not a white square


def test_oversized_files_zip_members_and_bombs_are_unreadable(anime_subset, tmp_path, monkeypatch):
    root = anime_subset(5)
    Image.new("L", (4000, 3000)).save(root / "bomb.png")  # 12 Mpx, over the lowered pixel cap below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000_000)
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as zf:
        for p in sorted(root.iterdir()):
            zf.write(p, p.name)
    for path in (root, tmp_path / "set.zip"):
        assert load_data(DataConfig(path=str(path), resolution=32)).unreadable == ["bomb.png"]
    faces = anime_subset(5, name="capped")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(faces / "big.png")
    monkeypatch.setattr(images_module, "MAX_FILE_BYTES", max(p.stat().st_size for p in faces.glob("*.jpg")))
    with zipfile.ZipFile(tmp_path / "capped.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(faces.iterdir()):
            zf.write(p, p.name)
    for path in (faces, tmp_path / "capped.zip"):
        for gb in (8, 0):
            data = load_data(DataConfig(path=str(path), resolution=32, in_memory_gb=gb))
            assert data.unreadable == ["big.png"] and len(data) == 5


def test_evaluate_sizes_an_image_folder_by_its_first_readable_image(anime_subset):
    from ganxfer.metrics import _first_image_side

    root = anime_subset(3)
    (root / "0.jpg").write_bytes(b"not an image, and first by name")
    assert _first_image_side(str(root)) == 64


def test_phone_photos_turn_upright_and_transparency_lies_over_white(anime_subset, tmp_path):
    """A JPEG whose EXIF says 'rotate 90 degrees clockwise to show' is trained on as it is shown; a transparent
    PNG's hidden pixels (here pure green) never reach the training set."""
    face = Image.open(anime_subset(1) / "00000.jpg").convert("RGB").resize((64, 48))
    root = tmp_path / "pics"
    root.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    face.save(root / "a_phone.jpg", exif=exif, quality=95)
    face.transpose(Image.Transpose.ROTATE_270).save(root / "b_upright.jpg", quality=95)
    clear = Image.new("RGBA", (48, 48), (0, 255, 0, 0))
    clear.save(root / "c_clear.png")
    data = load_data(DataConfig(path=str(root), resolution=48, channels=3))
    phone, upright, transparent = data.pixels.int()
    assert (phone - upright).abs().float().mean() < 3  # JPEG noise only; unrotated it would differ by tens
    assert (phone - upright.transpose(1, 2)).abs().float().mean() > 10
    assert transparent.min() == 255


def test_training_refuses_a_folder_of_too_few_images_and_reports_counts(anime_subset, caplog):
    from ganxfer.data import MIN_TRAINING_IMAGES, load_training_data

    few = anime_subset(MIN_TRAINING_IMAGES - 1)
    with pytest.raises(DataError, match=f"holds only {MIN_TRAINING_IMAGES - 1} readable images; training needs at "
                                        f"least {MIN_TRAINING_IMAGES}"):
        load_training_data(DataConfig(path=str(few), resolution=32))
    with caplog.at_level(logging.INFO, logger="ganxfer.data"):
        data = load_training_data(DataConfig(path=str(few), resolution=32, limit=50))  # a chosen subset is allowed
    assert len(data) == 50 and f"50 images from {few}, the first 50 (data.limit) at 32 px" in caplog.text
    enough = anime_subset(MIN_TRAINING_IMAGES, start=200)
    assert len(load_training_data(DataConfig(path=str(enough), resolution=32))) == MIN_TRAINING_IMAGES


def test_long_sides_are_refused_before_decoding_and_strips_are_squared_cheaply(anime_subset, tmp_path):
    """A 1 x 1,000,000 px image (under PIL's area cap) and a side over MAX_SIDE count as unreadable, from their
    headers; a strip within the cap is cropped to its middle square before the resize, so it never grows to GBs."""
    root = anime_subset(3)
    Image.new("L", (1_000_000, 1), 128).save(root / "strip.png")
    Image.new("L", (2, images_module.MAX_SIDE + 1), 128).save(root / "tall.png")
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as zf:
        for p in sorted(root.iterdir()):
            zf.write(p, p.name)
    for path in (root, tmp_path / "set.zip"):
        data = load_data(DataConfig(path=str(path), resolution=32))
        assert data.unreadable == ["strip.png", "tall.png"] and len(data) == 3
    with pytest.raises(DataError, match="a side over the 16,384 px"):
        images_module.open_image(root, "strip.png")
    strip = np.zeros((8, 16_000, 3), np.uint8)
    strip[:, 7996:8004] = 255  # the middle 8 x 8 square is white
    square = images_module.to_square(Image.fromarray(strip), 1024, 3)  # resized first, it would be 2 Gpx
    assert square.shape == (1024, 1024, 3) and square.mean() > 250


def test_special_files_are_refused_without_being_read(anime_subset, tmp_path):
    """A device or a FIFO (even one named like a zip or an image) is never opened: reading it would never end."""
    os.mkfifo(tmp_path / "pipe.zip")
    for path in ("/dev/zero", str(tmp_path / "pipe.zip")):
        with pytest.raises(DataError, match="is a special file"):
            load_data(DataConfig(path=path, resolution=32))
    root = anime_subset(3)
    os.mkfifo(root / "fifo.png")  # inside a folder: not listed
    assert images_module.list_images(root) == sorted(p.name for p in root.glob("*.jpg"))
    with pytest.raises(DataError, match="is not a regular file"):
        images_module.open_image(root, "fifo.png")


def _as_nobody(fn):
    """``fn()`` in a forked child that runs as the unprivileged user 'nobody' when this is root (who reads any
    folder), else here; its (JSON) result."""
    if os.geteuid() != 0:
        return fn()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here, only os._exit
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, json.dumps(fn()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        out = fh.read()
    os.waitpid(pid, 0)
    return json.loads(out)


def test_unreadable_folders_are_counted_and_reported(anime_dir):
    """A subfolder the process may not list is reported (count and names), with the images it could read; a data
    path it may not list at all is one line."""
    root = Path(tempfile.mkdtemp(prefix="ganxfer-perm-"))  # outside pytest's root-only folder, for 'nobody'
    try:
        root.chmod(0o755)
        for sub in ("open", "locked", "open/locked-too"):
            (root / sub).mkdir()
        for i, sub in enumerate(("", "open", "locked", "open/locked-too")):
            shutil.copy(anime_dir / f"{i:05d}.jpg", root / sub / f"{i}.jpg")
        for sub in ("open", "locked", "open/locked-too"):
            (root / sub).chmod(0o755 if sub == "open" else 0o700 if os.geteuid() == 0 else 0o000)
        (root / "0.jpg").chmod(0o644)
        (root / "open" / "1.jpg").chmod(0o644)

        def load() -> dict:
            records: list[str] = []
            handler = logging.Handler()
            handler.emit = lambda record: records.append(record.getMessage())
            logging.getLogger("ganxfer.data").addHandler(handler)
            data = load_data(DataConfig(path=str(root), resolution=16))
            try:
                load_data(DataConfig(path=str(root / "locked"), resolution=16))
                locked = "loaded"
            except DataError as e:
                locked = str(e)
            return {"files": data.files, "folders": data.unreadable_folders, "log": records, "locked": locked}

        seen = _as_nobody(load)
        assert seen["files"] == ["0.jpg", "open/1.jpg"] and seen["folders"] == ["locked", "open/locked-too"]
        assert any("skipped 2 folder(s)" in line and "locked, open/locked-too" in line for line in seen["log"])
        assert seen["locked"] == f"data.path {root / 'locked'} cannot be read (permission denied); make it readable"
    finally:
        for sub in ("locked", "open/locked-too"):
            (root / sub).chmod(0o755)
        shutil.rmtree(root)


def test_a_folder_with_one_subfolder_per_class_is_labelled(anime_subset, tmp_path):
    """torchvision's ImageFolder layout: classes are the subfolders, sorted; loose files mean no labels."""
    from ganxfer.data import load_training_data

    root = tmp_path / "pets"
    for name, start in (("dogs", 0), ("cats", 60)):
        (root / name).mkdir(parents=True)
        for i, f in enumerate(sorted(anime_subset(60, start=start, name=name).iterdir())):
            (root / name / f"{i}.jpg").write_bytes(f.read_bytes())
    data = load_training_data(DataConfig(path=str(root), resolution=32), classes=2)
    assert data.classes == ["cats", "dogs"] and data.labels.tolist() == [0] * 60 + [1] * 60
    with pytest.raises(DataError, match=r"discriminator.conditional=3, but .* holds 2 classes \(cats, dogs\); "
                                        r"set discriminator.conditional=2"):
        load_training_data(DataConfig(path=str(root), resolution=32), classes=3)
    (root / "loose.jpg").write_bytes((root / "cats" / "0.jpg").read_bytes())
    assert load_data(DataConfig(path=str(root), resolution=32)).labels is None
    with pytest.raises(DataError, match="needs labelled images: data.path=mnist, or a folder with one subfolder "
                                        "per class"):
        load_training_data(DataConfig(path=str(root), resolution=32), classes=2)
