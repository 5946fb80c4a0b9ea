"""The Hub integration, offline: local round trips, pulls from a pre-filled Hub cache, push with the network
edge mocked, model cards, Hub datasets of parquet shards, and the refusal of pickles."""

from __future__ import annotations

import io
import json
import pickle
import shutil

import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from click.testing import CliRunner
from huggingface_hub import ModelCard, constants
from PIL import Image

import ganxfer
from ganxfer import hubdata, sources
from ganxfer.card import build_upload, card_facts, local_paths
from ganxfer.cli import main
from ganxfer.data import load_data
from ganxfer.nets import ModelFormatError, export_model, load_model
from ganxfer.nets.base import hub_config
from ganxfer.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from ganxfer.recipe import load_recipe
from ganxfer.schema import DataConfig, Recipe, expand_env

SHA_A, SHA_B = "a" * 40, "b" * 40


def small_g(seed: int = 0) -> DCGANGenerator:
    torch.manual_seed(seed)
    return DCGANGenerator(resolution=32, channels=1, ngf=8, latent_dim=16).eval()


def small_d() -> DCGANDiscriminator:
    return DCGANDiscriminator(resolution=32, channels=1, ndf=8).eval()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Hub cache of the test's own, offline (huggingface_hub's constants are frozen at import)."""
    root = tmp_path / "hf-cache"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GANXFER_CACHE", str(tmp_path / "ganxfer-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return root


def put_in_cache(cache, repo_id: str, files: dict, sha: str = SHA_A, refs=("main",), repo_type: str = "model"):
    """Place files in huggingface_hub's cache layout: <type>s--owner--name/{blobs,snapshots/<sha>,refs/<ref>}."""
    storage = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    for rel, content in files.items():
        blob = storage / "blobs" / f"{abs(hash((sha, rel))):x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content.read_bytes() if hasattr(content, "read_bytes") else content)
        link = storage / "snapshots" / sha / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    for ref in refs:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(sha)
    return storage / "snapshots" / sha


def model_files(folder, prefix: str = "") -> dict:
    return {f"{prefix}{n}": folder / n for n in ("config.json", "model.safetensors")}


# --- local round trips and strict loading ------------------------------------------------------------------


def test_round_trip_through_local_folders(tmp_path):
    g, d = small_g(), small_d()
    export_model(g, tmp_path / "run" / "generator", "generator")
    export_model(d, tmp_path / "run" / "discriminator", "discriminator")
    for source in (tmp_path / "run", tmp_path / "run" / "generator"):
        loaded = ganxfer.load_generator(str(source))
        assert torch.equal(loaded.sample(4, seed=3), g.sample(4, seed=3))
    loaded_d = load_model(sources.resolve(str(tmp_path / "run"), "discriminator"), "discriminator")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.equal(loaded_d(x).logits, d(x).logits)
    # PyTorchModelHubMixin reads the same folder (its safetensors path; ganxfer never takes its pickle fallback)
    mixin = DCGANGenerator.from_pretrained(tmp_path / "run" / "generator").eval()
    assert torch.equal(mixin.sample(2, seed=1), g.sample(2, seed=1))
    with pytest.raises(sources.SourceError, match="holds a generator, not a discriminator"):
        sources.resolve(str(tmp_path / "run" / "generator"), "discriminator")


def test_loading_is_strict(tmp_path):
    import safetensors.torch

    folder = export_model(small_g(), tmp_path / "g", "generator")
    state = safetensors.torch.load_file(str(folder / "model.safetensors"))
    state["extra.weight"] = torch.zeros(1)
    safetensors.torch.save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelFormatError, match="unexpected"):
        ganxfer.load_generator(str(folder))


# --- pickles are refused, never opened ---------------------------------------------------------------------


class Payload:
    """Unpickling this creates a file: the proof that a loader ran the pickle."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return open, (self.target, "w")


def test_pickle_payload_is_live(tmp_path):
    """The test payload really acts when unpickled, so its absence below means it was never unpickled."""
    marker = tmp_path / "sanity"
    pickle.loads(pickle.dumps(Payload(str(marker)))).close()
    assert marker.exists()


def test_folder_with_only_a_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(str(marker))))
    res = CliRunner().invoke(main, ["sample", str(folder), "--num", "1", "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 2
    assert "offers only pickle weights (pytorch_model.bin)" in res.output and "safetensors" in res.output
    assert len(res.output.strip().splitlines()) == 1
    (folder / "config.json").write_text(json.dumps(hub_config(small_g())))  # with a config: still refused
    with pytest.raises(sources.SourceError, match="only pickle"):
        sources.resolve(str(folder))
    with pytest.raises(sources.SourceError, match="only pickle"):
        sources.resolve(str(folder / "pytorch_model.bin"))
    assert not marker.exists()


def test_hub_repo_with_only_a_pickle_is_refused(cache, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps(Payload(str(marker))))
    put_in_cache(cache, "mallory/gan", {"pytorch_model.bin": evil, "config.json": b"{}"})
    res = CliRunner().invoke(main, ["sample", "mallory/gan", "--num", "1", "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and "Hub model mallory/gan offers only pickle weights" in res.output
    assert not marker.exists()


# --- pull from the Hub cache -------------------------------------------------------------------------------


def test_pull_from_a_prefilled_hub_cache_offline(cache, tmp_path):
    g, d = small_g(1), small_d()
    export_model(g, tmp_path / "g", "generator")
    export_model(d, tmp_path / "d", "discriminator")
    files = {**model_files(tmp_path / "g"), **model_files(tmp_path / "d", "discriminator/"), "README.md": b"# c\n"}
    put_in_cache(cache, "someone/digits", files)
    out = tmp_path / "grid.png"
    res = CliRunner().invoke(main, ["sample", "someone/digits", "--num", "4", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (2 * 32 + 3, 2 * 32 + 3)
    assert torch.equal(ganxfer.load_generator("someone/digits").sample(4, seed=0), g.sample(4, seed=0))
    loaded_d = load_model(sources.resolve("someone/digits", "discriminator"), "discriminator")
    x = torch.zeros(1, 1, 32, 32)
    assert torch.equal(loaded_d(x).logits, d(x).logits)


def test_revisions(cache, tmp_path):
    a, b = small_g(1), small_g(2)
    export_model(a, tmp_path / "a", "generator")
    export_model(b, tmp_path / "b", "generator")
    put_in_cache(cache, "someone/gan", model_files(tmp_path / "a"), sha=SHA_A, refs=("main",))
    put_in_cache(cache, "someone/gan", model_files(tmp_path / "b"), sha=SHA_B, refs=("v2",))
    z = a.sample(2, seed=0)
    assert torch.equal(ganxfer.load_generator("someone/gan").sample(2, seed=0), z)
    assert torch.equal(ganxfer.load_generator("someone/gan@v2").sample(2, seed=0), b.sample(2, seed=0))
    assert torch.equal(ganxfer.load_generator(f"someone/gan@{SHA_A}").sample(2, seed=0), z)
    with pytest.raises(sources.SourceError, match="someone/gan@v3 is not in the Hub cache"):
        sources.resolve("someone/gan@v3")


def test_offline_and_not_cached_is_one_line(cache, tmp_path):
    res = CliRunner().invoke(main, ["sample", "someone/missing", "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 2
    line = res.output.strip()
    assert len(line.splitlines()) == 1
    assert "Hub model someone/missing is not in the Hub cache" in line and "HF_HUB_OFFLINE=1" in line


# --- push and model cards ----------------------------------------------------------------------------------


def make_run(root, evaluated: bool = True):
    """A run folder by hand: exported models, recipe, metrics, transfer report and two sample grids."""
    run = root / "run"
    export_model(small_g(), run / "generator", "generator")
    export_model(small_d(), run / "discriminator", "discriminator")
    recipe = Recipe().to_dict()
    recipe["data"].update(path="hub:huggan/anime-faces", resolution=32, channels=1)
    recipe["generator"].update(ngf=8, latent_dim=16, init="someone/base")
    recipe["discriminator"].update(kind="projected", backbone="tf_efficientnet_lite0.in1k")
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    rows = [{"kimg": 0.064, "step": 2, "loss_d": 1.0, "loss_g": 1.0, "wall_s": 5.0},
            {"kimg": 0.128, "step": 4, "loss_d": 1.0, "loss_g": 1.0, "wall_s": 9.0}]
    if evaluated:
        rows.append({"kimg": 0.128, "step": 4, "kid_mean": 0.0123, "kid_std": 0.0004, "fid": 45.678})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "transfer.json").write_text(json.dumps({"generator": {
        "source": "someone/base", "source_dir": "/c/hub/models--someone--base/snapshots/" + SHA_A}}))
    (run / "samples").mkdir()
    for n, color in ((64, 0), (128, 255)):
        Image.new("L", (8, 8), color).save(run / "samples" / f"{n:09d}.png")
    return run


def test_model_card_content(tmp_path):
    run = make_run(tmp_path)
    files = build_upload(str(run), "someone/anime-gan", tmp_path / "out")
    assert files == ["README.md", "config.json", "model.safetensors", "recipe.yaml", "samples.png"]
    text = (tmp_path / "out" / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])  # valid YAML front matter
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.to_dict() == front
    assert front["library_name"] == "ganxfer" and front["license"] == "apache-2.0"
    assert front["pipeline_tag"] == "unconditional-image-generation"
    assert {"gan", "ganxfer", "dcgan", "projected", "anime-faces", "tf_efficientnet_lite0.in1k"} <= set(front["tags"])
    assert front["datasets"] == ["huggan/anime-faces"] and front["base_model"] == "someone/base"
    usage = ['import ganxfer  # pip install . (from a clone of ganxfer)',
             'generator = ganxfer.load_generator("someone/anime-gan")',
             'images = generator.sample(16, seed=0)  # (16, 1, 32, 32) tensor in [-1, 1]']
    assert "```python\n" + "\n".join(usage) + "\n```" in card.text
    assert "| images seen | 128 (0.128 kimg) |" in card.text
    assert "| 0.128 | 45.68 | 12.30 ± 0.40 |" in card.text
    assert "![Sample grid](samples.png)" in card.text and "| hardware | not recorded |" in card.text
    # the latest grid of the run is the one shipped
    assert (tmp_path / "out" / "samples.png").read_bytes() == (run / "samples" / "000000128.png").read_bytes()


def test_card_of_an_exported_folder_renders_a_grid(tmp_path):
    export_model(small_g(), tmp_path / "g", "generator")
    files = build_upload(str(tmp_path / "g"), "someone/plain", tmp_path / "out", hardware="1x H100")
    assert files == ["README.md", "config.json", "model.safetensors", "samples.png"]
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert "base_model" not in card.data.to_dict() and "Not evaluated yet" in card.text
    assert Image.open(tmp_path / "out" / "samples.png").size == (8 * 33 + 1,) * 2  # 64 images, 8x8 grid


def test_card_facts_are_written_and_read_back_as_data(tmp_path):
    build_upload(str(make_run(tmp_path)), "someone/anime-gan", tmp_path / "out")
    facts = card_facts((tmp_path / "out" / "README.md").read_text())
    assert facts == {"images_seen": 128, "kimg": 0.128, "fid": 45.678, "kid_mean": 0.0123, "kid_std": 0.0004}
    card = ModelCard.load(tmp_path / "out" / "README.md")  # as data in the metadata, not parsed from the text
    assert card.data.to_dict()["ganxfer"] == facts
    assert card_facts(card.text) == {}
    export_model(small_g(), tmp_path / "g", "generator")
    build_upload(str(tmp_path / "g"), "someone/plain", tmp_path / "plain")
    assert card_facts((tmp_path / "plain" / "README.md").read_text()) == {}


def test_push_with_the_network_edge_mocked(tmp_path, monkeypatch):
    run = make_run(tmp_path, evaluated=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls, uploaded = [], {}

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kw):
        calls.append(("create_branch", repo_id, kw))

    def upload_folder(self, **kw):
        calls.append(("upload_folder", kw["repo_id"], {k: v for k, v in kw.items() if k in ("revision", "repo_type")}))
        root = kw["folder_path"]
        uploaded.update({p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()})
        shutil.copytree(root, tmp_path / "uploaded")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_branch", create_branch)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    res = CliRunner().invoke(main, ["push", str(run), "someone/anime-gan", "--private", "--revision", "v1",
                                    "--with-discriminator"])
    assert res.exit_code == 0, res.output
    assert "https://huggingface.co/someone/anime-gan/tree/v1" in res.output
    assert calls == [
        ("create_repo", "someone/anime-gan", {"private": True, "exist_ok": True, "repo_type": "model"}),
        ("create_branch", "someone/anime-gan", {"branch": "v1", "exist_ok": True, "repo_type": "model"}),
        ("upload_folder", "someone/anime-gan", {"revision": "v1", "repo_type": "model"}),
    ]
    assert sorted(uploaded) == ["README.md", "config.json", "discriminator/config.json",
                                "discriminator/model.safetensors", "model.safetensors", "recipe.yaml", "samples.png"]
    assert uploaded["model.safetensors"] == (run / "generator" / "model.safetensors").read_bytes()
    assert uploaded["discriminator/model.safetensors"] == (run / "discriminator" / "model.safetensors").read_bytes()
    # the dry run writes the same folder, and that folder is a loadable source
    res = CliRunner().invoke(main, ["push", str(run), "someone/anime-gan", "--with-discriminator",
                                    "--dry-run", str(tmp_path / "dry")])
    assert res.exit_code == 0, res.output
    dry = {p.relative_to(tmp_path / "dry").as_posix(): p.read_bytes() for p in (tmp_path / "dry").rglob("*")
           if p.is_file()}
    assert dry == uploaded
    res = CliRunner().invoke(main, ["sample", str(tmp_path / "dry"), "--num", "4", "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 0, res.output


def test_push_offline_and_bad_ids_are_one_line(tmp_path, cache):
    run = make_run(tmp_path)
    res = CliRunner().invoke(main, ["push", str(run), "someone/anime-gan"])
    assert res.exit_code == 2 and "HF_HUB_OFFLINE=1 forbids uploading" in res.output and "--dry-run" in res.output
    res = CliRunner().invoke(main, ["push", str(run), "anime-gan", "--dry-run", str(tmp_path / "o")])
    assert res.exit_code == 2 and "must be owner/name" in res.output
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    res = CliRunner().invoke(main, ["push", str(run), "a/b", "--dry-run", str(tmp_path / "busy")])
    assert res.exit_code == 2 and "not an empty folder" in res.output


def test_pushed_recipe_holds_no_local_path(tmp_path):
    """A run on local images, warm-started from local folders: the uploaded recipe.yaml has a placeholder and a
    comment where each path of this machine was, loads back as a recipe, and trains once data.path is set; the card
    says which keys to set. 'mnist', hub: datasets, Hub ids and bundled names stay."""
    images = tmp_path / "private" / "anime-faces-32"
    images.mkdir(parents=True)
    for i in range(4):
        Image.new("L", (32, 32), 60 * i).save(images / f"{i}.png")
    export_model(small_g(1), tmp_path / "private" / "base-g", "generator")
    export_model(small_d(), tmp_path / "private" / "base-d", "discriminator")
    run = make_run(tmp_path)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["data"]["path"] = str(images)
    recipe["eval"].update(data="mnist", every_kimg=5.0)
    recipe["generator"]["init"] = str(tmp_path / "private" / "base-g")
    recipe["discriminator"].update(init=str(tmp_path / "private" / "base-d"),
                                   pretrained_file=str(tmp_path / "private" / "lite0.safetensors"))
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (run / "transfer.json").write_text(json.dumps({role: {"source": recipe[role]["init"],
                                                          "source_dir": recipe[role]["init"]}
                                                   for role in ("generator", "discriminator")}))
    res = CliRunner().invoke(main, ["push", str(run), "someone/anime-gan", "--dry-run", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "out" / "recipe.yaml").read_text()
    assert str(tmp_path) not in text and "private" not in text
    assert str(tmp_path) not in (tmp_path / "out" / "README.md").read_text()
    lines = text.splitlines()
    for key, placeholder, name in (("path", "<your images>", "anime-faces-32"),
                                   ("init", "<the warm-start generator>", "base-g"),
                                   ("init", "<the warm-start discriminator>", "base-d"),
                                   ("pretrained_file", "<backbone weights>", "lite0.safetensors")):
        line = next(x for x in lines if x.startswith(f"  {key}: {placeholder}  # set "))
        assert f"the run read {name} on the machine that trained it" in line, line
    loaded = yaml.safe_load(text)  # valid YAML, the same recipe but for the placeholders
    assert loaded["data"]["path"] == "<your images>" and loaded["eval"]["data"] == "mnist"
    assert loaded["generator"]["init"] == "<the warm-start generator>"
    assert {k: v for k, v in loaded.items() if k not in ("data", "generator", "discriminator")} == \
        {k: v for k, v in recipe.items() if k not in ("data", "generator", "discriminator")}
    assert load_recipe(tmp_path / "out" / "recipe.yaml").data.path == "<your images>"
    copy = load_recipe(tmp_path / "out" / "recipe.yaml", [f"data.path={images}"])
    assert len(load_data(copy.data)) == 4  # set data.path, and the data loads
    card = ModelCard.load(tmp_path / "out" / "README.md").text
    assert ("Its data.path, generator.init, discriminator.init and discriminator.pretrained_file held paths of the "
            "machine that trained this model, left blank there: set them to your copies") in card
    assert "`ganxfer train recipe.yaml --set data.path=PATH/TO/anime-faces-32 --set generator.init=PATH/TO/base-g" \
        in card and "warm-started from a local generator (`base-g`)" in card


def test_recipe_without_local_paths_is_uploaded_as_it_is(tmp_path):
    run = make_run(tmp_path)  # hub: data, a Hub warm start (transfer.json: loaded from the Hub cache)
    build_upload(str(run), "someone/anime-gan", tmp_path / "out")
    assert (tmp_path / "out" / "recipe.yaml").read_bytes() == (run / "recipe.yaml").read_bytes()
    assert "The full recipe is [`recipe.yaml`](recipe.yaml); `ganxfer train recipe.yaml` repeats the run." \
        in (tmp_path / "out" / "README.md").read_text()
    hub_dir = {"generator": {"source_dir": "/c/hub/models--someone--base/snapshots/" + SHA_A}}
    assert local_paths({"data": {"path": "mnist"}, "eval": {"data": "hub:huggan/anime-faces"},
                        "generator": {"init": "dcgan-mnist-64"}, "discriminator": {"init": "someone/d@v1"}}) == {}
    assert local_paths({"generator": {"init": "someone/base"}}, hub_dir) == {}
    assert local_paths({"generator": {"init": "someone/base"}}, {"generator": {"source_dir": "/w/someone/base"}}) \
        == {("generator", "init"): "someone/base"}  # a local folder that looks like a Hub id
    assert local_paths({"generator": {"init": "runs/m14/cond/generator"}, "data": {"path": "faces.zip"}}) == \
        {("generator", "init"): "runs/m14/cond/generator", ("data", "path"): "faces.zip"}


# --- datasets from the Hub ---------------------------------------------------------------------------------


def png(color: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (color, 255 - color, 7)).save(buf, format="PNG")
    return buf.getvalue()


def parquet_shard(path, colors: list[int]) -> None:
    """A shard as `datasets` writes an Image feature: struct<bytes, path> plus its features metadata."""
    image = pa.array([{"bytes": png(c), "path": f"{c}.png"} for c in colors],
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    features = {"info": {"features": {"image": {"_type": "Image"}, "label": {"dtype": "int64", "_type": "Value"}}}}
    table = pa.table({"image": image, "label": pa.array(colors, pa.int64())})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({"huggingface": json.dumps(features)}), path)


def test_hub_dataset_of_parquet_shards(cache, tmp_path, monkeypatch):
    parquet_shard(tmp_path / "train.parquet", [10, 20, 30, 40, 50])
    parquet_shard(tmp_path / "test.parquet", [60, 70])
    put_in_cache(cache, "someone/faces", {"data/train-00000-of-00001.parquet": tmp_path / "train.parquet",
                                          "data/test-00000-of-00001.parquet": tmp_path / "test.parquet"},
                 repo_type="dataset")
    data = load_data(DataConfig(path="hub:someone/faces", resolution=32, channels=3))
    assert len(data) == 5 and data.pixels.shape == (5, 3, 32, 32)  # the train split only
    assert data.pixels[0, :, 0, 0].tolist() == [10, 245, 7]
    extracted = hubdata.fetch_dataset("someone/faces")
    assert extracted.parent.parent.name == "datasets--someone--faces"  # next to the cached snapshot

    def fail(*args):
        raise AssertionError("extracted twice")

    monkeypatch.setattr(hubdata, "_write_parquet_images", fail)
    assert hubdata.fetch_dataset("someone/faces") == extracted


def test_hub_dataset_of_image_files_and_errors(cache, tmp_path):
    snapshot = put_in_cache(cache, "someone/pics", {f"train/{i}.png": png(i) for i in range(3)}, repo_type="dataset")
    assert hubdata.fetch_dataset("someone/pics") == snapshot
    with pytest.raises(hubdata.HubDataError) as e:
        load_data(DataConfig(path="hub:someone/absent", resolution=32))
    assert "Hub dataset someone/absent is not in the Hub cache" in str(e.value)
    assert "HF_HUB_OFFLINE=1" in str(e.value) and "data.path" in str(e.value)


def test_anime_recipe_path_uses_ganxfer_data_else_the_hub(monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", "/data")
    assert load_recipe("recipes/anime_dcgan.yaml").data.path == "/data/anime-faces-64"
    monkeypatch.delenv("GANXFER_DATA")
    assert load_recipe("recipes/anime_dcgan.yaml").data.path == "hub:huggan/anime-faces"
    monkeypatch.setenv("GANXFER_DATA", "")  # empty counts as unset, as with bash's colon forms
    assert expand_env("${GANXFER_DATA:-hub:a/b}${GANXFER_DATA:+/sub}") == "hub:a/b"
    assert expand_env("${GANXFER_DATA:+x}") == "" and expand_env("${GANXFER_NOPE_UNSET_VAR:+x}y") == "y"


def test_pixels_from_a_cached_image_repo_match_the_files(cache, tmp_path):
    put_in_cache(cache, "someone/one", {"a.png": png(99)}, repo_type="dataset")
    data = load_data(DataConfig(path="hub:someone/one@main", resolution=40, channels=3))
    expected = np.asarray(Image.open(io.BytesIO(png(99))))
    assert np.array_equal(data.pixels[0].permute(1, 2, 0).numpy(), expected)
