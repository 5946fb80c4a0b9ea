"""The README stays short and true: its two set-up commands, CI's test command, every command and recipe, and
links that lead somewhere."""

import re
from pathlib import Path

from ganxfer.cli import main
from ganxfer.recipe import SHIPPED

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_is_at_most_250_lines():
    assert len(README.splitlines()) <= 250


def test_two_set_up_commands_near_the_top_and_ci_runs_the_second():
    setup = re.findall(r"^python3 -m venv \.venv && \. \.venv/bin/activate && (.*)$", README, re.M)
    assert len(setup) == 2
    assert " . && source ../shared/env.sh && ganxfer finetune anime_from_mnist" in setup[0]  # a plain install
    assert setup[1].endswith("pytest -q")
    assert README.index(setup[1]) < 2000
    assert setup[1] + " -rs" in (ROOT / ".ci" / "run").read_text()


def test_every_command_and_top_level_recipe_is_in_the_readme():
    for command in main.commands:
        assert f"| `ganxfer {command}" in README, command
    for recipe in SHIPPED.glob("*.yaml"):
        assert f"| `{recipe.stem}` |" in README, recipe.stem


def test_relative_links_and_images_exist():
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README):
        assert (ROOT / target).exists(), target


def test_no_sentence_narrates_history():
    for phrase in ("session", "commit ", "fresh clone of", "bundle before", "the one now", "pip install ganxfer"):
        assert phrase not in README, phrase
