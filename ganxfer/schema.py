"""The recipe schema: every key's type, default, range and help, checked value by value (the reference table).

A recipe is a YAML file with the sections below. Every key has a default, a type and, where it matters,
a range or a set of choices; anything else is refused with a message that names the key and the closest
valid one. ``${VAR}``, ``${VAR:-default}`` and ``${VAR:+alternative}`` are expanded in string values, as in
bash, for ``GANXFER_*`` variables and :data:`ENV_ALLOWED` only: the expanded recipe is written to
``RUN/recipe.yaml`` and pushed to the Hub, so a secret such as ``${HF_TOKEN}`` is refused rather than
expanded. Together they choose between two paths, for example
``${GANXFER_DATA:-hub:huggan/anime-faces}${GANXFER_DATA:+/anime-faces-64}`` is ``$GANXFER_DATA/anime-faces-64``
when GANXFER_DATA is set and the Hub dataset otherwise. Model ``config.json`` values that recipe keys share are
checked by the same rules (:func:`check_model_values`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from ganxfer.errors import GanxferError


class RecipeError(GanxferError, ValueError):
    """A recipe problem, phrased as one line for the user."""


# Environment variables a recipe may expand besides GANXFER_*: locations, never credentials.
ENV_ALLOWED = ("HOME", "USER", "TMPDIR", "XDG_CACHE_HOME", "XDG_DATA_HOME")
# Evaluation metrics -> the keys each produces; the lower-is-better keys can pick RUN/generator-best.
METRICS = {"fid": ("fid",), "kid": ("kid_mean", "kid_std"), "pr": ("precision", "recall")}
MIN_IMAGES = {"fid": 2, "kid": 4, "pr": 4}  # per side
LOWER_IS_BETTER = ("fid", "kid_mean")
MAX_SEED = 2**32 - 1  # what every random generator ganxfer seeds takes (numpy's, through Accelerate's set_seed)
# The smallest image side evaluation scores (Inception upscales every image to 299 px): CIFAR-10's 32, the smallest
# side FID and KID are reported at, so scores below it compare with nothing, and the smallest a dcgan generator makes.
MIN_EVAL_SIDE = 32


def _f(default: Any, help: str, lo: float | None = None, hi: float | None = None, **kw: Any) -> Any:
    """A field with a help string and an optional closed range [lo, hi]."""
    meta = {"help": help, "lo": lo, "hi": hi}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class DataConfig:
    path: str = _f("mnist", "'mnist', a folder or zip of images, or hub:owner/dataset")
    resolution: int = _f(64, "square side the images are resized and center-cropped to", 8, 1024)
    channels: int = _f(3, "1 (grayscale) or 3 (RGB)", 1, 3)
    hflip: bool = _f(False, "random horizontal flips")
    limit: int | None = _f(None, "use only the first N images", 1)
    in_memory_gb: float = _f(8.0, "decode once into RAM when the uint8 set is smaller than this", 0)
    workers: int = _f(2, "threads of the one decoding pass at start; when streaming, DataLoader worker "
                            "processes (0 or 1: decode in the training process)", 0, 64)
    select: float = _f(1.0, "instance selection (DeVries et al. 2020): train on this share of the images, the most "
                            "typical: those whose 5th nearest neighbour in select_backbone's pooled features is "
                            "closest (RUN/dropped.png shows the least typical); 1 = all", 0.01, 1)
    select_backbone: str = _f("tf_efficientnet_lite0.in1k", "timm ImageNet model whose pooled features rank "
                                                             "the images for data.select")


@dataclass
class GeneratorConfig:
    kind: str = _f("dcgan", "'dcgan' or 'fastgan' (Projected GAN's FastGAN-lite generator: 64, 128 or 256 px)")
    latent_dim: int = _f(100, "size of z", 1, 4096)
    ngf: int = _f(64, "dcgan: width of the last hidden layer; fastgan: width at 128 px (Projected GAN: 128)", 4,
                  1024)
    init: str | None = _f(None, "warm start: bundled name, local folder or Hub id owner/name[@rev]")
    freeze_blocks: int = _f(0, "freeze the first K generator blocks (FreezeG)", 0)
    code_gain: float = _f(1.0, "warm start with discriminator.conditional=K: multiply the first layer's weights "
                               "that read the code z[:K] by this, so G switches between classes over a narrower "
                               "band of codes (1 = as loaded)", 0.1, 100)
    excitation: bool = _f(False, "dcgan: FastGAN's skip-layer excitation, channel gates on the last hidden block "
                                 "read from the 4x4 block (the gates start at 1)")
    balance_latent: bool = _f(False, "warm start of a dcgan generator: scale down the first layer's weights that "
                                     "read an entry of z more strongly than the median entry, so that no few entries "
                                     "carry the image (the bundled dcgan-mnist-64 reads its class code strongly)")


@dataclass
class DiscriminatorConfig:
    kind: str = _f("dcgan", "'dcgan' or 'projected'")
    ndf: int = _f(64, "dcgan: width of the first layer", 4, 1024)
    norm: Literal["batch", "spectral", "none"] = _f("batch", "dcgan: batch (the tutorial's BatchNorm), spectral "
                                                    "(spectral-norm convs) or none (plain convs, for R1); the last "
                                                    "two judge each image on its own")
    backbone: str = _f("tf_efficientnet_lite0.in1k", "timm model name for kind=projected")
    pretrained: bool = _f(True, "load ImageNet weights for the backbone")
    pretrained_file: str | None = _f(None, "local .safetensors with backbone weights")
    mode: Literal["frozen", "finetune", "partial"] = _f("frozen", "how the backbone is trained")
    trainable_from: int = _f(0, "partial mode: first trained feature stage", 0)
    backbone_lr_mult: float = _f(1.0, "learning-rate multiplier of the backbone", 0)
    out_indices: list[int] | None = _f(None, "feature levels fed to heads (default: all)")
    input_size: int | None = _f(None, "resize images to this side before the backbone, or before a dcgan "
                                       "discriminator (32, 64 or 128)", 16, 1024)
    projection: bool = _f(False, "fixed random cross-channel/scale mixing (Projected GAN CCM/CSM)")
    head_channels: int = _f(64, "base width of the multi-scale heads and projections (Projected GAN: 64)", 1, 4096)
    heads: Literal["light", "pg", "separable"] = _f("light", "head design: light (one width, no BatchNorm; the "
                                                             "cheapest), Projected GAN's (pg) or its separable variant")
    mbstd: int = _f(0, "projected: group size of a minibatch-stddev channel in each head (StyleGAN's; 0 = off)", 0, 64)
    pixel_d: bool = _f(False, "projected: also a DCGAN discriminator (width ndf) on the pixels, as one more head "
                              "(Vision-aided GAN's ensemble)")
    pixel_ndf: int = _f(64, "pixel_d: width of the pixel D's first layer", 4, 1024)
    pixel_norm: Literal["batch", "spectral", "none"] = _f("batch", "pixel_d: the pixel D's normalisation, as "
                                                                   "discriminator.norm")
    pixel_input_size: int | None = _f(None, "pixel_d: judge the pixels resized to this side (32, 64 or 128; "
                                            "default data.resolution)", 16, 1024)
    pixel_weight: float = _f(1.0, "pixel_d: its logit is multiplied by this, which scales its share of D's score "
                                  "and of G's gradient", 0)
    init: str | None = _f(None, "warm start of the discriminator; a projected one with pixel_d also takes a dcgan "
                                "discriminator's export, into its pixel D")
    freeze_blocks: int = _f(0, "freeze the first K discriminator blocks (FreezeD)", 0)
    conditional: int = _f(0, "K > 0: a class-conditional D (projection discriminator) for labelled data, mnist or "
                             "a folder with one subfolder per class: it judges real images as their class and fakes "
                             "as the class of their code, the largest of z's first K entries, so G learns to draw "
                             "class c for that code (ganxfer sample --class); 0 = off", 0, 4096)


@dataclass
class LossConfig:
    kind: Literal["bce", "hinge"] = _f("bce", "non-saturating BCE or hinge")
    r1_gamma: float = _f(0.0, "R1 penalty weight on real images (0 = off)", 0)
    r1_every: int = _f(16, "lazy R1: apply every N discriminator steps", 1)
    mode_seeking: float = _f(0.0, "weight of MSGAN's mode-seeking term in the G loss (0 = off)", 0)
    saturation: float = _f(0.0, "weight of a G-loss penalty on output values beyond +-3 before the tanh, where "
                                "the tanh passes D almost no gradient and pixels stay stuck black or white (0 = off)",
                           0)
    fine_detail: float = _f(0.0, "weight of a G-loss penalty on the detail finer than fine_detail_size, for data "
                                 "upsampled from a smaller side and a D that judges only that side (0 = off)", 0)
    fine_detail_size: int = _f(32, "the side below which fine_detail leaves the image alone", 4, 1024)
    top_k: float = _f(1.0, "Top-k training: the G loss keeps this share of each batch's fakes, those D scores "
                           "as most real (1 = all; Sinha et al. 2020 use 0.5)", 0.01, 1)
    top_k_kimg: float = _f(0.0, "kimg over which the kept share falls linearly from 1 to loss.top_k", 0)
    classifier: float = _f(0.0, "with discriminator.conditional=K: a K-way class head on D (on the pixel D of a "
                                "projected one) learns the real images' classes, and G's loss adds this weight times "
                                "CatGAN's confidence term: each fake read as some one class clearly, classes used "
                                "evenly (0 = off)", 0)


@dataclass
class AugmentConfig:
    policy: str = _f("", "DiffAugment policy: comma list of color, translation, translation_reflect (the "
                         "border filled by reflection, not zeros), cutout")


@dataclass
class OptimConfig:
    g_lr: float = _f(2e-4, "generator learning rate", 0)
    d_lr: float = _f(2e-4, "discriminator learning rate", 0)
    betas: list[float] = _f([0.5, 0.999], "Adam betas")


@dataclass
class TrainConfig:
    kimg: float = _f(25.0, "budget: thousands of real images shown to D", 0)
    minutes: float | None = _f(None, "budget in minutes of training wall time (wall_s); stops at kimg or minutes, "
                                     "whichever comes first", 0)
    batch_size: int = _f(64, "global batch size (split over processes)", 1)
    d_steps: int = _f(1, "D steps per G step", 1, 100)
    sync_bn: bool = _f(False, "with several processes, the BatchNorm2d layers of G and D (a timm backbone's excepted) "
                              "normalise by the global batch, so N processes train as one process with this "
                              "batch_size does")
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = _f("auto", "autocast precision; auto = bf16 where the "
                                                                   "GPU or CPU (AVX512-BF16, AMX) has it, else no")
    channels_last: bool = _f(True, "G's and D's weights and images in channels-last memory layout (a faster "
                                   "step; the values differ only by rounding)")
    reuse_features: bool = _f(True, "with a frozen projected D, the G step judges the D step's augmented fakes and "
                                    "reuses their backbone features (one backbone pass fewer per step; the two "
                                    "steps then share one augmentation draw)")
    ema: float = _f(0.999, "EMA decay of the exported generator (0 = no EMA)", 0, 1)
    log_every_kimg: float | None = _f(None, "metrics.jsonl row every this many kimg (null = every 20 s of training "
                                            "time; 0 = only at the end)", 0)
    sample_every_kimg: float | None = _f(None, "fixed-z sample grid every this many kimg (null = every 3 minutes of "
                                               "training time; 0 = only at the end)", 0)
    checkpoint_every_kimg: float | None = _f(None, "checkpoint every this many kimg (null = every 10 minutes of "
                                                   "training time; 0 = only at the end)", 0)
    keep_checkpoints: int = _f(2, "how many checkpoints to keep", 1)
    num_samples: int = _f(64, "images in the sample grid", 1, 1024)
    log_with: list[str] = _f(["tensorboard"], "experiment trackers, through Accelerate: tensorboard, wandb, mlflow, "
                                              "aim, comet_ml, clearml, dvclive, ... ([] = none)")
    snapshot_every_minutes: float = _f(0.0, "export the generator to RUN/snapshots/min-MMMM every N minutes of "
                                            "training wall time (0 = off)", 0)
    snapshot_at_minutes: list[float] = _f([], "also export snapshots at these minutes of training time, e.g. "
                                              "[1, 2, 5, 10]", 0)
    bn_batches: int = _f(16, "batches of train.batch_size latents that recompute the sampled (EMA) generator's "
                             "BatchNorm statistics before each grid, evaluation and export (0 = keep the live "
                             "generator's)", 0, 1000)


@dataclass
class EvalConfig:
    every_kimg: float = _f(0.0, "in-training evaluation every this many kimg (0 = off; Inception is slow on a CPU, "
                                "so turn it on where a GPU runs it, e.g. 5)", 0)
    num: int = _f(500, "generated images per evaluation (KID and precision/recall; ~2 min on a 2-core CPU)", 2)
    metrics: list[str] = _f(["kid", "pr"], "any of fid, kid, pr (pr: precision and recall on equal set sizes)")
    data: str | None = _f(None, "reference images (default: data.path)")
    num_real: int | None = _f(2000, "reference images used (null: data.limit, or all); features cached on disk", 2)
    best_metric: str = _f("kid_mean", "metric that picks RUN/generator-best: fid or kid_mean (lower is better)")
    batch: int = _f(64, "images per feature-extractor forward", 1)
    feature_extractor: str = _f("inception-v3-compat", "torch-fidelity feature extractor")


@dataclass
class Recipe:
    name: str = _f("ganxfer", "run name; the default run folder is runs/<name>")
    seed: int = _f(0, "random seed", 0, MAX_SEED)
    data: DataConfig = field(default_factory=DataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}")


def expand_env(value: str, where: str = "") -> str:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``${VAR:+alternative}`` as bash does (empty counts as unset).

    ``${VAR:-word}`` is VAR, or ``word`` when VAR is unset; ``${VAR:+word}`` is ``word`` when VAR is set, else
    nothing. A bare ``${VAR}`` that is unset is an error, and so is any VAR but ``GANXFER_*`` and
    :data:`ENV_ALLOWED`, since expanded values are written to RUN/recipe.yaml and pushed.
    """

    def sub(m: re.Match) -> str:
        name, op, word = m.groups()
        if not name.startswith("GANXFER_") and name not in ENV_ALLOWED:
            raise RecipeError(f"{where or 'recipe'}: ${{{name}}} is not expanded: recipes read only GANXFER_* and "
                              f"{', '.join(ENV_ALLOWED)}, since the expanded recipe is saved in RUN/recipe.yaml "
                              f"and pushed; pass the value with --set, or name the variable GANXFER_{name}")
        val = os.environ.get(name)
        if op == "+":
            return word if val else ""
        if val:
            return val
        if op == "-":
            return word
        raise RecipeError(f"{where}: environment variable {name} is not set; export it or use ${{{name}:-default}}")

    return _ENV.sub(sub, value)


def field_range(cls: type, name: str) -> tuple[float | None, float | None]:
    """The closed range [lo, hi] of a recipe field (None: open)."""
    meta = next(f for f in dataclasses.fields(cls) if f.name == name).metadata
    return meta.get("lo"), meta.get("hi")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str, expand: bool = True) -> Any:
    """Check ``value`` against the type hint ``tp``; convert int to float where a float is expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where, expand)
    if origin is Literal:
        if isinstance(value, bool) and ("yes" if value else "no") in args:  # YAML 1.1 reads `no` as false
            value = "yes" if value else "no"
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RecipeError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}{hint}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]", expand) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool) or tp is not bool and isinstance(value, bool):
        raise RecipeError(f"{where}: expected {tp.__name__}, got {value!r}")
    if not isinstance(value, tp):
        raise RecipeError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    if isinstance(value, str) and expand:
        value = expand_env(value, where)
    return value


def _off(default: Any) -> Callable[[Any, dict], bool]:
    return lambda value, section: value == default


# Keys that were removed, with why and what to use. A recipe or run folder that still holds one loads as long as
# the value is one the toolkit now behaves as (an old RUN/recipe.yaml lists every key, mostly at its default);
# any other value is refused in one line, rather than dropped in silence.
RETIRED: dict[str, tuple[Callable[[Any, dict], bool], str]] = {
    "loss.anchor": (_off(0.0), "its study found no gain (docs/research/bundle-mnist.md); remove it"),
    "loss.anchor_size": (lambda v, s: True, "it went with loss.anchor; remove it"),
    "loss.info_classes": (_off(0), "InfoGAN's code found no gain (docs/research/bundle-mnist.md); for classes "
                                   "from labels use discriminator.conditional; remove it"),
    "loss.info_weight": (lambda v, s: True, "it went with loss.info_classes; remove it"),
    "loss.info_cluster": (_off(0.0), "it went with loss.info_classes (docs/research/bundle-mnist.md); remove it"),
    "loss.classifier_target": (lambda v, s: v == "confident" or not s.get("classifier"),
                               "loss.classifier is now always CatGAN's confidence term ('confident'); AC-GAN's "
                               "'code' found no gain (docs/research/bundle-mnist.md); remove it"),
    "loss.saturation_edge": (_off(3.0), "the penalty now always starts at 3 (tanh(3) = 0.995); remove it"),
    "optim.g_lr_mult": (_off(1.0), "set optim.g_lr to the learning rate you want; remove it"),
}


def _build(cls: type, raw: dict[str, Any], prefix: str, source: str, expand: bool = True) -> Any:
    if not isinstance(raw, dict):
        section = prefix.rstrip('.') or 'recipe'
        raise RecipeError(f"{source}: '{section}' must be a mapping, got {raw!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        where = f"{prefix}{key}"
        if key not in fields and where in RETIRED:
            accepted, why = RETIRED[where]
            if accepted(value, raw):
                continue
            raise RecipeError(f"{source}: {where}={value!r} was retired: {why}")
        if key not in fields:
            valid = [f"{prefix}{k}" for k in fields]
            close = difflib.get_close_matches(where, valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
            raise RecipeError(f"{source}: unknown key '{where}'{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{where}.", source, expand)
            continue
        try:
            value = _coerce(value, tp, where, expand)
        except RecipeError as e:
            raise RecipeError(f"{source}: {e}") from None
        lo, hi = fields[key].metadata.get("lo"), fields[key].metadata.get("hi")
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise RecipeError(f"{source}: {where}={v!r} is not a finite number")
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if (lo is not None and v < lo) or (hi is not None and v > hi):
                    rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
                    raise RecipeError(f"{source}: {where}={v!r} is out of range; expected {rng}")
        kwargs[key] = value
    return cls(**kwargs)


def check_model_values(values: dict[str, Any], source: str) -> None:
    """Check a model ``config.json``'s arguments that recipe keys share (``resolution``, ``ngf``, ...) with
    the recipe's types and ranges; the others are the model's to check."""
    own = {"pixel_ndf"}  # 0 in a config is "no pixel D"; the model's own range check covers it
    for cls in (DataConfig, GeneratorConfig, DiscriminatorConfig):
        names = {f.name for f in dataclasses.fields(cls)} - own
        _build(cls, {k: v for k, v in values.items() if k in names}, "", source, expand=False)
    if values.get("channels", 3) not in (1, 3):
        raise RecipeError(f"{source}: channels={values['channels']}: use 1 (grayscale) or 3 (RGB)")


def describe() -> list[tuple[str, str, Any, str]]:
    """Every key as (dotted name, type, default, help): the rows of :func:`reference_table`."""
    rows = []

    def walk(cls: type, prefix: str) -> None:
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((f"{prefix}{f.name}", _type_name(tp), default, f.metadata.get("help", "")))

    walk(Recipe, "")
    return rows


def _type_name(tp: Any) -> str:
    """``int | None`` -> 'int or null', ``Literal['a', 'b']`` -> 'a, b'."""
    if typing.get_origin(tp) is Literal:
        return " / ".join(map(str, typing.get_args(tp)))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return tp.__name__


def reference_table() -> str:
    """The recipe reference as a Markdown table (README.md holds a copy; tests/test_docs.py compares)."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, tp, default, help_ in describe():
        shown = "null" if default is None else yaml.safe_dump(default, default_flow_style=True).strip()
        shown = shown.removesuffix("\n...").strip() or "''"
        lines.append(f"| `{key}` | {tp} | `{shown}` | {help_} |")
    return "\n".join(lines)
