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


__all__ = ["__version__", "load_generator"]
