"""``ganxfer push --space``: the Space folder (app.py, requirements.txt, README with sdk: gradio), its app built
offline against the pushed folder, and the upload with only the network edge mocked."""

from __future__ import annotations

import runpy
import shutil

import huggingface_hub
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from huggingface_hub import constants
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from ganxfer import __version__
from ganxfer.cli import main
from ganxfer.sources import BUNDLED, SourceError, load_generator
from ganxfer.space import gradio_version

MODEL = "dcgan-mnist-64"
# what a push of the bundle uploads; its recipe.yaml only while the bundle ships one (its stage recipes may live in
# ganxfer/recipes/ instead)
MODEL_FILES = sorted(["README.md", "config.json", "model.safetensors", "samples.png"]
                     + (["recipe.yaml"] if (BUNDLED / MODEL / "recipe.yaml").is_file() else []))


def push(*args: str):
    return CliRunner().invoke(main, ["push", MODEL, "someone/mnist-gan", *map(str, args)])


def test_dry_run_writes_the_model_and_its_space(tmp_path):
    res = push("--space", "someone/mnist-demo", "--revision", "v1", "--dry-run", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert f"{tmp_path / 'out'}/model and the Space {tmp_path / 'out'}/space" in res.output
    model, space = tmp_path / "out" / "model", tmp_path / "out" / "space"
    assert sorted(p.name for p in model.iterdir()) == MODEL_FILES
    assert "Try it in the browser: [someone/mnist-demo](https://huggingface.co/spaces/someone/mnist-demo)" \
        in (model / "README.md").read_text()
    assert sorted(p.name for p in space.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    assert (space / "requirements.txt").read_text() == f"ganxfer[demo]=={__version__}\n"
    meta = yaml.safe_load((space / "README.md").read_text().split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["sdk_version"] == gradio_version()
    assert meta["models"] == ["someone/mnist-gan"] and meta["title"] == "mnist-demo"
    assert '"someone/mnist-gan@v1"' in (space / "app.py").read_text().replace("'", '"')


def test_the_space_app_builds_offline_against_the_pushed_folder(gradio, tmp_path, monkeypatch, no_hub):
    assert push("--space", "someone/mnist-demo", "--dry-run", tmp_path / "out").exit_code == 0
    app = str(tmp_path / "out" / "space" / "app.py")
    with pytest.raises(SourceError, match="Hub model someone/mnist-gan is not in the Hub cache"):
        runpy.run_path(app)  # as on the Space: it loads the pushed id (here offline, with an empty cache)
    monkeypatch.setenv("GANXFER_MODEL", str(tmp_path / "out" / "model"))
    demo = runpy.run_path(app)["demo"]
    assert isinstance(demo, gradio.Blocks)
    grid = next(f.fn for f in demo.fns.values() if f.api_name == "grid")
    image, path, status = grid("5", 4, 1.0)
    assert status.startswith("4 image(s) of seed 5") and image.size == (134, 134)
    expected = make_grid(load_generator(MODEL).sample(4, seed=5), nrow=2, padding=2, normalize=True,
                         value_range=(-1, 1))
    assert np.array_equal(np.asarray(image), np.asarray(to_pil_image(expected)))  # the pushed weights drew it
    assert grid("5", 65, 1.0)[2].startswith("**Error:** count must be from 1 to 64")
    on_load = next(f for f in demo.fns.values() if any(trigger == "load" for _, trigger in f.targets))
    assert on_load.fn("0", 16, 1.0)[2].startswith("16 image(s) of seed 0")  # the Space, too, opens with a grid


def test_push_uploads_the_model_then_the_space(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls, uploaded = [], {}

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))
        kind = "spaces/" if kw.get("repo_type") == "space" else ""
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{kind}{repo_id}")

    def upload_folder(self, **kw):
        calls.append(("upload_folder", kw["repo_id"], kw["repo_type"]))
        root = kw["folder_path"]
        uploaded[kw["repo_id"]] = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        shutil.copytree(root, tmp_path / kw["repo_id"].replace("/", "--"))

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    res = push("--space", "someone/mnist-demo")
    assert res.exit_code == 0, res.output
    assert "https://huggingface.co/someone/mnist-gan (Space: https://huggingface.co/spaces/someone/mnist-demo)" \
        in res.output
    assert calls == [
        ("create_repo", "someone/mnist-gan", {"private": False, "exist_ok": True, "repo_type": "model"}),
        ("upload_folder", "someone/mnist-gan", "model"),
        ("create_repo", "someone/mnist-demo", {"private": False, "exist_ok": True, "repo_type": "space",
                                               "space_sdk": "gradio"}),
        ("upload_folder", "someone/mnist-demo", "space"),
    ]
    assert uploaded == {"someone/mnist-gan": MODEL_FILES,
                        "someone/mnist-demo": ["README.md", "app.py", "requirements.txt"]}
    # the same folders as the dry run
    assert push("--space", "someone/mnist-demo", "--dry-run", tmp_path / "dry").exit_code == 0
    for repo, sub in (("someone--mnist-gan", "model"), ("someone--mnist-demo", "space")):
        for f in (tmp_path / repo).iterdir():
            assert f.read_bytes() == (tmp_path / "dry" / sub / f.name).read_bytes(), f.name


def test_a_bad_space_id_is_one_line(tmp_path):
    res = push("--space", "mnist-demo", "--dry-run", tmp_path / "out")
    assert res.exit_code == 2 and "--space 'mnist-demo' must be owner/name, the id of a Space" in res.output
    assert not (tmp_path / "out").exists()
