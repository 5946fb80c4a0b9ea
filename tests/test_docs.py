"""The README stays true to the code: recipe reference, commands, shipped recipes, CI's test command."""

import re
from pathlib import Path

from ganxfer.cli import main
from ganxfer.schema import reference_table

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_recipe_reference_is_current():
    block = re.search(r"<!-- recipe-reference.*?-->\n(.*?)\n<!-- /recipe-reference -->", README, re.S)
    assert block, "README lost its recipe-reference markers"
    assert block.group(1) == reference_table(), "regenerate with: python -c 'from ganxfer.schema import " \
        "reference_table; print(reference_table())'"


def test_every_command_and_recipe_is_documented():
    for command in main.commands:
        assert f"`ganxfer {command}" in README, command
    for recipe in (ROOT / "recipes").glob("*.yaml"):
        assert f"`{recipe.stem}`" in README, recipe.stem


def test_ci_runs_the_readme_test_command():
    quickstart = re.findall(r"^python3 -m venv \.venv && \. \.venv/bin/activate && (.*)$", README, re.M)
    assert len(quickstart) == 2 and quickstart[1].endswith("pytest -q")
    ci = (ROOT / ".ci" / "run").read_text()
    assert quickstart[1] + " -rs" in ci


def test_scale_out_examples_load():
    """The accelerate config files load as Accelerate reads them, the sbatch script parses, README names them."""
    import subprocess

    from accelerate.commands.config.config_args import load_config_from_file

    configs = sorted((ROOT / "docs" / "accelerate").glob("*.yaml"))
    assert len(configs) == 2
    for path in configs:
        config = load_config_from_file(str(path))
        assert config.distributed_type == "MULTI_GPU" and config.num_processes == 8 * config.num_machines
        assert f"docs/accelerate/{path.name}" in README
    assert subprocess.run(["bash", "-n", str(ROOT / "docs" / "slurm" / "ganxfer.sbatch")]).returncode == 0
    assert "sbatch docs/slurm/ganxfer.sbatch" in README
