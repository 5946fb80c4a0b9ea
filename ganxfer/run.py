"""Start or continue a training run from a recipe: what ``ganxfer train|finetune`` and :func:`ganxfer.train` call.

It resolves the recipe (a file or a shipped name, plus overrides), takes the run's own ``RUN/recipe.yaml`` on
``--resume``, refuses what cannot run here, and hands the result to the one loop (:func:`ganxfer.loop.train`).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ganxfer.errors import OptionError
from ganxfer.paths import check_run_dir
from ganxfer.recipe import differences, load_recipe
from ganxfer.schema import Recipe, RecipeError


def resolve(recipe: str | Path | None, overrides: Iterable[str] = (), values: Mapping[str, Any] | None = None,
            run_dir: str | Path | None = None, resume: bool = False, need_init: bool = False,
            say=lambda line: print(line, file=sys.stderr)) -> tuple[Recipe, Path]:
    """The recipe a run trains with, and its run folder (``runs/<name>`` unless given).

    On ``resume`` the run's own ``RUN/recipe.yaml`` wins over ``recipe``, with the overrides on top; ``say`` is
    told what the overrides change and which keys of ``recipe`` are ignored.
    """
    overrides = list(overrides)
    resolved = load_recipe(recipe, overrides, values)
    run_dir = check_run_dir(Path("runs") / resolved.name if run_dir is None else run_dir)  # '' is refused
    saved = run_dir / "recipe.yaml"
    if resume and saved.is_file():  # the run's own recipe, with the overrides on top
        original = load_recipe(saved)
        resumed = load_recipe(saved, overrides, values)
        for line in differences(original, resumed):
            say(f"--resume: --set changes {line}")
        ignored = differences(resumed, resolved)
        if ignored:
            say(f"--resume: continuing with {saved}; {recipe} differs from it in "
                f"{', '.join(d.split(':')[0] for d in ignored)} (use --set to change those)")
        resolved = resumed
    if need_init and not resolved.generator.init:
        raise RecipeError(f"{recipe}: finetune needs generator.init (a bundled name, folder or Hub id); "
                          "use 'ganxfer train' to start from scratch")
    return resolved, run_dir


def check_precision(precision: str) -> None:
    """fp16 needs an accelerator: Accelerate would silently run fp32 on a CPU while RUN/recipe.yaml says fp16."""
    import torch

    if precision == "fp16" and not (torch.cuda.is_available() or torch.backends.mps.is_available()
                                    or (hasattr(torch, "xpu") and torch.xpu.is_available())):
        raise OptionError("train.mixed_precision=fp16 needs a GPU, and none is visible; on a CPU use "
                          "train.mixed_precision=bf16 (native) or no")


def run(recipe: Recipe, run_dir: Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Train ``recipe`` into ``run_dir``; the exported generator folder."""
    check_run_dir(run_dir)  # before the loop touches it (resolve checked it too; a caller may skip resolve)
    check_precision(recipe.train.mixed_precision)
    from ganxfer.loop import train

    new = not run_dir.exists()
    try:
        return train(recipe, run_dir, resume=resume, overwrite=overwrite)
    except BaseException:
        if new and run_dir.is_dir() and not any(p.is_file() for p in run_dir.rglob("*")):
            shutil.rmtree(run_dir, ignore_errors=True)  # a run that wrote nothing leaves no empty folder behind
        raise
