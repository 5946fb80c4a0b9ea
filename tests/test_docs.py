"""The docs site stays true to the code: recipe reference, commands, shipped recipes, navigation, scale-out
examples, and the results tables the benchmarks append to. CI builds the site (`mkdocs build --strict`); these
checks need no build."""

import re
from pathlib import Path

import yaml

from ganxfer.cli import main
from ganxfer.schema import reference_table

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
PAGES = {p.relative_to(DOCS).as_posix(): p.read_text() for p in sorted(DOCS.rglob("*.md"))}


def test_recipe_reference_is_current():
    block = re.search(r"<!-- recipe-reference.*?-->\n(.*?)\n<!-- /recipe-reference -->", PAGES["recipes.md"], re.S)
    assert block, "docs/recipes.md lost its recipe-reference markers"
    assert block.group(1) == reference_table(), "regenerate with: python -c 'from ganxfer.schema import " \
        "reference_table; print(reference_table())'"


def test_every_command_is_documented():
    cli = PAGES["cli.md"]
    assert "::: mkdocs-click" in cli and ":module: ganxfer.cli" in cli and ":command: main" in cli
    everything = "\n".join(PAGES.values())
    for command in main.commands:
        assert f"`ganxfer {command}" in everything, command
        assert f"`ganxfer {command}" in cli, f"docs/cli.md's table lacks ganxfer {command}"


def shipped_recipes() -> list[str]:
    """The recipes shipped in the package (and the top-level recipes/ of a clone, a link to them)."""
    names = {p.stem for folder in (ROOT / "ganxfer" / "recipes", ROOT / "recipes") for p in folder.glob("*.yaml")}
    assert names, "no shipped recipe found"
    return sorted(names)


def test_every_recipe_is_documented():
    table = PAGES["recipes.md"].split("## The shipped recipes", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z0-9_]+)` \|", table, re.M)
    assert sorted(listed) == shipped_recipes(), "docs/recipes.md's table of shipped recipes differs from the files"


def nav_files(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [f for value in node.values() for f in nav_files(value)]
    return [f for item in node for f in nav_files(item)]


def test_nav_names_every_page_and_only_pages_that_exist():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["docs_dir"] == "docs"
    nav = nav_files(config["nav"])
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    assert sorted(nav) == sorted(PAGES), f"missing from the nav: {sorted(set(PAGES) - set(nav))}; " \
        f"in the nav but not in docs/: {sorted(set(nav) - set(PAGES))}"


def test_results_page_shows_the_tables_the_benchmarks_append_to():
    """docs/results.md includes benchmarks/RESULTS.md, and every maintained benchmark's heading is in the part
    it includes, so a new row lands on the site."""
    assert '--8<-- "benchmarks/RESULTS.md:tables"' in PAGES["results.md"]
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    shown = re.search(r"--8<-- \[start:tables\] -->\n(.*)<!-- --8<-- \[end:tables\]", results, re.S)
    assert shown, "benchmarks/RESULTS.md lost its snippet markers"
    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    headings = [m.group(1) for s in scripts for m in re.finditer(r'^HEADING = "(.*)"$', s.read_text(), re.M)]
    assert len(headings) >= 4
    for heading in headings:
        assert f"\n{heading}\n" in "\n" + shown.group(1), heading


def test_scale_out_examples_load():
    """The accelerate config files load as Accelerate reads them, the sbatch script parses, docs/scale-out.md
    names them and launches the headline recipe with sync_bn."""
    import subprocess

    from accelerate.commands.config.config_args import load_config_from_file

    page = PAGES["scale-out.md"]
    configs = sorted((DOCS / "accelerate").glob("*.yaml"))
    assert len(configs) == 2
    for path in configs:
        config = load_config_from_file(str(path))
        assert config.distributed_type == "MULTI_GPU" and config.num_processes == 8 * config.num_machines
        assert f"docs/accelerate/{path.name}" in page
    assert subprocess.run(["bash", "-n", str(DOCS / "slurm" / "ganxfer.sbatch")]).returncode == 0
    assert "sbatch docs/slurm/ganxfer.sbatch" in page
    launched = re.findall(r"-m ganxfer train (\S+)", page) + re.findall(r"ganxfer\.sbatch (\S+)", page)
    assert launched and set(launched) <= set(shipped_recipes()), launched
    assert "--set train.sync_bn=true" in page
