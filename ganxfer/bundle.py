"""Rebuild a bundled model from its stage recipes: ``python -m ganxfer.bundle dcgan-mnist-64 --out DIR``.

A bundle's build is a list of stages, each one shipped recipe (``ganxfer/recipes/<bundle>/<stage>.yaml``) run with
``ganxfer train`` or ``finetune`` and no other setting, and a last step that averages two of the stages'
generators (a model soup) and exports the result with its BatchNorm statistics recomputed. A stage starts from an
earlier stage through ``generator.init`` / ``discriminator.init: runs/<earlier stage's name>``, so the build runs
every stage with DIR as the working folder: stage outputs land in ``DIR/runs/<name>`` and the bundle in
``DIR/<bundle>``. Run the same command again after an interruption: stages with checkpoints are resumed (a
finished one only exports again).
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ganxfer.errors import GanxferError
from ganxfer.nets.base import hub_config


@dataclass(frozen=True)
class Soup:
    """The last step: ``weight * first + (1 - weight) * second``, generators of two earlier stages."""

    first: str
    second: str
    weight: float = 0.5
    bn_batches: int = 16
    seed: int = 0


@dataclass(frozen=True)
class Build:
    """A bundle's stages (shipped recipe names, in order) and the soup that makes the bundle."""

    stages: tuple[str, ...]
    soup: Soup


BUILDS = {
    "dcgan-mnist-64": Build(
        stages=tuple(f"dcgan-mnist-64/{s}" for s in ("stage1", "stage2", "stage3", "stage4",
                                                     "stage5", "stage6", "stage7")),
        soup=Soup("dcgan-mnist-64-stage5", "dcgan-mnist-64-stage7"),
    ),
}


@torch.no_grad()
def soup(a: nn.Module, b: nn.Module, weight: float) -> nn.Module:
    """A model soup of two networks of one architecture (Wortsman et al. 2022; WiSE-FT when ``b`` is fine-tuned
    from ``a``): a copy of ``a`` whose floating-point tensors are ``weight * a + (1 - weight) * b``. Integer
    buffers (BatchNorm's batch count) are ``a``'s. Averaged BatchNorm statistics are not the soup's own, so
    recompute them before sampling (:func:`ganxfer.ema.recalibrated`)."""
    if not 0 <= weight <= 1:
        raise GanxferError(f"soup weight {weight:g}: give a share of the first network between 0 and 1")
    if hub_config(a) != hub_config(b) or type(a) is not type(b):
        raise GanxferError(f"cannot average a {type(a).__name__} {hub_config(a)} with a {type(b).__name__} "
                           f"{hub_config(b)}; a soup needs two networks of one architecture")
    mixed = copy.deepcopy(a)
    theirs = b.state_dict()
    for name, tensor in mixed.state_dict().items():
        if tensor.is_floating_point():
            tensor.mul_(weight).add_(theirs[name].to(tensor), alpha=1 - weight)
    return mixed


def plan(bundle: str, overrides: list[str] = ()) -> list:
    """The build of ``bundle`` checked without training: each stage's resolved recipe (with ``overrides``), in
    order, then the :class:`Soup`. Every ``runs/...`` init must name an earlier stage, and the soup two stages."""
    from ganxfer.recipe import load_recipe

    if bundle not in BUILDS:
        raise GanxferError(f"no build for {bundle!r}; builds: {', '.join(BUILDS)}")
    build, built, steps = BUILDS[bundle], set(), []
    for stage in build.stages:
        recipe = load_recipe(stage, list(overrides))
        for key, init in (("generator.init", recipe.generator.init), ("discriminator.init", recipe.discriminator.init)):
            if init and init.startswith("runs/") and init.removeprefix("runs/") not in built:
                raise GanxferError(f"{stage}: {key}={init} is not the output of an earlier stage "
                                   f"({', '.join(sorted(built)) or 'none yet'})")
        built.add(recipe.name)
        steps.append(recipe)
    for name in (build.soup.first, build.soup.second):
        if name not in built:
            raise GanxferError(f"{bundle}: the soup takes {name}, which no stage makes")
    return [*steps, build.soup]


def make_soup(step: Soup, workdir: Path, out: Path) -> Path:
    """Average the two stages' exported generators, recompute BatchNorm, export to ``out``."""
    from ganxfer.ema import recalibrated
    from ganxfer.images import write_grid
    from ganxfer.nets import export_model
    from ganxfer.sources import load_generator

    a, b = (load_generator(str(workdir / "runs" / name / "generator")) for name in (step.first, step.second))
    mixed = recalibrated(soup(a, b, step.weight), step.bn_batches, 64, step.seed)
    folder = Path(export_model(mixed, out, "generator"))
    write_grid(mixed.sample(64, seed=0), folder / "samples.png")
    return folder


def build(bundle: str, out: Path, overrides: list[str] = ()) -> Path:
    """Run every stage of ``bundle`` with ``out`` as the working folder, then the soup; the bundle's folder."""
    steps = plan(bundle, overrides)
    out.mkdir(parents=True, exist_ok=True)
    for recipe, stage in zip(steps[:-1], BUILDS[bundle].stages, strict=True):
        command = "finetune" if recipe.generator.init else "train"
        run_dir = out / "runs" / recipe.name
        resume = ["--resume"] if any((run_dir / "checkpoints").glob("step-*")) else []
        sets = [a for o in overrides for a in ("--set", o)]
        print(f"== {stage}: ganxfer {command} {stage} {' '.join(resume + sets)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "ganxfer", command, stage, *resume, *sets], cwd=out)
        if done.returncode:
            raise GanxferError(f"stage {stage} stopped (exit {done.returncode}); fix what it said, then run the same "
                               "command again: finished stages are kept, the stopped one resumes")
    folder = make_soup(steps[-1], out, out / bundle)
    print(f"== the soup of {steps[-1].first} and {steps[-1].second}: {folder}", flush=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ganxfer.bundle", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", choices=sorted(BUILDS), help="the bundled model to build")
    ap.add_argument("--out", type=Path, required=True, help="working folder: stage runs and the bundle land here")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key in every stage (e.g. a smoke test: --set train.kimg=0.1)")
    ap.add_argument("--dry-run", action="store_true", help="check every stage's recipe and init, train nothing")
    args = ap.parse_args(argv)
    try:
        if args.dry_run:
            for step in plan(args.bundle, args.overrides):
                print(f"soup: {step.weight:g} x {step.first} + {1 - step.weight:g} x {step.second}"
                      if isinstance(step, Soup) else
                      f"{step.name}: {step.train.kimg:g} kimg, from {step.generator.init or 'scratch'}")
            return 0
        build(args.bundle, args.out, args.overrides)
    except GanxferError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
