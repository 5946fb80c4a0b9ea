"""ganxfer.train(), the Python entry point: the same recipe checks and run folder as `ganxfer train`."""

import pytest

import ganxfer
from ganxfer.recipe import load_recipe
from ganxfer.schema import RecipeError

TINY = {"data": {"limit": 64, "resolution": 32}, "generator": {"ngf": 8}, "discriminator": {"ndf": 8},
        "train": {"batch_size": 16, "kimg": 0.032, "log_with": []}}


def test_train_a_shipped_recipe_by_name_with_sections(mnist_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = ganxfer.train("mnist_dcgan", seed=3, **TINY)
    assert folder.resolve() == tmp_path / "runs" / "mnist_dcgan" / "generator"
    saved = load_recipe(tmp_path / "runs" / "mnist_dcgan" / "recipe.yaml")
    assert (saved.seed, saved.data.limit, saved.train.kimg, saved.generator.ngf) == (3, 64, 0.032, 8)
    assert ganxfer.load_generator(str(folder)).sample(4, seed=0).shape == (4, 1, 32, 32)


def test_train_a_loaded_recipe_with_overrides_into_a_run_dir(mnist_data, tmp_path):
    recipe = load_recipe("mnist_dcgan", values={f"{s}.{k}": v for s, keys in TINY.items() for k, v in keys.items()})
    folder = ganxfer.train(recipe, tmp_path / "run", overrides=["train.kimg=0.064"])
    assert load_recipe(tmp_path / "run" / "recipe.yaml").train.kimg == 0.064 and folder.is_dir()


def test_bad_keys_raise_the_one_line_error_before_anything_is_written(tmp_path):
    with pytest.raises(RecipeError, match="unknown key 'train.kimgg'; did you mean 'train.kimg'"):
        ganxfer.train("mnist_dcgan", tmp_path / "run", train={"kimgg": 1})
    assert not (tmp_path / "run").exists()
