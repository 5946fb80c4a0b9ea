import re
from pathlib import Path

import pytest

from ganxfer.recipe import load_recipe
from ganxfer.schema import Recipe, RecipeError, describe

RECIPES = sorted(Path(__file__).parent.parent.joinpath("recipes").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_validate(path, monkeypatch):
    monkeypatch.setenv("GANXFER_DATA", "/data")
    recipe = load_recipe(path)
    assert recipe.name == path.stem


def test_gpu_headline_is_the_headline_at_a_gpu_batch():
    """anime_from_mnist_gpu changes only the batch, the budget and the EMA decay, which keeps the EMA's half-life
    in images: 0.999 per step of 32 images and 0.992 per step of 256 halve within 2% of the same images."""
    import math

    from ganxfer.recipe import flat

    cpu, gpu = flat(load_recipe("anime_from_mnist")), flat(load_recipe("anime_from_mnist_gpu"))
    changed = {k for k in cpu if cpu[k] != gpu[k]}
    assert changed == {"name", "train.batch_size", "train.kimg", "train.minutes", "train.ema"}
    half_life = {r["name"]: math.log(0.5) / math.log(r["train.ema"]) * r["train.batch_size"] for r in (cpu, gpu)}
    assert half_life["anime_from_mnist_gpu"] == pytest.approx(half_life["anime_from_mnist"], rel=0.02)
    assert gpu["train.batch_size"] >= 8 * 32 and gpu["train.minutes"] * 1.5e4 * 60 / 1000 <= gpu["train.kimg"]


def test_defaults_and_types(tmp_path):
    r = load_recipe(write(tmp_path, "name: x\ntrain: {kimg: 3}\n"))
    assert isinstance(r, Recipe)
    assert r.train.kimg == 3.0 and isinstance(r.train.kimg, float)
    assert r.optim.betas == [0.5, 0.999] and r.loss.kind == "bce"


def test_overrides_are_dotted_and_typed(tmp_path):
    r = load_recipe(write(tmp_path, "name: x\n"), ["train.kimg=0.5", "loss.kind=hinge", "data.hflip=true",
                                                   "optim.betas=[0.0, 0.99]", "generator.init=dcgan-mnist-64"])
    assert (r.train.kimg, r.loss.kind, r.data.hflip, r.optim.betas) == (0.5, "hinge", True, [0.0, 0.99])
    assert r.generator.init == "dcgan-mnist-64"


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown key 'train.kimgg'; did you mean 'train.kimg'\?"):
        load_recipe(write(tmp_path, "train: {kimgg: 3}\n"))
    with pytest.raises(RecipeError, match=r"'discriminator.backbon'.*'discriminator.backbone'"):
        load_recipe(write(tmp_path, "name: x\n"), ["discriminator.backbon=resnet18"])


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", r"train.batch_size=0 is out of range; expected >= 1"),
    ("train.batch_size=abc", r"train.batch_size: expected int, got str 'abc'"),
    ("data.channels=2.5", r"data.channels: expected int"),
    ("train.ema=1.5", r"train.ema=1.5 is out of range; expected \[0, 1\]"),
    ("loss.kind=hinj", r"'hinj' is not one of bce, hinge \(did you mean 'hinge'\?\)"),
    ("data.hflip=3", r"data.hflip: expected bool"),
    ("train=3", r"'train' must be a mapping"),
    ("kimg", r"expected KEY=VALUE"),
    ("discriminator.input_size=48", r"discriminator.input_size=48: a dcgan discriminator judges 32, 64, 128 pixels"),
    ("loss.anchor=10", r"loss.anchor=10 was retired: its study found no gain"),
    ("loss.top_k_kimg=5", r"loss.top_k_kimg=5.0 does nothing unless loss.top_k < 1; turn that on"),
    ("discriminator.conditional=5", r"discriminator.conditional=5: MNIST has 10 classes; use "
                                    r"discriminator.conditional=10, or 0 for off"),
])
def test_bad_values_fail_with_one_line(tmp_path, override, message):
    with pytest.raises(RecipeError, match=message) as err:
        load_recipe(write(tmp_path, "name: x\n"), [override])
    assert "\n" not in str(err.value)


def test_conditional_takes_labelled_data_of_any_kind(tmp_path):
    """Any data path may hold classes (a folder of class subfolders; checked when the data loads); MNIST's are 10."""
    assert load_recipe(write(tmp_path, "data: {path: /faces}\n"), ["discriminator.conditional=3"]).discriminator \
        .conditional == 3
    assert load_recipe(write(tmp_path, "name: x\n"), ["discriminator.conditional=10"]).discriminator.conditional == 10
    with pytest.raises(RecipeError, match=r"MNIST has 10 classes"):
        load_recipe(write(tmp_path, "name: x\n"), ["discriminator.conditional=3"])
    with pytest.raises(RecipeError, match=r"needs 2 classes or more"):
        load_recipe(write(tmp_path, "data: {path: /faces}\n"), ["discriminator.conditional=1"])


def test_env_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("GANXFER_MY_DATA", "/somewhere")
    monkeypatch.delenv("GANXFER_NOT_SET", raising=False)
    r = load_recipe(write(tmp_path, "data: {path: '${GANXFER_MY_DATA}/faces'}\n"))
    assert r.data.path == "/somewhere/faces"
    r = load_recipe(write(tmp_path, "data: {path: '${GANXFER_NOT_SET:-mnist}'}\n"))
    assert r.data.path == "mnist"
    with pytest.raises(RecipeError, match="environment variable GANXFER_NOT_SET is not set"):
        load_recipe(write(tmp_path, "data: {path: '${GANXFER_NOT_SET}/faces'}\n"))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="invalid YAML at line 3; fix the syntax"):
        load_recipe(write(tmp_path, "name: x\ntrain: {kimg: [\n"))


def test_resolved_recipe_round_trips(tmp_path):
    r = load_recipe(write(tmp_path, "name: x\n"), ["train.kimg=2"])
    again = load_recipe(write(tmp_path, r.to_yaml()))
    assert again == r


def test_describe_lists_every_key():
    keys = {row[0] for row in describe()}
    assert {"train.kimg", "train.batch_size", "data.path", "generator.init", "discriminator.mode"} <= keys


def test_r1_under_fp16_is_refused_at_load(tmp_path):
    path = write(tmp_path, "loss: {r1_gamma: 1.0}\n")
    with pytest.raises(RecipeError, match="train.mixed_precision=bf16"):
        load_recipe(path, ["train.mixed_precision=fp16"])
    assert load_recipe(path, ["train.mixed_precision=bf16"]).loss.r1_gamma == 1.0


def test_scientific_notation_and_listed_values_are_accepted(tmp_path):
    path = write(tmp_path, "name: x\noptim: {d_lr: 2e-4}\n")
    r = load_recipe(path, ["optim.g_lr=1e-4", "train.mixed_precision=no", "train.kimg=1.5E+1"])
    assert (r.optim.g_lr, r.optim.d_lr, r.train.mixed_precision, r.train.kimg) == (1e-4, 2e-4, "no", 15.0)
    assert load_recipe(write(tmp_path, r.to_yaml())) == r


def test_only_ganxfer_and_allowed_variables_expand(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("HOME", "/home/someone")
    assert load_recipe(write(tmp_path, "data: {path: '${HOME}/faces'}\n")).data.path == "/home/someone/faces"
    for text in ("data: {path: '${HF_TOKEN}'}\n", "generator: {init: 'x${HF_TOKEN:+y}'}\n"):
        with pytest.raises(RecipeError, match=r"\$\{HF_TOKEN\} is not expanded") as err:
            load_recipe(write(tmp_path, text))
        assert "hf_secret" not in str(err.value)


def test_every_shipped_recipe_loads_by_name_and_heads_itself_in_five_lines(monkeypatch):
    """By name from any folder (the package's copy), with at most five comment lines and a 'When:' line."""
    from ganxfer.recipe import shipped_recipes

    monkeypatch.setenv("GANXFER_DATA", "/data")
    monkeypatch.chdir("/")
    shipped = shipped_recipes()
    assert {"anime_from_mnist", "own_images", "anime_dcgan", "dcgan-mnist-64/stage1"} <= set(shipped)
    for name, path in shipped.items():
        assert load_recipe(name).to_dict() == load_recipe(path).to_dict()
        comments = [line for line in path.read_text().splitlines() if line.lstrip().startswith("#") or " #" in line]
        assert len(comments) <= 5, name
        assert any(line.startswith("# When: ") for line in comments), name


def test_top_level_recipes_are_the_shipped_ones():
    from ganxfer.recipe import SHIPPED

    top = Path(__file__).parent.parent / "recipes"
    assert top.resolve() == SHIPPED.resolve()


def test_an_unknown_recipe_name_suggests_the_closest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=r"recipe anime_from_mnst not found \(did you mean anime_from_mnist\?\)"):
        load_recipe("anime_from_mnst")
    with pytest.raises(RecipeError, match=r"recipe nothing/like/it.yaml not found: pass a YAML file"):
        load_recipe("nothing/like/it.yaml")


def test_a_local_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("anime_dcgan").write_text("name: mine\n")
    assert load_recipe("anime_dcgan").name == "mine"
    assert load_recipe("anime_dcgan.yaml").name == "anime_dcgan"


def test_python_values_override_like_set(tmp_path):
    r = load_recipe(write(tmp_path, "name: x\n"), ["train.kimg=2"], {"train.kimg": 0.5, "optim.betas": [0.0, 0.99]})
    assert r.train.kimg == 0.5 and r.optim.betas == [0.0, 0.99]
    with pytest.raises(RecipeError, match="unknown key 'train.kimgg'"):
        load_recipe(write(tmp_path, "name: x\n"), values={"train.kimgg": 1})


def test_yaml_1_2_numbers_without_octal_or_sexagesimal_surprises(tmp_path):
    """Integers and floats read as YAML 1.2's core schema, in files and in --set: 010 is ten, 0o10 eight, 0x10
    sixteen, 1e-4 a float; 1:30, yes and 1_000 stay strings, which the type check refuses where a number belongs."""
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nseed: 010\ntrain: {kimg: 1e-4, batch_size: 0x10}\ndata: {limit: 0o10}\n")
    r = load_recipe(path)
    assert (r.seed, r.train.kimg, r.train.batch_size, r.data.limit) == (10, 1e-4, 16, 8)
    assert load_recipe(path, ["seed=010", "train.minutes=90"]).seed == 10
    assert load_recipe(path, ["data.path=2024-01-01"]).data.path == "2024-01-01"  # a string, not a date
    for override, message in (("train.minutes=1:30", "expected float, got str '1:30'"),
                              ("data.hflip=yes", "expected bool, got 'yes'"),
                              ("train.batch_size=1_000", "expected int, got str '1_000'")):
        with pytest.raises(RecipeError, match=re.escape(message)):
            load_recipe(path, [override])


def test_recipe_parsing_is_bounded(tmp_path):
    """Aliases (a billion laughs in a few hundred bytes), duplicate keys and deep nesting are one line each, read
    in milliseconds; a section must be a mapping."""
    path = tmp_path / "r.yaml"
    for text, message in (
            ("name: x\na: &a [l, l, l, l, l, l, l, l, l]\nb: [*a, *a]\n", "line 3: the YAML alias *a is refused"),
            ("name: x\ndata: {path: mnist, path: x}\n", "line 2: duplicate key 'path' (first at line 2)"),
            ("name: x\nname: y\n", "line 2: duplicate key 'name' (first at line 1)"),
            ("name: x\ndata: " + "[" * 40 + "]" * 40 + "\n", "nested more than 32 deep"),
            ("name: x\n" + "".join("  " * i + f"k{i}:\n" for i in range(300)), "nested more than 32 deep"),
            ("name: x\ndata: 3\n", "'data' must be a mapping"),
            ("name: x\neval: []\n", "'eval' must be a mapping"),
            ("name: x\nseed: !!int '1:30'\n", "!!int '1:30' is not an integer")):
        path.write_text(text)
        with pytest.raises(RecipeError, match=re.escape(message)):
            load_recipe(path)
    path.write_bytes(b"name: x\n" + b"#" * (2**20))
    with pytest.raises(RecipeError, match="is over 1,048,576 bytes"):
        load_recipe(path)
