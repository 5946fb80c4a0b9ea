"""A plain, non-editable install runs the main job from an empty folder: the wheel carries the recipes and the
bundled generator. The wheel is built as the README says (python -m build) and installed into a fresh venv."""

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (found,) = out.glob("ganxfer-*.whl")
    return found


def test_the_wheel_holds_the_recipes_and_the_bundle(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe in (ROOT / "ganxfer" / "recipes").rglob("*.yaml"):
        assert f"ganxfer/recipes/{recipe.relative_to(ROOT / 'ganxfer' / 'recipes')}" in names, recipe
    assert {"ganxfer/pretrained/dcgan-mnist-64/model.safetensors", "ganxfer/pretrained/dcgan-mnist-64/config.json"} \
        <= names


def test_a_fresh_venv_with_the_wheel_finetunes_the_headline_from_an_empty_folder(wheel, anime_dir, lite0_cache,
                                                                                  tmp_path):
    """Only ganxfer comes from the wheel (--no-deps); torch and the rest are this environment's, seen through a
    .pth file, since installing them again would take gigabytes."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "deps-from-the-test-env.pth").write_text("\n".join(sorted(ours)) + "\n")
    proc = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(env_dir / "bin" / "ganxfer"), "finetune", "anime_from_mnist",
                           "--set", "train.kimg=0.05", "--set", "train.minutes=null", "--set", "data.limit=256",
                           "--set", "train.batch_size=16"], cwd=empty, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    where = subprocess.run([str(python), "-c", "import ganxfer; print(ganxfer.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(site), where  # the wheel's copy, not the clone's
    assert (empty / "runs" / "anime_from_mnist" / "generator" / "model.safetensors").is_file()
    assert "dcgan-mnist-64" in (empty / "runs" / "anime_from_mnist" / "transfer.json").read_text()
