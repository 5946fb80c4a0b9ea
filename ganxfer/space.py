"""The Hub Space that ``ganxfer push --space`` writes, serving ``ganxfer demo`` of the pushed model.

``app.py`` runs the demo, ``requirements.txt`` pins this ganxfer, and the README's metadata says ``sdk: gradio``.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import yaml

from ganxfer.version import __version__

GRADIO_MIN = "6.31"  # the demo extra's lower bound
APP = '''"""The demo of the Hub model {model!r}, written by `ganxfer push --space`.

GANXFER_MODEL overrides the model: a bundled name, a local folder or another Hub id.
"""

import os

from ganxfer.demo import build_demo

demo = build_demo(os.environ.get("GANXFER_MODEL", {model!r}))

if __name__ == "__main__":
    demo.launch()
'''


def gradio_version() -> str:
    """The Space's ``sdk_version``: the Gradio installed here, the one the demo was tested with, else the minimum."""
    try:
        return metadata.version("gradio")
    except metadata.PackageNotFoundError:
        return GRADIO_MIN


def space_readme(space_id: str, model: str) -> str:
    """README.md of the Space: its metadata (sdk: gradio, the model it links) and one paragraph."""
    repo = model.partition("@")[0]
    meta = {"title": space_id.split("/")[-1], "emoji": "🎨", "colorFrom": "indigo", "colorTo": "pink",
            "sdk": "gradio", "sdk_version": gradio_version(), "app_file": "app.py", "pinned": False,
            "models": [repo], "tags": ["ganxfer", "gan", "unconditional-image-generation"],
            "short_description": "Seed grids and interpolations of a ganxfer GAN"}
    return (f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n\n# {meta['title']}\n\n"
            f"Images from [{repo}](https://huggingface.co/{repo}), a GAN trained with ganxfer: a grid for any "
            "seed, an interpolation between two seeds (frames and a GIF), a latent scale, and downloads. "
            f"Locally: `pip install 'ganxfer[demo]=={__version__}' && ganxfer demo {model}`.\n")


def build_space(model: str, space_id: str, out: Path) -> list[str]:
    """Write the Space folder for Hub model ``model`` (``owner/name[@revision]``) into ``out``; return its files."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "app.py").write_text(APP.format(model=model))
    (out / "requirements.txt").write_text(f"ganxfer[demo]=={__version__}\n")
    (out / "README.md").write_text(space_readme(space_id, model))
    return sorted(p.name for p in out.iterdir())
