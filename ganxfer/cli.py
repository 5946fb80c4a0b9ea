"""Thin click commands: parse, call one function, print. Errors become one line and exit code 2."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ganxfer import __version__
from ganxfer.errors import GanxferError


class Group(click.Group):
    """Turns every :class:`GanxferError` into ``error: <one line>`` on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GanxferError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; the last checkpoint is intact: continue with --resume", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ganxfer")
def main() -> None:
    """ganxfer: train GANs fast by transfer learning.

    \b
    ganxfer train recipes/mnist_dcgan.yaml --set train.kimg=0.5
    ganxfer finetune recipes/anime_from_mnist.yaml
    ganxfer sample runs/mnist_dcgan --num 64 --out grid.png
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def run_options(fn):
    """Options shared by ``train`` and ``finetune``."""
    fn = click.option("--dry-run", is_flag=True, help="Print the resolved recipe and exit.")(fn)
    fn = click.option("--overwrite", is_flag=True, help="Start over in a run folder that has checkpoints.")(fn)
    fn = click.option("--resume", is_flag=True,
                      help="Continue from the latest checkpoint; --set train.kimg=<larger> extends the budget.")(fn)
    fn = click.option("--run-dir", type=click.Path(path_type=Path), help="Run folder (default: runs/<name>).")(fn)
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override a recipe key (dotted, typed, repeatable), e.g. --set train.kimg=5.")(fn)
    return click.argument("recipe", type=click.Path(path_type=Path))(fn)


def _run(recipe_path: Path, overrides: tuple[str, ...], run_dir: Path | None, resume: bool, overwrite: bool,
         dry_run: bool, need_init: bool) -> None:
    from ganxfer.recipe import RecipeError, load_recipe

    recipe = load_recipe(recipe_path, overrides)
    if need_init and not recipe.generator.init:
        raise RecipeError(f"{recipe_path}: finetune needs generator.init (a bundled name, folder or Hub id); "
                          "use 'ganxfer train' to start from scratch")
    if dry_run:
        click.echo(recipe.to_yaml(), nl=False)
        return
    from ganxfer.loop import train

    out = train(recipe, run_dir or Path("runs") / recipe.name, resume=resume, overwrite=overwrite)
    click.echo(f"exported generator: {out}")


@main.command()
@run_options
def train(recipe: Path, overrides, run_dir, resume, overwrite, dry_run) -> None:
    """Train a GAN from RECIPE (a YAML file).

    \b
    ganxfer train recipes/mnist_dcgan.yaml --set train.kimg=0.5
    ganxfer train recipes/anime_projected.yaml --set train.batch_size=32 --run-dir runs/p32
    ganxfer train recipes/anime_dcgan.yaml --resume --set train.kimg=50
    accelerate launch -m ganxfer train recipes/anime_projected.yaml
    """
    _run(recipe, overrides, run_dir, resume, overwrite, dry_run, need_init=False)


@main.command()
@run_options
def finetune(recipe: Path, overrides, run_dir, resume, overwrite, dry_run) -> None:
    """Fine-tune a pretrained generator (generator.init) on new data.

    \b
    ganxfer finetune recipes/anime_from_mnist.yaml
    ganxfer finetune recipes/anime_from_mnist.yaml --set train.kimg=0     # export the warm start only
    ganxfer finetune recipes/anime_from_mnist.yaml --set generator.init=runs/mnist_dcgan
    """
    _run(recipe, overrides, run_dir, resume, overwrite, dry_run, need_init=True)


@main.command()
@click.argument("source")
@click.option("--num", "-n", default=64, show_default=True, help="Number of images.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="A .png path writes one grid; any other path writes a folder of PNG files.")
@click.option("--seed", default=0, show_default=True, help="Seed of the latent vectors.")
@click.option("--device", default=None, help="torch device (default: cuda if available).")
def sample(source: str, num: int, out: Path, seed: int, device: str | None) -> None:
    """Generate images from SOURCE: a run folder, an exported generator, a bundled name or a Hub id.

    \b
    ganxfer sample runs/mnist_dcgan --num 64 --out grid.png
    ganxfer sample dcgan-mnist-64 --num 1000 --out fakes/ --seed 1
    """
    import torch
    from torchvision.utils import save_image

    from ganxfer.hub import load_generator

    if num < 1:
        raise click.BadParameter("must be at least 1", param_hint="--num")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    images = load_generator(source).to(device).sample(num, seed=seed)
    if out.suffix.lower() == ".png":
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image(images, str(out), nrow=max(1, round(num**0.5)), normalize=True, value_range=(-1, 1), padding=1)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            save_image(img, str(out / f"{i:06d}.png"), normalize=True, value_range=(-1, 1))
    click.echo(f"wrote {num} image(s) to {out}")
