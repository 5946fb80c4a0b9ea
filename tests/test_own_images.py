"""Your own images in three commands: the README's commands on a folder of pictures of mixed sizes and formats."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parent.parent
BUDGET = ["--set", "train.minutes=null", "--set", "train.kimg=0.064", "--set", "train.batch_size=16",
          "--set", "train.sample_every_kimg=1", "--set", "train.checkpoint_every_kimg=1"]


def readme_commands() -> list[list[str]]:
    """The ganxfer lines of the README's own-images block (its install line is tests/test_install.py's)."""
    block = re.search(r"<!-- own-images -->\n```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README lost its <!-- own-images --> block"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    assert lines[0].startswith("pip install")
    return [shlex.split(line) for line in lines[1:]]


def mixed_folder(faces: Path, out: Path, n: int) -> Path:
    """``n`` real faces as a user's folder: sizes from 40 to 300 px, not square, JPEG/PNG/WebP/BMP/GIF/TIFF,
    some grayscale, some with transparency, one EXIF-rotated phone photo, in subfolders, plus a text file and a
    broken JPEG that must be skipped."""
    rng = np.random.default_rng(0)
    out.mkdir()
    (out / "more").mkdir()
    formats = ["jpg", "png", "webp", "bmp", "gif", "tiff"]
    for i in range(n):
        img = Image.open(faces / f"{i:05d}.jpg").convert("RGB")
        w, h = (int(s) for s in rng.integers(40, 300, size=2))
        img = img.resize((w, h), Image.BICUBIC)
        ext = formats[i % len(formats)]
        if i % 7 == 0:
            img = img.convert("L")
        if ext == "png" and i % 4 == 1:
            img = img.convert("RGBA")
            img.putalpha(200)
        folder = out / "more" if i % 3 == 0 else out
        img.save(folder / f"face{i}.{ext}")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show
    Image.open(faces / f"{n:05d}.jpg").save(out / "phone.jpg", exif=exif)
    (out / "notes.txt").write_text("not a picture")
    (out / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off")
    return out


def ganxfer(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert args[0] == "ganxfer"
    return subprocess.run([sys.executable, "-m", "ganxfer", *args[1:]], cwd=cwd, capture_output=True, text=True)


def test_the_readme_commands_train_and_sample_a_folder_of_mixed_pictures(anime_dir, lite0_cache, tmp_path):
    finetune, sample = readme_commands()
    assert finetune[:3] == ["ganxfer", "finetune", "own_images"] and sample[:2] == ["ganxfer", "sample"]
    path = next(a.split("=", 1)[1] for a in finetune if a.startswith("data.path="))
    mixed_folder(anime_dir, tmp_path / path, 120)
    proc = ganxfer(finetune + BUDGET, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "121 images from ./my_images at 64 px" in proc.stderr  # 120 faces and the phone photo
    assert "skipped 1 unreadable image(s)" in proc.stderr and "broken.jpg" in proc.stderr
    assert (tmp_path / "runs" / "own_images" / "samples").is_dir()
    proc = ganxfer(sample, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grid = Image.open(tmp_path / sample[sample.index("--out") + 1])
    assert grid.mode == "RGB" and grid.size == (8 * 65 + 1, 8 * 65 + 1)


def test_a_folder_too_small_to_train_on_says_so_in_one_line(anime_dir, tmp_path):
    finetune, _ = readme_commands()
    path = next(a.split("=", 1)[1] for a in finetune if a.startswith("data.path="))
    mixed_folder(anime_dir, tmp_path / path, 40)
    proc = ganxfer(finetune + BUDGET, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: data.path ./my_images holds only 41 readable images (1 more could not be read); "
                      "training needs at least 100 (a few hundred or more for varied results): add images"]
    assert not (tmp_path / "runs" / "own_images" / "generator").exists()
