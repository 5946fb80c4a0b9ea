"""Recipes: YAML loading, ``--set`` overrides, and the rules that tie keys together, all checked at load time.

The keys themselves (types, defaults, ranges, help) are :mod:`ganxfer.schema`'s. Numbers follow YAML 1.2
(``1e-4`` is a float). Every problem is a one-line :class:`RecipeError`, so ``--dry-run`` catches it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ganxfer import nets
from ganxfer.augment import POLICIES
from ganxfer.cache import parse_hub_id
from ganxfer.data import MNIST_CLASSES
from ganxfer.nets.dcgan import RESOLUTIONS
from ganxfer.schema import LOWER_IS_BETTER, METRICS, MIN_EVAL_SIDE, MIN_IMAGES, Recipe, RecipeError, _build

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


MAX_DEPTH = 32  # nesting of mappings and lists in a recipe; the deepest shipped one is 3
MAX_BYTES = 2**20  # a recipe file; the longest shipped one is under 4 KB


class _Refused(yaml.YAMLError):
    """YAML that is valid but refused in a recipe (an alias, a duplicate key, too deep); says why, and where."""

    def __init__(self, problem: str, mark) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded and read as YAML 1.2's core schema, as the README promises.

    Plain scalars resolve as YAML 1.2 does: ``null``/``~``, ``true``/``false``, decimal integers (``010`` is ten,
    not YAML 1.1's octal eight), ``0o17``, ``0x1f``, and floats such as ``1e-4``, ``.5``, ``.inf``; anything else
    (``1:30``, ``yes``, ``1_000``, dates) is a string, which the schema's type check then refuses where a number or
    bool belongs. Aliases (``*name``, which let a few hundred bytes expand to gigabytes), duplicate keys and
    nesting deeper than :data:`MAX_DEPTH` are refused.
    """

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(f"the YAML alias *{event.anchor} is refused; write the value out", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"values nested more than {MAX_DEPTH} deep are refused", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first is not None:
                raise _Refused(f"duplicate key {key!r} (first at line {first}); keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        sign, digits = (-1 if text[:1] == "-" else 1), text.lstrip("+-")
        try:
            if digits[:2] in ("0o", "0x"):
                return sign * int(digits[2:], 8 if digits[1] == "o" else 16)
            return sign * int(digits, 10)
        except ValueError:
            raise _Refused(f"!!int {text!r} is not an integer", node.start_mark) from None

    def construct_yaml_float(self, node):
        text = self.construct_scalar(node)
        special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
        if text.lower() in special:
            return special[text.lower()]
        if not _FLOAT.fullmatch(text):
            raise _Refused(f"!!float {text!r} is not a number", node.start_mark)
        return float(text)


_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
        ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
        ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
        ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
        ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
                  r"|\.(?:nan|NaN|NAN))$", list("-+0123456789.")),
):
    _Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), _first)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> Python values, with syntax errors, refused tags and refused YAML (:class:`_Loader`) as
    one-line :class:`RecipeError`s."""
    try:
        return yaml.load(text, Loader=_Loader)
    except _Refused as e:
        raise RecipeError(f"{source}: line {e.problem_mark.line + 1}: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        tag = re.search(r"constructor for the tag '([^']+)'", str(getattr(e, "problem", "")))
        if tag:
            shown = tag.group(1).replace("tag:yaml.org,2002:", "!!")
            raise RecipeError(f"{source}: the YAML tag {shown}{at} is refused; a recipe holds plain values only "
                              "(remove the tag)") from None
        raise RecipeError(f"{source}: invalid YAML{at}; fix the syntax") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.kimg=5`` -> (['train', 'kimg'], 5). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected KEY=VALUE, for example --set train.kimg=5")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.load(value, Loader=_Loader) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        _assign(raw, keys, value, f"--set {text}")
    return raw


def _assign(raw: dict[str, Any], keys: list[str], value: Any, what: str) -> None:
    """Set ``raw[k0][k1]...`` to ``value``, creating sections on the way."""
    node = raw
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"{what}: '{k}' is not a section")
        node = child
    node[keys[-1]] = value


SHIPPED = Path(__file__).parent / "recipes"


def shipped_recipes() -> dict[str, Path]:
    """The recipes shipped inside the package, by name: ``anime_from_mnist``, and the bundle's build stages as
    ``dcgan-mnist-64/stage1``."""
    return {str(p.relative_to(SHIPPED).with_suffix("")): p for p in sorted(SHIPPED.rglob("*.yaml"))}


def recipe_summary(path: Path) -> str:
    """What a recipe is for: its ``# When:`` comment line, else its first comment line."""
    comments = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
    when = [c[len("When:"):].strip() for c in comments if c.startswith("When:")]
    return (when or comments or [""])[0]


def find_recipe(spec: str | Path) -> Path:
    """A recipe file: ``spec`` itself where it is a file, else the shipped recipe of that name."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    name = str(spec).removesuffix(".yaml")
    if name in shipped:
        return shipped[name]
    close = difflib.get_close_matches(name, list(shipped), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise RecipeError(f"recipe {spec} not found{hint}: pass a YAML file, or the name of a shipped recipe "
                      "('ganxfer recipes' lists them)")


def load_recipe(path: str | Path | None, overrides: list[str] = (), values: dict[str, Any] | None = None) -> Recipe:
    """Load and validate a recipe (a YAML file, or the name of a shipped recipe), then apply ``--set`` overrides
    (``KEY=VALUE`` strings, values read as YAML) and ``values`` (``{"train.kimg": 5}``, Python values); all are
    validated the same way."""
    raw: dict[str, Any] = {}
    source = "--set"
    if path is not None:
        path = find_recipe(path)
        source = str(path)
        if not path.is_file() or path.stat().st_size > MAX_BYTES:  # a FIFO or device would never end
            what = "is not a regular file" if not path.is_file() else f"is over {MAX_BYTES:,} bytes"
            raise RecipeError(f"{path} {what}; a recipe is a YAML file of a few kilobytes")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecipeError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        raw = parse_yaml(text, source)
        if raw is None or raw == {}:
            raise RecipeError(f"{path} is empty; a recipe sets at least name and data.path "
                              "('ganxfer recipes' lists examples)")
    raw = apply_overrides(raw, list(overrides))
    for key, value in (values or {}).items():
        _assign(raw, key.split("."), value, key)
    check_sections(raw, source)
    return check(_build(Recipe, raw, "", source), source)


def check_sections(raw: Any, source: str) -> None:
    """Each section (``train``, ``data``, ...) present is a mapping of its keys: ``train:`` with nothing after it
    (null), or a list, is refused rather than read as the defaults."""
    if not isinstance(raw, dict):
        return  # the schema refuses a recipe that is no mapping
    hints = typing.get_type_hints(Recipe)
    for f in dataclasses.fields(Recipe):
        if f.name in raw and dataclasses.is_dataclass(hints[f.name]) and not isinstance(raw[f.name], dict):
            shown = repr(raw[f.name])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise RecipeError(f"{source}: '{f.name}' must be a mapping of its keys, a section (e.g. "
                              f"{f.name}: {{key: value}}), got {shown}; remove it to keep the defaults")


def check(recipe: Recipe, source: str = "recipe") -> Recipe:
    """Rules that tie keys together, checked when the recipe loads so that ``--dry-run`` catches them."""
    for rule in (_check_name, _check_data, _check_models, _check_optim, _check_loss, _check_eval, _check_parents,
                 _check_memory):
        problem = rule(recipe)
        if problem:
            raise RecipeError(f"{source}: {problem}")
    if recipe.loss.r1_gamma > 0 and recipe.train.mixed_precision == "fp16":
        raise RecipeError(f"{source}: loss.r1_gamma with train.mixed_precision=fp16 would take R1's gradient "
                          "without loss scaling; use train.mixed_precision=bf16, or loss.r1_gamma=0")
    if recipe.train.log_with != ["tensorboard"]:
        from accelerate.tracking import get_available_trackers
        from accelerate.utils import LoggerType

        known, installed = [t.value for t in LoggerType], {LoggerType(t).value for t in get_available_trackers()}
        for name in recipe.train.log_with:
            if name not in known:
                raise RecipeError(f"{source}: train.log_with: unknown tracker {name!r}; use any of {', '.join(known)}")
            if name not in installed:  # Accelerate would drop it without a word
                raise RecipeError(f"{source}: train.log_with: the {name} tracker is not installed; "
                                  f"pip install {name}, or leave it out")
    return recipe


def _projected(r: Recipe) -> bool:
    return r.discriminator.kind == "projected"


# A key that only matters while another feature is on: (the keys, whether the feature is on, how to turn it on).
# Set to anything but its default while the feature is off, it would be ignored in silence, so it is refused.
PARENTS: list[tuple[tuple[str, ...], Callable[[Recipe], bool], str]] = [
    (("loss.r1_every",), lambda r: r.loss.r1_gamma > 0, "loss.r1_gamma > 0"),
    (("loss.top_k_kimg",), lambda r: r.loss.top_k < 1, "loss.top_k < 1"),
    (("loss.fine_detail_size",), lambda r: r.loss.fine_detail > 0, "loss.fine_detail > 0"),
    (("data.select_backbone",), lambda r: r.data.select < 1, "data.select < 1"),
    (("generator.freeze_blocks", "generator.code_gain", "generator.balance_latent"),
     lambda r: bool(r.generator.init), "generator.init (a warm start)"),
    (("discriminator.freeze_blocks",), lambda r: bool(r.discriminator.init), "discriminator.init (a warm start)"),
    (("generator.excitation",), lambda r: r.generator.kind == "dcgan",
     "generator.kind=dcgan (FastGAN-lite has its own excitation)"),
    (("discriminator.ndf", "discriminator.norm"), lambda r: r.discriminator.kind == "dcgan",
     "discriminator.kind=dcgan (a projected D's pixel D has discriminator.pixel_ndf and pixel_norm)"),
    (("discriminator.backbone", "discriminator.pretrained", "discriminator.pretrained_file", "discriminator.mode",
      "discriminator.out_indices", "discriminator.projection", "discriminator.head_channels", "discriminator.heads",
      "discriminator.mbstd", "discriminator.pixel_d"), _projected, "discriminator.kind=projected"),
    (("discriminator.trainable_from",), lambda r: r.discriminator.mode == "partial", "discriminator.mode=partial"),
    (("discriminator.backbone_lr_mult",), lambda r: _projected(r) and r.discriminator.mode != "frozen",
     "discriminator.mode=finetune or partial"),
    (("discriminator.pixel_ndf", "discriminator.pixel_norm", "discriminator.pixel_input_size",
      "discriminator.pixel_weight"), lambda r: _projected(r) and r.discriminator.pixel_d, "discriminator.pixel_d=true"),
    (("eval.num", "eval.metrics", "eval.data", "eval.num_real", "eval.best_metric", "eval.batch",
      "eval.feature_extractor"), lambda r: r.eval.every_kimg > 0, "eval.every_kimg > 0 (in-training evaluation)"),
]


def _check_parents(r: Recipe) -> str | None:
    values, defaults = flat(r), flat(Recipe())
    for keys, on, feature in PARENTS:
        if on(r):
            continue
        for key in keys:
            if values[key] != defaults[key]:
                return (f"{key}={values[key]!r} does nothing unless {feature}; turn that on, or leave {key} at its "
                        f"default ({defaults[key]!r})")
    return None


def _check_name(r: Recipe) -> str | None:
    if not NAME.fullmatch(r.name):
        return (f"name {r.name!r} must be a plain name (letters, digits, '.', '_', '-'; no '/'): it names "
                "runs/<name>; choose another folder with --run-dir")
    return None


def _check_data(r: Recipe) -> str | None:
    for key, value in (("data.path", r.data.path), ("eval.data", r.eval.data), ("generator.init", r.generator.init),
                       ("discriminator.init", r.discriminator.init)):
        hub_id = value[4:] if value and value.startswith("hub:") else value if value and "@" in value else None
        if hub_id and not Path(value).expanduser().exists() and parse_hub_id(hub_id) is None:
            return (f"{key}={value!r} is not a valid Hub id: use owner/name[@revision], a plain name and a branch, "
                    "tag or commit (no '..')")
    if r.data.channels not in (1, 3):
        return f"data.channels={r.data.channels}: use 1 (grayscale) or 3 (RGB)"
    for name in (p.strip() for p in r.augment.policy.split(",")):
        if name and name not in POLICIES:
            close = difflib.get_close_matches(name, list(POLICIES), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            return f"augment.policy: unknown '{name}'{hint}; use a comma list of {', '.join(POLICIES)}"
    return None


def _check_models(r: Recipe) -> str | None:
    for role, part in (("generator", r.generator), ("discriminator", r.discriminator)):
        entry = nets.REGISTRY.get((role, part.kind))
        if entry is None:
            return f"{role}.kind={part.kind!r} is unknown; use one of {', '.join(nets.kinds(role))}"
        sides = getattr(entry.cls, "resolutions", None)
        if sides and r.data.resolution not in sides:
            return (f"data.resolution={r.data.resolution}: a {part.kind} {role} makes "
                    f"{', '.join(map(str, sides))} pixels; use one of those")
        side = getattr(part, "input_size", None)
        if role == "discriminator" and part.kind == "dcgan" and side and sides and side not in sides:
            return (f"discriminator.input_size={side}: a dcgan discriminator judges "
                    f"{', '.join(map(str, sides))} pixels; use one of those, or null")
        pixel = getattr(part, "pixel_input_size", None)
        if role == "discriminator" and pixel and pixel not in RESOLUTIONS:
            return (f"discriminator.pixel_input_size={pixel}: the pixel D judges "
                    f"{', '.join(map(str, RESOLUTIONS))} pixels; use one of those, or null")
        if part.freeze_blocks and not part.init:
            return (f"{role}.freeze_blocks={part.freeze_blocks} freezes warm-started blocks; set {role}.init too, "
                    "or drop freeze_blocks")
    weights = r.discriminator.pretrained_file
    path = Path(weights).expanduser() if weights else None
    if path is not None and path.exists():  # a missing file is the build's to refuse (a pushed recipe's placeholder)
        if path.suffix != ".safetensors" or not path.is_file():
            what = "is not a .safetensors file" if path.is_file() else "is not a regular file"
            return (f"discriminator.pretrained_file={weights!r} {what}; name a .safetensors file of the backbone's "
                    "weights, or drop the key")
        problem = _safetensors_problem(path)
        if problem:
            return (f"discriminator.pretrained_file={weights!r} is not a readable safetensors file ({problem}); "
                    "download or convert it again")
    count = nets.parameter_count(lambda: nets.build("generator", r))
    if count > nets.MAX_PARAMETERS:
        return (f"the generator would have {count:,} parameters, over ganxfer's cap of {nets.MAX_PARAMETERS:,}; "
                "lower generator.ngf or generator.latent_dim")
    return None


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path``'s safetensors header does not read (its tensors are not loaded), or None."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, a header that is no JSON: all are damage
        return str(e).splitlines()[0][:120] if str(e) else type(e).__name__
    return None


def _check_optim(r: Recipe) -> str | None:
    betas = r.optim.betas
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        return f"optim.betas={betas}: Adam takes two betas, each in [0, 1), e.g. [0.5, 0.999]"
    return None


def _check_loss(r: Recipe) -> str | None:
    c = r.discriminator.conditional
    if c == 1:
        return "discriminator.conditional=1: a class-conditional D needs 2 classes or more; use 0 for off"
    if c and r.data.path == "mnist" and c != MNIST_CLASSES:
        return (f"discriminator.conditional={c}: MNIST has {MNIST_CLASSES} classes; use "
                f"discriminator.conditional={MNIST_CLASSES}, or 0 for off")
    if c > r.generator.latent_dim:
        return (f"discriminator.conditional={c} reads the class code from z's first {c} entries, more than "
                f"generator.latent_dim={r.generator.latent_dim}; raise latent_dim or set it to 0")
    if r.loss.classifier > 0 and not c:
        return (f"loss.classifier={r.loss.classifier:g} teaches a class head the real images' classes; set "
                "discriminator.conditional to their number too, or loss.classifier=0")
    if r.loss.classifier > 0 and r.discriminator.kind == "projected" and not r.discriminator.pixel_d:
        return (f"loss.classifier={r.loss.classifier:g} puts its class head on the pixel D; set "
                "discriminator.pixel_d=true, or loss.classifier=0")
    gain = r.generator.code_gain
    if gain != 1 and not (c and r.generator.init):
        return (f"generator.code_gain={gain:g} scales how the warm-start generator reads the class code of "
                "discriminator.conditional; set generator.init and discriminator.conditional, or generator.code_gain=1")
    from ganxfer.objective import batch_error  # the same rule the loop applies per process, here for one

    return batch_error(r, r.train.batch_size, 1)


def _check_eval(r: Recipe) -> str | None:
    ev = r.eval
    unknown = [m for m in ev.metrics if m not in METRICS]
    if unknown or not ev.metrics:
        return f"eval.metrics: unknown metric {', '.join(unknown) or '(none)'}; choose from {', '.join(METRICS)}"
    if ev.every_kimg <= 0:
        return None
    produced = [k for m in ev.metrics for k in METRICS[m] if k in LOWER_IS_BETTER]
    if ev.best_metric not in produced:
        return (f"eval.best_metric={ev.best_metric!r} must be one of {', '.join(produced or LOWER_IS_BETTER)} "
                f"(lower is better) given eval.metrics={','.join(ev.metrics)}")
    need = max(MIN_IMAGES[m] for m in ev.metrics)
    if ev.num < need:
        return f"eval.num={ev.num} is too few for {','.join(ev.metrics)}; use at least {need}"
    if r.data.resolution < MIN_EVAL_SIDE:
        return (f"eval.every_kimg with data.resolution={r.data.resolution}: evaluation scores images of "
                f"{MIN_EVAL_SIDE} px or more; set eval.every_kimg=0, or a larger data.resolution")
    return None


MAX_STEP_BYTES = 2**40  # 1 TiB: more than any one machine holds; a global batch split over many is still below it
FLOATS_PER_PIXEL = 100  # a training step keeps ~100 floats per image pixel (G and D activations, their gradients)
INCEPTION_BYTES = 3 * 299 * 299 * 4 * 20  # one image through Inception: its 299 px input and ~20x that in activations
FEATURE_BYTES = 2048 * 4  # one image's Inception features, held for every evaluated image


def _check_memory(r: Recipe) -> str | None:
    """Sizes that decide what is allocated, against a simple estimate, before anything is: a typo such as
    train.batch_size=100000000000 is one line here, not an allocator's error after the data has loaded."""
    pixels = r.data.channels * r.data.resolution**2
    estimates = [("train.batch_size", r.train.batch_size, r.train.batch_size * pixels * 4 * FLOATS_PER_PIXEL),
                 ("train.num_samples", r.train.num_samples, r.train.num_samples * pixels * 4 * FLOATS_PER_PIXEL // 10)]
    if r.eval.every_kimg > 0:
        estimates += [("eval.batch", r.eval.batch, r.eval.batch * INCEPTION_BYTES),
                      ("eval.num", r.eval.num, r.eval.num * FEATURE_BYTES),
                      ("eval.num_real", r.eval.num_real or 0, (r.eval.num_real or 0) * FEATURE_BYTES)]
    for key, value, need in estimates:
        if need > MAX_STEP_BYTES:
            return (f"{key}={value:,} would need about {need / 2**40:,.1f} TiB of memory at {r.data.resolution} px "
                    f"(estimated), over the {MAX_STEP_BYTES / 2**40:g} TiB ganxfer allows; lower {key}")
    return None


def flat(recipe: Recipe) -> dict[str, Any]:
    """Every key of a recipe as ``{'train.kimg': 100.0, ...}``."""
    out: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            walk(v, f"{prefix}{k}.") if isinstance(v, dict) else out.setdefault(f"{prefix}{k}", v)

    walk(recipe.to_dict(), "")
    return out


def differences(a: Recipe, b: Recipe) -> list[str]:
    """``key: a -> b`` for every key whose value differs."""
    fa, fb = flat(a), flat(b)
    return [f"{k}: {fa[k]!r} -> {fb[k]!r}" for k in fa if fa[k] != fb[k]]
