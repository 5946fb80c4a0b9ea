"""Thin click commands: parse, call one function, print. Errors become one line and exit code 2."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from ganxfer.errors import GanxferError, OptionError
from ganxfer.schema import MAX_SEED, MIN_EVAL_SIDE
from ganxfer.version import __version__

MAX_GRID = 1024  # images in one --out .png grid
MAX_IMAGES = 1_000_000  # images one sample or evaluate call generates: ~12 GB of 64 px PNGs, days on a CPU
SEED = click.IntRange(0, MAX_SEED)  # as a recipe's seed: what every random generator takes


class Group(click.Group):
    """Turns every :class:`GanxferError` and click usage error into ``error: <one line>`` on stderr and its exit
    code (2, or 130 / 143 for a run stopped by SIGINT / SIGTERM)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GanxferError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            click.echo(f"error: {e.format_message()} (see '{where} --help')", err=True)
            sys.exit(2)
        except KeyboardInterrupt:  # outside a training run, which says itself what it saved
            click.echo("interrupted", err=True)
            sys.exit(130)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's own errors before a command runs (``ganxfer --bogus``) as ``error: <one line>`` too."""
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            where = e.ctx.command_path if getattr(e, "ctx", None) is not None else "ganxfer"
            click.echo(f"error: {e.format_message()} (see '{where} --help')", err=True)
            code = e.exit_code
        except click.Abort:
            click.echo("interrupted", err=True)
            code = 130
        if standalone_mode:
            sys.exit(code if isinstance(code, int) else 0)
        return code


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ganxfer")
def main() -> None:
    """ganxfer: train GANs fast by transfer learning.

    \b
    ganxfer recipes
    ganxfer finetune anime_from_mnist
    ganxfer finetune own_images --set data.path=./my_images
    ganxfer sample runs/own_images --num 64 --out grid.png
    ganxfer demo dcgan-mnist-64
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def run_options(fn):
    """Options shared by ``train`` and ``finetune``."""
    fn = click.option("--dry-run", is_flag=True, help="Print the resolved recipe and exit.")(fn)
    fn = click.option("--overwrite", is_flag=True, help="Start over in a run folder that has checkpoints.")(fn)
    fn = click.option("--resume", is_flag=True,
                      help="Continue from the newest checkpoint that loads, with RUN/recipe.yaml (plus --set); "
                           "--set train.kimg=<larger> extends the budget.")(fn)
    fn = click.option("--run-dir", type=click.Path(), help="Run folder (default: runs/<name>).")(fn)
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override a recipe key (dotted, typed, repeatable), e.g. --set train.kimg=5.")(fn)
    return click.argument("recipe")(fn)


def _run(recipe: str, overrides: tuple[str, ...], run_dir: str | None, resume: bool, overwrite: bool,
         dry_run: bool, need_init: bool) -> None:
    from ganxfer.run import resolve, run

    resolved, run_dir = resolve(recipe, overrides, run_dir=run_dir, resume=resume, need_init=need_init,
                                say=lambda line: click.echo(line, err=True))
    if dry_run:
        click.echo(resolved.to_yaml(), nl=False)
        return
    out = run(resolved, run_dir, resume=resume, overwrite=overwrite)
    if int(os.environ.get("RANK", "0") or 0) == 0:  # one line for a run of several processes
        click.echo(f"exported generator: {out}")


@main.command()
@run_options
def train(recipe: str, overrides, run_dir, resume, overwrite, dry_run) -> None:
    """Train a GAN from RECIPE: a YAML file, or the name of a shipped recipe ('ganxfer recipes' lists them).

    Under torchrun or accelerate launch every process joins one run (train.batch_size is the global batch).
    RUN/.lock keeps a second writer out. Ctrl-C or SIGTERM saves a checkpoint and exits with 130 / 143; a NaN
    or infinite loss or weight stops the run (exit 2) before anything is written from it.

    \b
    ganxfer train mnist_dcgan --set train.kimg=0.5
    ganxfer train recipes/anime_dcgan.yaml --set train.minutes=30
    ganxfer train anime_dcgan --resume --set train.kimg=250
    accelerate launch -m ganxfer train anime_from_mnist
    torchrun --nproc_per_node 8 -m ganxfer train anime_from_mnist --set train.batch_size=256 --set train.sync_bn=true
    """
    _run(recipe, overrides, run_dir, resume, overwrite, dry_run, need_init=False)


@main.command()
@run_options
def finetune(recipe: str, overrides, run_dir, resume, overwrite, dry_run) -> None:
    """Fine-tune a pretrained generator (the recipe's generator.init) on new data.

    RECIPE is a YAML file or the name of a shipped recipe, as for train.

    \b
    ganxfer finetune anime_from_mnist
    ganxfer finetune own_images --set data.path=./my_images
    ganxfer finetune anime_from_mnist --set train.kimg=0     # export the warm start only
    ganxfer finetune recipes/anime_from_mnist.yaml --set generator.init=runs/mnist_dcgan
    """
    _run(recipe, overrides, run_dir, resume, overwrite, dry_run, need_init=True)


@main.command()
def recipes() -> None:
    """List the recipes shipped with ganxfer, one line each on when to use it.

    Give a shipped recipe to train or finetune by its name, and change any key with --set; to keep changes,
    copy its file (the folder is printed last) and pass the copy's path. The stages that build the bundled
    dcgan-mnist-64 are listed under its name.

    \b
    ganxfer recipes
    ganxfer finetune own_images --set data.path=./my_images
    """
    from ganxfer.recipe import SHIPPED, recipe_summary, shipped_recipes

    shipped = shipped_recipes()
    width = max(map(len, shipped))
    for name, path in shipped.items():
        click.echo(f"{name:<{width}}  {recipe_summary(path)}")
    click.echo(f"\nfiles: {SHIPPED}")


@main.command()
@click.argument("source")
@click.option("--num", "-n", type=click.IntRange(1, MAX_IMAGES), default=64, show_default=True,
              help=f"Number of images (a grid holds at most {MAX_GRID:,}, a folder {MAX_IMAGES:,}).")
@click.option("--out", "-o", required=True, type=click.Path(),
              help=f"A .png file writes one grid (at most {MAX_GRID} images; an existing .png is replaced); a name "
                   "without an image suffix writes a new or empty folder of PNG files, generated and written in "
                   "batches. Other image suffixes (.jpg, ...) are refused.")
@click.option("--seed", type=SEED, default=0, show_default=True, help=f"Seed of the latent vectors (0 to {MAX_SEED}).")
@click.option("--device", default=None, help="torch device: cpu, cuda or cuda:N (default: cuda if available).")
@click.option("--class", "class_", metavar="NAME", help="Only this class, by name or index (a class-conditional "
                                                         "generator's; see discriminator.conditional).")
def sample(source: str, num: int, out: str, seed: int, device: str | None, class_: str | None) -> None:
    """Generate images from SOURCE: a run folder, an exported generator, a bundled name or a Hub id.

    A generator trained with a class-conditional D (discriminator.conditional) draws one class with --class,
    given by name (its subfolder) or index.

    \b
    ganxfer sample runs/mnist_dcgan --num 64 --out grid.png
    ganxfer sample dcgan-mnist-64 --num 1000 --out fakes/ --seed 1
    ganxfer sample dcgan-mnist-64 --num 16 --out sevens.png --class 7
    """
    from torchvision.utils import save_image

    from ganxfer.images import IMAGE_EXTENSIONS, write_grid
    from ganxfer.paths import output_file, output_folder, writing
    from ganxfer.sources import load_generator, pick_device

    if not out.strip():
        raise OptionError("--out is empty; name a .png file for a grid, or a new or empty folder")
    suffix = Path(out).suffix.lower()
    grid = suffix == ".png"
    if suffix in IMAGE_EXTENSIONS and not grid:
        raise OptionError(f"--out {out}: a grid is written as PNG; name it .png, or name a folder (no image suffix)")
    out = output_file(out, "--out", (".png",)) if grid else output_folder(out, "--out")
    if grid and num > MAX_GRID:
        raise OptionError(f"--num {num}: a .png grid holds at most {MAX_GRID} images; pass a folder as --out")
    device = pick_device(device)
    generator = load_generator(source).to(device)
    label = class_index(generator, class_, source)
    if grid:
        images = generator.sample(num, seed=seed, label=label)
        with writing(out, "--out"):
            write_grid(images, out)
    else:
        with writing(out, "--out"):
            out.mkdir(parents=True, exist_ok=True)  # new or empty: output_folder checked it
            i = 0
            for images in generator.iter_samples(num, seed=seed, label=label):
                for img in images:
                    save_image(img, str(out / f"{i:06d}.png"), normalize=True, value_range=(-1, 1))
                    i += 1
    click.echo(f"wrote {num} image(s) to {out}")


def class_index(generator, name: str | None, source: str) -> int | None:
    """The index of class ``name`` (a class name, or an index) among the generator's classes; None for all."""
    if name is None:
        return None
    classes = list(getattr(generator, "classes", None) or [])
    if not classes:
        raise OptionError(f"--class {name}: {source} was not trained class-conditionally (it records no classes); "
                          "leave --class out")
    if name in classes:
        return classes.index(name)
    if name.isdigit() and int(name) < len(classes):
        return int(name)
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    raise OptionError(f"--class {name}: {source} knows the classes {shown}; give one of them, or its index")


@main.command()
@click.argument("source")
@click.option("--data", required=True,
              help="Real images: 'mnist', a folder or zip of images, or hub:owner/dataset.")
@click.option("--num", "-n", type=click.IntRange(2, MAX_IMAGES), default=None,
              help="Generated images [default: 10000 on a GPU, 1000 on a CPU, where Inception runs at a few "
                   "images/s: 10000 take 20 min to over an hour on 2 cores]; for an image-folder SOURCE its first N "
                   "[default: all].")
@click.option("--num-real", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Use the first N real images (0: all); their features are cached, so only the first call pays.")
@click.option("--metrics", default="fid,kid,pr", show_default=True, help="Comma list of fid, kid, pr.")
@click.option("--batch", "-b", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Images per Inception forward.")
@click.option("--json", "json_out", type=click.Path(),
              help="Also write the result as JSON into this .json file (an existing .json file is replaced).")
@click.option("--resolution", type=click.IntRange(MIN_EVAL_SIDE, 1024), default=None,
              help="Side for an image-folder SOURCE [default: its first readable image's short side, at least "
                   f"{MIN_EVAL_SIDE}]; at least {MIN_EVAL_SIDE} (CIFAR-10's side, the smallest FID and KID are "
                   "reported at).")
@click.option("--kid-subset-size", type=click.IntRange(min=2), default=None,
              help="KID subset size [default: min(1000, smaller set // 2)].")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help=f"Seed of the generated latents (0 to {MAX_SEED}).")
@click.option("--device", default=None, help="torch device: cpu, cuda or cuda:N (default: cuda if available).")
def evaluate(source: str, data: str, num, num_real, metrics: str, batch: int, json_out: str | None, resolution,
             kid_subset_size, seed: int, device: str | None) -> None:
    """Score SOURCE against real images with FID, KID and precision/recall, plus a diversity ratio and a
    collapse flag (generated features spread less than 0.85x as much as the real ones).

    SOURCE is a generator (run folder, exported folder, bundled name or Hub id; a run's exported
    generator/ is its EMA generator) or a folder of images (real-versus-real checks). Features come from
    torch-fidelity's Inception (inception-v3-compat, weights under $TORCH_HOME); generated images are
    quantised to uint8 like saved PNGs, real ones take the training resize path. Features of image sets
    are cached in $GANXFER_CACHE/fid-stats (default ~/.cache/ganxfer/fid-stats). On a CPU Inception runs
    at a few images/s: keep --num and --num-real in the hundreds or low thousands there. Before extracting
    features it prints how many images need them and about how long that takes, from a rate it measures on
    8 images (and what --num 10000 would take).

    \b
    ganxfer evaluate runs/anime_dcgan --data $GANXFER_DATA/anime-faces-64 --num 1000 --metrics kid
    ganxfer evaluate dcgan-mnist-64 --data mnist --json mnist.json     # 1,000 generated on a CPU, 10,000 on a GPU
    ganxfer evaluate fakes/ --data $GANXFER_DATA/anime-faces-64 --num-real 5000 --batch 128
    """
    import json

    from ganxfer.metrics import evaluate as run_evaluate
    from ganxfer.metrics import format_table
    from ganxfer.paths import output_file, writing

    if num_real == 1:
        raise click.BadParameter("must be 0 (all) or at least 2", param_hint="--num-real")
    json_out = output_file(json_out, "--json", (".json",)) if json_out is not None else None  # before scoring
    given = click.get_current_context().get_parameter_source("num_real") != click.core.ParameterSource.DEFAULT
    result = run_evaluate(source, data, num=num, num_real=num_real or None, metrics=metrics, batch=batch,
                          resolution=resolution, kid_subset_size=kid_subset_size, seed=seed, device=device,
                          say=lambda line: click.echo(line, err=True), warn_real=given)
    click.echo(format_table(result))
    if json_out:
        with writing(json_out, "--json"):
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {json_out}")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Image file: .png, .pdf or .svg (an existing one of these is replaced; other names are refused).")
def plot(runs: tuple[Path, ...], out: str) -> None:
    """Plot FID/KID against kimg and wall time, and the losses, of one or more RUN folders.

    The legend uses each run's recipe name. Quality curves need in-training evaluation
    (--set eval.every_kimg=...); runs without it show their losses only.

    \b
    ganxfer plot runs/anime_from_mnist runs/anime_dcgan --out curves.png
    ganxfer plot runs/* --out curves.pdf
    """
    from ganxfer.plot import plot_runs

    click.echo(f"wrote {plot_runs(list(runs), out)}")


@main.command()
@click.argument("source")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port to serve on [default: 7860, or the next free one].")
@click.option("--share", is_flag=True, help="Also open a temporary public gradio.live link.")
@click.option("--device", default=None, help="torch device: cpu, cuda or cuda:N (default: cuda if available).")
def demo(source: str, port: int | None, share: bool, device: str | None) -> None:
    """Serve a demo page of SOURCE in the browser: seed grids, interpolations, a latent scale, downloads.

    SOURCE is a generator as for `sample`. The page states what the model card records (images seen,
    KID/FID). Needs Gradio: pip install gradio (or '.[demo]' from a clone).

    \b
    ganxfer demo dcgan-mnist-64
    ganxfer demo runs/anime_from_mnist --port 8080
    ganxfer demo someone/anime-gan --share
    """
    from ganxfer.demo import launch

    launch(source, port=port, share=share, device=device)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def backbones(as_json: bool) -> None:
    """List the timm backbones verified for discriminator.kind=projected.

    Shows each one's default feature levels (channels, reductions), backbone parameters, and whether its
    pretrained weights are in the Hugging Face cache (HF_HUB_CACHE) right now. Any other timm name may be
    used too; these are the ones tested.

    \b
    ganxfer backbones
    ganxfer backbones --json
    ganxfer train anime_projected --set discriminator.backbone=resnet18.a1_in1k
    """
    import json

    from ganxfer.nets.backbones import known_backbones, table

    rows = known_backbones()
    click.echo(json.dumps(rows, indent=2) if as_json else table(rows))


@main.command()
@click.argument("source")
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repo as private (an existing repo keeps its visibility).")
@click.option("--revision", metavar="BRANCH", help="Upload to this branch, created from main when missing.")
@click.option("--with-discriminator", is_flag=True, help="Also upload the discriminator, into discriminator/.")
@click.option("--dry-run", "dry_run", type=click.Path(),
              help="Write the exact folder that would be uploaded into this (new or empty) folder; no network.")
@click.option("--license", "license_", default="apache-2.0", show_default=True, help="License in the model card.")
@click.option("--hardware", help="Hardware line of the model card (default: what the run recorded).")
@click.option("--space", metavar="SPACE_ID", help="Also write a Gradio Space (owner/name) serving `ganxfer demo` "
                                                   "of REPO_ID; the model card links to it.")
def push(source: str, repo_id: str, private: bool, revision: str | None, with_discriminator: bool,
         dry_run: str | None, license_: str, hardware: str | None, space: str | None) -> None:
    """Upload SOURCE (a run folder or exported generator) to the Hub as REPO_ID (owner/name).

    The repo gets config.json + model.safetensors (the generator, loadable as `ganxfer sample REPO_ID`),
    recipe.yaml, samples.png and a generated model card (README.md); --with-discriminator adds
    discriminator/. --space adds a Space: app.py (the demo of REPO_ID), requirements.txt (this ganxfer)
    and a README with sdk: gradio; with --dry-run DIR the two folders go to DIR/model and DIR/space.
    Log in first with `hf auth login`.

    \b
    ganxfer push runs/anime_dcgan someone/anime-gan --dry-run out/
    ganxfer sample out/ --num 16 --out check.png
    ganxfer push runs/anime_dcgan someone/anime-gan --with-discriminator --private
    ganxfer push runs/anime_dcgan someone/anime-gan --revision kimg-200
    ganxfer push runs/anime_dcgan someone/anime-gan --space someone/anime-gan-demo
    GANXFER_MODEL=out/model python out/space/app.py     # after --dry-run out/ --space ...: the Space, locally
    """
    from ganxfer.card import push as push_to_hub

    where = push_to_hub(source, repo_id, private=private, revision=revision, with_discriminator=with_discriminator,
                        dry_run_dir=dry_run, license=license_, hardware=hardware, space=space)
    if dry_run:
        where = f"{where}/model and the Space {where}/space" if space else where
    click.echo(f"wrote the upload folder {where}" if dry_run else f"pushed {source} to {where}")
