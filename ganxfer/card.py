"""Publishing a generator on the Hub: the upload folder, its model card (README.md with Hub metadata), the push.

The folder is itself a loadable generator: ``config.json`` + ``model.safetensors`` at its root, the
discriminator (with ``--with-discriminator``) in ``discriminator/``, plus ``recipe.yaml`` when the run
recorded one, ``samples.png`` (the run's latest grid, or one rendered now) and ``README.md``.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from huggingface_hub import HfApi, ModelCard, ModelCardData

from ganxfer.cache import NETWORK_ERRORS, at, hub_offline, parse_hub_id
from ganxfer.errors import GanxferError
from ganxfer.images import write_grid
from ganxfer.nets import load_model, read_config
from ganxfer.paths import output_folder, writing
from ganxfer.recipe import check_sections, parse_yaml
from ganxfer.schema import RecipeError
from ganxfer.sources import BUNDLED, SourceError, resolve
from ganxfer.space import build_space
from ganxfer.version import __version__

SAMPLES = "samples.png"
REPO_URL = "https://github.com/ganxfer/ganxfer"
HUB_DATASETS = {"mnist": "ylecun/mnist"}  # data.path shortcuts -> their Hub dataset ids
KIND_NAMES = {"dcgan": "DCGAN", "fastgan": "FastGAN-lite", "projected": "Projected GAN"}
# Recipe keys that may hold a path of the machine that trained -> (what kind of value, placeholder, what goes
# there). In the uploaded recipe.yaml a local path becomes the placeholder, with a comment; Hub ids, 'mnist',
# hub:owner/name datasets and bundled model names stay.
BLANKS = {("data", "path"): ("data", "<your images>", "your copy of the training images (a folder or zip of "
                                                      "images, or hub:owner/name)"),
          ("eval", "data"): ("data", "<your reference images>", "your copy of the reference images (a folder or "
                                                                "zip of images, or hub:owner/name)"),
          ("generator", "init"): ("source", "<the warm-start generator>", "your copy of the warm-start generator "
                                                                         "(a folder, bundled name or Hub id)"),
          ("discriminator", "init"): ("source", "<the warm-start discriminator>", "your copy of the warm-start "
                                                                                 "discriminator (a folder or Hub id)"),
          ("discriminator", "pretrained_file"): ("file", "<backbone weights>", "your copy of the backbone's "
                                                                              ".safetensors weights")}


# The model card; ``card_data`` is the YAML metadata (:func:`card_data`), the rest model_card's arguments.
CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ name }}

{{ description }}

![Sample grid]({{ samples }})

{% if space -%}
Try it in the browser: [{{ space }}](https://huggingface.co/spaces/{{ space }}), a Gradio demo (`ganxfer demo`) \
with seed grids, interpolations and a latent scale.

{% endif -%}
## Usage

```python
import ganxfer  # pip install . (from a clone of ganxfer)
generator = ganxfer.load_generator("{{ repo_id }}")
images = generator.sample(16, seed=0)  # (16, {{ channels }}, {{ resolution }}, {{ resolution }}) tensor in [-1, 1]
```

From the shell: `ganxfer sample {{ repo_id }} --num 64 --out grid.png`.
{% if discriminator %}
`discriminator/` holds the discriminator it was trained against: a recipe can warm-start both with \
`generator.init: {{ repo_id }}` and `discriminator.init: {{ repo_id }}`.
{% endif %}
## Training

{% if training -%}
| | |
|---|---|
{% for key, value in training -%}
| {{ key }} | {{ value }} |
{% endfor -%}
{% if has_recipe and blanks %}
The full recipe is [`recipe.yaml`](recipe.yaml). Its {{ blank_keys }} held \
{{ 'a path' if blanks|length == 1 else 'paths' }} of the machine that trained this model, left blank there: \
set {{ 'it' if blanks|length == 1 else 'them' }} to your copies (the comments in the file say what goes there); \
then `ganxfer train recipe.yaml{% for key, value in blanks %} --set {{ key }}={{ value }}{% endfor %}` repeats \
the run.
{% elif has_recipe %}
The full recipe is [`recipe.yaml`](recipe.yaml); `ganxfer train recipe.yaml` repeats the run.
{% endif -%}
{% else -%}
No training recipe was recorded with this generator.
{% endif %}
## Evaluation

{% if evaluation -%}
Against the training data with {{ eval_num }} generated images (Inception features; lower is better):

| kimg | FID | KID ×10³ |
|---|---|---|
{% for kimg, fid, kid in evaluation -%}
| {{ kimg }} | {{ fid }} | {{ kid }} |
{% endfor -%}
{% else -%}
Not evaluated yet: `ganxfer evaluate {{ repo_id }} --data PATH` computes FID and KID.
{% endif %}
## Files

{% for file in files -%}
- `{{ file }}`
{% endfor %}"""

class PushError(GanxferError):
    """A push that cannot be made, phrased as one line."""


@dataclass
class RunInfo:
    """What a run folder says about how a generator was trained; every field may be unknown."""

    recipe: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    images_seen: int | None = None
    transfer_source: str | None = None
    base_model: str | None = None
    hardware: str | None = None
    local: dict[tuple[str, str], str] = field(default_factory=dict)  # recipe keys holding local paths -> value

    @property
    def wall_s(self) -> float | None:
        return next((r["wall_s"] for r in reversed(self.rows) if "wall_s" in r), None)

    @property
    def evals(self) -> list[dict]:
        return [r for r in self.rows if "kid_mean" in r or "fid" in r]


def find_run(source: str, generator: Path) -> Path | None:
    """The run folder (or pushed folder) around ``generator``: where recipe.yaml, metrics and samples live."""
    path = Path(source).expanduser()
    if (path / "generator").is_dir():
        return path
    return next((f for f in (generator, generator.parent) if (f / "recipe.yaml").is_file()), None)


def _json(text: str) -> dict:
    """A JSON object, or {} for anything else (a damaged file only makes the card less complete)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


# metrics.jsonl keys the card, the demo and plots do arithmetic with: a row holding anything but a finite number
# under one of them is damaged, and skipped
NUMERIC = ("kimg", "step", "wall_s", "loss_d", "loss_g", "images_per_s", "fid", "kid_mean", "kid_std", "precision",
           "recall", "grid_diversity")


def metric_row(line: str) -> dict:
    """One ``metrics.jsonl`` row, or {} when it is damaged: not a JSON object, or a non-number under a key of
    :data:`NUMERIC`."""
    row = _json(line)
    for key in NUMERIC:
        value = row.get(key)
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and math.isfinite(value)):
            return {}
    return row


def run_info(run: Path | None, hardware: str | None = None) -> RunInfo:
    """Read recipe.yaml, metrics.jsonl, checkpoints and transfer.json of ``run`` (all optional; damaged log
    lines and checkpoint counters are skipped, while a recipe.yaml that is no YAML mapping is refused, since it
    is uploaded)."""
    info = RunInfo(hardware=hardware)
    if run is None:
        return info
    if (run / "recipe.yaml").is_file():
        path = run / "recipe.yaml"
        try:  # the recipe loader's bounds: no aliases, no duplicate keys, limited nesting, sections are mappings
            info.recipe = parse_yaml(path.read_bytes().decode("utf-8", errors="replace"), str(path)) or {}
            why = "" if isinstance(info.recipe, dict) else f"it holds a {type(info.recipe).__name__}"
            check_sections(info.recipe, str(path))
        except RecipeError as e:
            why = str(e).removeprefix(f"{path}: ")
        if why:
            raise PushError(f"{path} is not a YAML mapping of recipe sections ({why}); fix it, or remove it to push "
                            "without it")
    if (run / "metrics.jsonl").is_file():
        info.rows = [row for line in (run / "metrics.jsonl").read_text(errors="replace").splitlines()
                     if (row := metric_row(line))]
    seen = [round(r["kimg"] * 1000) for r in info.rows if r.get("kimg") is not None]
    seen += [_json(p.read_text(errors="replace")).get("images_seen", 0)
             for p in run.glob("checkpoints/step-*/trainer.json") if p.is_file()]
    seen = [s for s in seen if isinstance(s, int) and not isinstance(s, bool) and s >= 0]
    info.images_seen = max(seen) if seen else None
    transfers = _json((run / "transfer.json").read_text(errors="replace")) if (run / "transfer.json").is_file() else {}
    transfers = {role: {k: v for k, v in t.items() if isinstance(v, str)}  # a damaged entry tells nothing
                 for role, t in transfers.items() if isinstance(t, dict)}
    transfer = transfers.get("generator", {})
    info.transfer_source = transfer.get("source") or (info.recipe.get("generator") or {}).get("init")
    info.base_model = base_model(info.transfer_source, transfer.get("source_dir"))
    info.local = local_paths(info.recipe, transfers)
    info.hardware = hardware or next((str(r[k]) for r in info.rows for k in ("hardware", "device") if r.get(k)), None)
    return info


def base_model(source: str | None, source_dir: str | None = None) -> str | None:
    """The Hub id a warm start came from, when it came from the Hub (not a local folder or bundled model)."""
    if not source or not parse_hub_id(source):
        return None
    repo = parse_hub_id(source)[0]
    if source_dir is not None:  # transfer.json says where it was loaded from: the Hub cache, or not
        return repo if f"models--{repo.replace('/', '--')}" in source_dir else None
    return None if Path(source).expanduser().exists() or (BUNDLED / source).is_dir() else repo


def local_paths(recipe: dict, transfers: dict | None = None) -> dict[tuple[str, str], str]:
    """The values of ``recipe`` that are local paths of this machine, by (section, key). ``transfers``: the run's
    transfer.json, which records where each warm start was loaded from."""
    found = {}
    for (section, key), (kind, _, _) in BLANKS.items():
        value = (recipe.get(section) or {}).get(key) if isinstance(recipe.get(section) or {}, dict) else None
        if not isinstance(value, str) or not value:
            continue
        source_dir = ((transfers or {}).get(section) or {}).get("source_dir")
        if kind == "file" or (kind == "data" and value not in HUB_DATASETS and not value.startswith("hub:")) \
                or (kind == "source" and _local_source(value, source_dir)):
            found[(section, key)] = value
    return found


def _local_source(value: str, source_dir: str | None) -> bool:
    """Whether a warm start (``generator.init``) named a local folder rather than a bundled model or a Hub id."""
    if "/" not in value and (BUNDLED / value).is_dir():
        return False
    if source_dir is not None:  # where it was loaded from: a Hub id lands in the Hub cache's models--owner--name
        return "models--" not in source_dir
    path = Path(value).expanduser()
    return path.is_absolute() or value.startswith((".", "~")) or path.exists() or parse_hub_id(value) is None


def public_recipe(text: str, local: dict[tuple[str, str], str]) -> str:
    """The recipe YAML ``text`` with each ``local`` path replaced by its placeholder and a comment saying what goes
    there (:data:`BLANKS`); still a valid recipe, apart from the placeholders."""
    recipe = yaml.safe_load(text)
    notes = {}
    for (section, key), value in local.items():
        _, placeholder, what = BLANKS[(section, key)]
        recipe[section][key] = placeholder
        name = short_path(value).replace("\n", " ")
        notes[(section, key)] = (f"set {section}.{key} to {what}; the run read {name} on the machine that trained it")
    head = "# The recipe of this model's run. Keys marked below held local paths of the machine that trained it.\n"
    return head + _comment(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), notes)


def short_path(value: str) -> str:
    """The last part of a local path, which says what it was without where: ``anime-faces-64``, and for a run's
    export the run too (``cond/generator``)."""
    path = Path(value)
    return "/".join(path.parts[-2:] if path.name in ("generator", "discriminator") else path.parts[-1:]) or value


def _comment(text: str, notes: dict[tuple[str, str], str]) -> str:
    """YAML ``text`` of sections of keys (as ``yaml.safe_dump`` writes a recipe) with ``notes[(section, key)]`` as
    a comment at the end of that key's line."""
    lines, section = [], None
    for line in text.splitlines():
        if line and not line[0].isspace():
            section = line.split(":", 1)[0]
        elif line.startswith("  ") and not line[2].isspace() and (section, line[2:].split(":", 1)[0]) in notes:
            line += f"  # {notes[(section, line[2:].split(':', 1)[0])]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _dataset(path: str | None) -> tuple[str | None, str | None, str]:
    """(tag, Hub dataset id, Markdown description) of a recipe's data.path."""
    if not path:
        return None, None, "unrecorded data"
    if path in HUB_DATASETS:
        repo = HUB_DATASETS[path]
        return path, repo, f"[{path.upper()}](https://huggingface.co/datasets/{repo})"
    if path.startswith("hub:") and parse_hub_id(path[4:]):
        repo = parse_hub_id(path[4:])[0]
        return repo.split("/")[1].lower(), repo, f"[{repo}](https://huggingface.co/datasets/{repo})"
    name = Path(path).name or path
    return name.lower(), None, f"`{name}`"


def card_data(config: dict, info: RunInfo, license: str) -> ModelCardData:
    """The YAML metadata: library, tags (gan, ganxfer, kinds, dataset, backbone), license, datasets, base model,
    and the run's facts (:func:`run_facts`) under ``ganxfer:``, which :func:`card_facts` reads back."""
    kind = config.get("ganxfer", {}).get("kind", "dcgan")
    disc = info.recipe.get("discriminator") or {}
    tag, dataset, _ = _dataset((info.recipe.get("data") or {}).get("path"))
    tags = ["gan", "ganxfer", kind, "unconditional-image-generation"]
    tags += [t for t in (disc.get("kind"), tag) if t]
    if disc.get("kind") == "projected" and disc.get("backbone"):
        tags.append(disc["backbone"])
    facts = run_facts(info)
    return ModelCardData(library_name="ganxfer", pipeline_tag="unconditional-image-generation", license=license,
                         tags=tags, datasets=[dataset] if dataset else None, base_model=info.base_model,
                         ganxfer=facts or None)


def _describe(config: dict, info: RunInfo) -> str:
    kind = config.get("ganxfer", {}).get("kind", "dcgan")
    res, channels = config.get("resolution", "?"), config.get("channels", 3)
    text = (f"A {KIND_NAMES.get(kind, kind)} generator of {res}×{res} {'RGB' if channels == 3 else 'grayscale'} "
            f"images (latent size {config.get('latent_dim', '?')}), trained with [ganxfer]({REPO_URL})")
    if info.recipe:
        text += f" on {_dataset((info.recipe.get('data') or {}).get('path'))[2]}"
        disc = info.recipe.get("discriminator") or {}
        if disc.get("kind") == "projected":
            text += f" against a Projected GAN discriminator on a {disc.get('mode', 'frozen')} `{disc.get('backbone')}`"
        elif disc.get("kind"):
            text += f" against a {KIND_NAMES.get(disc['kind'], disc['kind'])} discriminator"
    if info.transfer_source:
        src = info.transfer_source
        local = ("generator", "init") in info.local or (info.base_model is None and _local_source(src, None))
        shown = f"[{info.base_model}](https://huggingface.co/{info.base_model})" if info.base_model else \
            f"a local generator (`{short_path(src)}`)" if local else f"`{src}`"
        text += f", warm-started from {shown}"
    return text + ". Weights are safetensors, and `config.json` rebuilds the exact network; nothing is unpickled."


def _training(info: RunInfo) -> list[tuple[str, str]]:
    """The training table's rows, [] when no recipe was recorded."""
    r = info.recipe
    if not r:
        return []
    data, g, d, loss, tr = (r.get(k) or {} for k in ("data", "generator", "discriminator", "loss", "train"))
    optim, aug = r.get("optim") or {}, (r.get("augment") or {}).get("policy")
    backbone = f"`{d.get('backbone')}` backbone ({d.get('mode')})" if d.get("kind") == "projected" \
        else f"ndf {d.get('ndf')}"
    rows = [("data", f"{_dataset(data.get('path'))[2]}, {data.get('resolution')}px"
                     f"{', horizontal flips' if data.get('hflip') else ''}"),
            ("generator", f"{g.get('kind')}, ngf {g.get('ngf')}, latent {g.get('latent_dim')}"),
            ("discriminator", f"{d.get('kind')}, {backbone}"),
            ("loss", f"{loss.get('kind')}" + (f", R1 γ={loss['r1_gamma']}" if loss.get("r1_gamma") else "")),
            ("augmentation", f"DiffAugment {aug}" if aug else "none"),
            ("optimizer", f"Adam, lr G {optim.get('g_lr')} / D {optim.get('d_lr')}, betas {optim.get('betas')}"),
            ("batch size", str(tr.get("batch_size"))), ("EMA", str(tr.get("ema")))]
    if info.images_seen is not None:
        rows.append(("images seen", f"{info.images_seen:,} ({info.images_seen / 1000:g} kimg)"))
    if info.wall_s is not None:
        rows.append(("training time", f"{info.wall_s / 3600:.2f} h" if info.wall_s >= 360 else f"{info.wall_s:.0f} s"))
    rows.append(("hardware", info.hardware or "not recorded"))
    return rows


def _evaluation(info: RunInfo) -> list[tuple[str, str, str]]:
    """(kimg, FID, KID ×10³) of the last five evaluations; '–' where a metric was not computed."""
    rows = []
    for r in info.evals[-5:]:
        fid = f"{r['fid']:.2f}" if "fid" in r else "–"
        kid = f"{r['kid_mean'] * 1e3:.2f}" + (f" ± {r['kid_std'] * 1e3:.2f}" if "kid_std" in r else "") \
            if "kid_mean" in r else "–"
        rows.append((f"{r.get('kimg', 0):g}", fid, kid))
    return rows


FACTS = ("images_seen", "kimg", "fid", "kid_mean", "kid_std")  # what a card's metadata records, under `ganxfer:`


def run_facts(info: RunInfo) -> dict:
    """The facts a card records as data: ``images_seen`` and the last evaluation (``kimg``, ``fid``,
    ``kid_mean``, ``kid_std``), each only when the run knows it."""
    facts = {"images_seen": info.images_seen} if info.images_seen is not None else {}
    if info.evals:
        facts.update({k: v for k, v in info.evals[-1].items() if k in FACTS})
    return facts


def card_facts(text: str) -> dict:
    """The facts in a card's YAML metadata (``ganxfer:``, written by :func:`card_data`): only known keys with
    numbers, so a hand-edited or foreign card gives what it states and no more."""
    try:
        data = ModelCard(text).data.to_dict()
    except Exception:  # no metadata, or metadata that is not YAML: nothing stated
        return {}
    stated = data.get("ganxfer") if isinstance(data.get("ganxfer"), dict) else {}
    return {k: v for k, v in stated.items() if k in FACTS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def model_card(repo_id: str, config: dict, info: RunInfo, files: list[str], license: str = "apache-2.0",
               space: str | None = None) -> ModelCard:
    """The README.md of a pushed generator: Hub metadata, what it is, three-line usage, training, metrics, grid;
    with ``space``, a link to its demo Space. Rendered from :data:`CARD_TEMPLATE` by ``ModelCard.from_template``."""
    return ModelCard.from_template(
        card_data(config, info, license), template_str=CARD_TEMPLATE, name=repo_id.split("/")[-1], repo_id=repo_id,
        description=_describe(config, info), samples=SAMPLES, space=space, channels=config.get("channels", 3),
        resolution=config.get("resolution"), discriminator=any(f.startswith("discriminator/") for f in files),
        training=_training(info), has_recipe="recipe.yaml" in files, blanks=_blanks(info.local),
        blank_keys=_and([f"{section}.{key}" for section, key in info.local]),
        evaluation=_evaluation(info),
        eval_num=(info.recipe.get("eval") or {}).get("num", "?"), files=files)


def _blanks(local: dict[tuple[str, str], str]) -> list[tuple[str, str]]:
    """(dotted key, example value for --set) of each key left blank in the uploaded recipe."""
    return [(f"{section}.{key}", f"PATH/TO/{short_path(value)}") for (section, key), value in local.items()]


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def _inside(path: Path, root: Path) -> Path:
    """``path`` resolved, when it is a regular file inside ``root``; a link out of ``root`` is refused."""
    real = path.resolve()
    if not real.is_relative_to(root) or not real.is_file():
        raise PushError(f"{path} is a link to {real}, outside {root}; push uploads only regular files from inside "
                        "the run folder: replace the link with a copy of the file")
    return real


def _copy(path: Path, out: Path, root: Path) -> None:
    shutil.copyfile(_inside(path, root), out)


def _root(source: str, generator: Path, run: Path | None) -> Path:
    """The folder whose files a push may read: the run or exported folder, a bundled model, or the Hub cache
    repo of a Hub id (its snapshot links into the repo's blobs)."""
    path = Path(source).expanduser()
    if path.exists():
        return (run or path).resolve()
    return (BUNDLED / source).resolve() if (BUNDLED / source).is_dir() else generator.resolve().parents[1]


def _grid(run: Path | None, generator: Path, info: RunInfo, out: Path, root: Path) -> None:
    """The run's latest sample grid, else one rendered from the generator with seed 0."""
    grids = sorted(run.glob("samples/*.png")) if run is not None else []
    existing = grids[-1] if grids else (run / SAMPLES if run is not None and (run / SAMPLES).is_file() else None)
    if existing is not None:
        _copy(existing, out, root)
        return
    n = (info.recipe.get("train") or {}).get("num_samples", 64)
    write_grid(load_model(generator, "generator").sample(n, seed=0), out)


def _copy_model(folder: Path, out: Path, root: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        _copy(folder / name, out / name, root)  # follows the Hub cache's links into its blobs


def build_upload(source: str, repo_id: str, out: Path, with_discriminator: bool = False,
                 license: str = "apache-2.0", hardware: str | None = None, space: str | None = None) -> list[str]:
    """Write the exact folder ``ganxfer push`` uploads into ``out``; return its files, relative and sorted.
    ``space``: the card links to this Hub Space."""
    generator = resolve(source, "generator")
    load_model(generator, "generator")  # strict: refuse to publish weights that do not match their config
    discriminator = None
    if with_discriminator:
        try:
            discriminator = resolve(source, "discriminator")
        except SourceError as e:
            raise PushError(f"--with-discriminator: {e}") from None
    run = find_run(source, generator)
    root = _root(source, generator, run)
    for name in ("recipe.yaml", "metrics.jsonl", "transfer.json"):  # what the card reads
        if run is not None and (run / name).exists():
            _inside(run / name, root)
    info = run_info(run, hardware)
    _copy_model(generator, out, root)
    if discriminator is not None:
        _copy_model(discriminator, out / "discriminator", root)
    if run is not None and (run / "recipe.yaml").is_file():
        _copy(run / "recipe.yaml", out / "recipe.yaml", root)
        if info.local:  # no path of this machine goes out: a placeholder and a comment take its place
            (out / "recipe.yaml").write_text(public_recipe((out / "recipe.yaml").read_text(), info.local))
    _grid(run, generator, info, out / SAMPLES, root)
    files = sorted([p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()] + ["README.md"])
    model_card(repo_id, read_config(generator), info, files, license, space).save(out / "README.md")
    return files


def push(source: str, repo_id: str, private: bool = False, revision: str | None = None,
         with_discriminator: bool = False, dry_run_dir: str | Path | None = None, license: str = "apache-2.0",
         hardware: str | None = None, space: str | None = None) -> str:
    """Upload ``source``'s generator (and discriminator), recipe, sample grid and model card to ``repo_id``; with
    ``space``, also a Gradio Space serving its demo, linked from the card.

    With ``dry_run_dir`` the exact upload folder is written there (with ``space``: ``model/`` and ``space/`` in
    it) and nothing touches the network. Returns the repo URL (and the Space's), or the dry-run folder.
    """
    if parse_hub_id(repo_id) is None or "@" in repo_id:
        raise PushError(f"REPO_ID '{repo_id}' must be owner/name; pass a branch with --revision")
    if space is not None and (parse_hub_id(space) is None or "@" in space):
        raise PushError(f"--space '{space}' must be owner/name, the id of a Space")
    model = f"{repo_id}{at(revision)}"  # what the Space loads

    def write(out: Path) -> tuple[Path, list[str]]:
        folder = out / "model" if space else out
        files = build_upload(source, repo_id, folder, with_discriminator, license, hardware, space)
        if space:
            build_space(model, space, out / "space")
        return folder, files

    if dry_run_dir is not None:
        out = output_folder(dry_run_dir, "--dry-run")  # new or empty, writable, not under a file
        with writing(out, "--dry-run"):
            write(out)
        return str(out)
    if hub_offline():
        raise PushError(f"HF_HUB_OFFLINE=1 forbids uploading to {repo_id}; unset it to push, "
                        "or write the folder with --dry-run DIR")
    with tempfile.TemporaryDirectory(prefix="ganxfer-push-") as tmp:
        folder, files = write(Path(tmp) / "upload")
        api = HfApi(library_name="ganxfer", library_version=__version__)
        target = repo_id
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
            api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                              revision=revision, commit_message=f"Upload ganxfer generator ({len(files)} files)")
            if space:
                target = space
                space_url = api.create_repo(space, private=private, exist_ok=True, repo_type="space",
                                            space_sdk="gradio")
                api.upload_folder(repo_id=space, folder_path=Path(tmp) / "upload" / "space", repo_type="space",
                                  commit_message=f"ganxfer demo of {model}")
        except NETWORK_ERRORS as e:
            raise PushError(f"push to {target} failed: {str(e).splitlines()[0]} "
                            "(log in with `hf auth login` using a token that can write)") from None
    where = f"{url}/tree/{revision}" if revision else str(url)
    return f"{where} (Space: {space_url})" if space else where
