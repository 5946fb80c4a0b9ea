"""ganxfer: train GANs fast by transfer learning (pretrained-backbone discriminators, warm-started generators)."""

from ganxfer.version import __version__


def load_generator(source: str):
    """Load a generator from a run folder, an exported folder, a bundled name or a Hub id ``owner/name[@rev]``.

    Hub ids download ``config.json`` + ``model.safetensors`` once into the Hub cache (``HF_HUB_OFFLINE=1`` uses
    the cache only); a source offering only pickle weights is refused. The model is in eval mode on the CPU.

    >>> images = ganxfer.load_generator("dcgan-mnist-64").sample(16, seed=0)  # (16, C, H, W) in [-1, 1]
    >>> images = ganxfer.load_generator("someone/anime-gan@main").sample(64, seed=1)
    """
    from ganxfer.sources import load_generator as _load

    return _load(source)


def train(recipe, run_dir=None, *, overrides=(), resume: bool = False, overwrite: bool = False, **keys):
    """Train a recipe, as ``ganxfer train`` does, and return the exported generator folder (``RUN/generator``).

    ``recipe`` is a YAML file, the name of a shipped recipe (``ganxfer recipes``) or a loaded
    :class:`ganxfer.schema.Recipe`. Keys are changed by sections as keyword arguments (``data={"path": ...}``,
    ``seed=1``), or as ``--set`` strings in ``overrides``; both are checked as the recipe file is. The run folder
    defaults to ``runs/<name>``. Errors are :class:`ganxfer.errors.GanxferError` with a one-line message.

    >>> folder = ganxfer.train("own_images", data={"path": "my_images"}, train={"minutes": 10})
    >>> folder = ganxfer.train("anime_from_mnist", overrides=["train.kimg=5"], run_dir="runs/short")
    >>> images = ganxfer.load_generator(folder).sample(16, seed=0)
    """
    from ganxfer.recipe import flat, parse_override
    from ganxfer.run import resolve, run
    from ganxfer.schema import Recipe

    values = {}
    for key, value in keys.items():  # data={"path": ...} -> {"data.path": ...}
        values.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
    if isinstance(recipe, Recipe):  # its keys, then the overrides, then the sections
        sets = dict((".".join(keys), value) for keys, value in map(parse_override, overrides))
        recipe, overrides, values = None, (), {**flat(recipe), **sets, **values}
    resolved, folder = resolve(recipe, overrides, values, run_dir=run_dir, resume=resume)
    return run(resolved, folder, resume=resume, overwrite=overwrite)


__all__ = ["__version__", "load_generator", "train"]
