"""FID, KID and precision/recall from torch-fidelity's Inception features, with an on-disk reference cache.

How each number is made:

- Features: torch-fidelity's ``inception-v3-compat`` (the TF FID Inception, 2015-12-05), 2048-d pool features,
  for every metric (precision/recall included; torch-fidelity's own default for it would be VGG-16).
  Weights come from torch-fidelity's download cache, ``$TORCH_HOME/hub/checkpoints``.
- Real images go through :func:`ganxfer.data.load_data`, the training resize path; generated images are
  quantised to uint8 with :func:`ganxfer.data.to_uint8`, exactly like saved PNGs. Grayscale is repeated to RGB.
- KID and precision/recall are torch-fidelity's own functions on those features (``kid_features_to_metric``,
  ``prc_features_to_metric``), with the generated set as its ``input1`` and the real set as ``input2``, so
  they equal ``torch_fidelity.calculate_metrics(..., feature_extractor='inception-v3-compat')`` on the same
  images. KID uses 100 subsets of ``min(1000, n // 2)`` images (``n`` the smaller set), which is
  torch-fidelity's 1000 whenever both sides hold 2000 or more.
- FID is the same Fréchet distance, but ``Tr sqrt(S1 S2)`` is taken as the nuclear norm of ``L1^T L2``
  (``S = L L^T``) in float64 rather than torch-fidelity's general ``eigvals`` of the 2048x2048 product, which
  takes ~25 s per call on these CPUs. The two agree to ~1e-4 (the noise of ``eigvals`` on near-zero
  eigenvalues); the tests hold them to 1e-3 against ``calculate_metrics``.
- Features of image sets (the reference data, or a folder given as SOURCE) are cached as safetensors in
  ``$GANXFER_CACHE/fid-stats`` (default ``~/.cache/ganxfer/fid-stats``), keyed by a fingerprint of the files
  (names, sizes, mtimes) and the preprocessing (resolution, channels, limit, extractor).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ganxfer.data import ImageSet, load_data
from ganxfer.errors import GanxferError
from ganxfer.features import (
    EXTRACTOR,
    cached_features,
    dataset_features,
    device_of,
    features_of,
    generated_batches,
    load_extractor,
    rgb,
)
from ganxfer.images import list_images, open_image
from ganxfer.schema import METRICS, MIN_EVAL_SIDE, MIN_IMAGES, DataConfig, field_range
from ganxfer.sources import load_generator, pick_device
from ganxfer.version import __version__

log = logging.getLogger(__name__)

KEYS = ("fid", "kid_mean", "kid_std", "precision", "recall", "diversity")
# Inception-feature spread of the fakes over the reals'. Measured (500 vs 2,000 anime faces): 0.80 and 0.81 for
# two runs drawing one face template, 0.69 in a palette collapse, 0.94 to 1.04 for runs drawing varied faces.
COLLAPSE_DIVERSITY = 0.85
COLLAPSE_GRID = 0.7  # pixel spread of the fixed-z grid (16x16 thumbnails) relative to as many real images
MAX_RESOLUTION = int(field_range(DataConfig, "resolution")[1])  # image side, as in recipes
KID_SUBSETS = 100
# Generated images when --num is not given. Inception runs at ~2-9 images/s on a 2-core CPU (measured: 110-220 s
# per 1,000 images on a quiet machine, 490-630 s on a busy one; benchmarks/inception_speed.py), so 10,000 take
# from 20 minutes to well over an hour there.
DEFAULT_NUM_GPU, DEFAULT_NUM_CPU = 10_000, 1_000
PROBE = 8  # images timed (after as many for warm-up) to estimate how long an evaluation takes here


class MetricsError(GanxferError):
    """An evaluation problem, phrased as one line for the user."""


def parse_metrics(spec: str | list[str]) -> list[str]:
    names = [m.strip().lower() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise MetricsError(f"unknown metric {', '.join(bad) or '(none)'}; choose from {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


def default_num(device: torch.device | str) -> int:
    """Generated images scored when none are asked for: 10,000 on an accelerator, 1,000 on a CPU."""
    return DEFAULT_NUM_CPU if torch.device(device).type == "cpu" else DEFAULT_NUM_GPU


# --- metrics -------------------------------------------------------------------------------------------------


def _cov_factor(x: torch.Tensor) -> torch.Tensor:
    """``L`` (d, k) with ``L @ L.T`` the sample covariance of rows ``x``; k = min(n, d)."""
    xc = x - x.mean(0)
    n, d = xc.shape
    if n <= d:
        return xc.T / math.sqrt(n - 1)
    w, v = torch.linalg.eigh(xc.T @ xc / (n - 1))
    return v * w.clamp(min=0).sqrt()


def frechet_distance(fake: torch.Tensor, real: torch.Tensor) -> float:
    """FID of two feature sets: |mu1 - mu2|^2 + Tr S1 + Tr S2 - 2 Tr sqrt(S1 S2), in float64."""
    x1, x2 = fake.double().cpu(), real.double().cpu()
    l1, l2 = _cov_factor(x1), _cov_factor(x2)
    tr_covmean = torch.linalg.svdvals(l1.T @ l2).sum()
    mean_term = (x1.mean(0) - x2.mean(0)).square().sum()
    return float(mean_term + l1.square().sum() + l2.square().sum() - 2 * tr_covmean)


def equal_sizes(fake: torch.Tensor, real: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The two sets cut to the smaller one's size (a fixed random subset): k-NN precision/recall compares
    neighbourhood radii, which shrink with set size, so the method assumes two sets of one size."""
    n = min(len(fake), len(real))
    rng = torch.Generator().manual_seed(seed)
    pick = lambda x: x if len(x) == n else x[torch.randperm(len(x), generator=rng)[:n]]  # noqa: E731
    return pick(fake), pick(real)


def spread(x: torch.Tensor, max_items: int = 1000) -> float:
    """Mean pairwise Euclidean distance between rows (the first ``max_items``)."""
    x = x[:max_items].double().flatten(1)
    n = len(x)
    return float(torch.cdist(x, x).sum() / max(1, n * (n - 1)))


def thumbnails(images: torch.Tensor) -> torch.Tensor:
    """16x16 RGB versions, where the spread of a set says how varied it is at the level of layout and colour."""
    return torch.nn.functional.adaptive_avg_pool2d(rgb(images.float()), 16)


def diversity(fake: torch.Tensor, real: torch.Tensor) -> float:
    """How spread the generated set is relative to the real one (features or images): ~1 for a healthy
    generator, near 0 when every sample is the same (mode collapse)."""
    return spread(fake) / max(spread(real), 1e-12)


def kid_subset(n_fake: int, n_real: int) -> int:
    return min(1000, min(n_fake, n_real) // 2)


def compute_metrics(fake: torch.Tensor, real: torch.Tensor, metrics: list[str] = ("fid", "kid", "pr"),
                    kid_subset_size: int | None = None, kid_subsets: int = KID_SUBSETS) -> dict[str, float]:
    """FID, KID (torch-fidelity's) and precision/recall (torch-fidelity's, batched to bound memory) of
    generated (``fake``) against real features."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    n = min(len(fake), len(real))
    for m in metrics:
        if n < MIN_IMAGES[m]:
            raise MetricsError(f"{m} needs at least {MIN_IMAGES[m]} images on each side; got {len(fake)} "
                               f"generated and {len(real)} real")
    out: dict[str, float] = {}
    fake, real = fake.float().cpu(), real.float().cpu()
    if "fid" in metrics:
        out["fid"] = frechet_distance(fake, real)
    if "kid" in metrics:
        size = kid_subset_size or kid_subset(len(fake), len(real))
        if not 2 <= size <= n:
            raise MetricsError(f"KID subset size {size} must be between 2 and {n} (the smaller set)")
        kid = kid_features_to_metric(fake, real, kid_subset_size=size, kid_subsets=kid_subsets, verbose=False)
        out["kid_mean"], out["kid_std"] = kid[KEY_METRIC_KID_MEAN], kid[KEY_METRIC_KID_STD]
    if "pr" in metrics:
        pr = prc_features_to_metric(*equal_sizes(fake, real), save_cpu_ram=True, verbose=False)
        out["precision"], out["recall"] = pr[KEY_METRIC_PRECISION], pr[KEY_METRIC_RECALL]
    out["diversity"] = diversity(fake, real)
    return {k: float(v) for k, v in out.items()}


def collapsed(scores: dict) -> bool:
    """The collapse flag: the generated set's Inception features are much less spread than the real ones'.

    Recall is not part of it: early in training it is ~0 for varied but blurry samples too (measured: 0.004
    for the 30-minute tutorial baseline, whose features spread 1.04x as much as the reals').
    """
    return scores.get("diversity", 1.0) < COLLAPSE_DIVERSITY


def versions() -> dict[str, str]:
    try:
        import torch_fidelity

        fidelity = torch_fidelity.__version__
    except ImportError:
        fidelity = "missing"
    return {"torch": torch.__version__, "torch_fidelity": fidelity, "ganxfer": __version__}


# --- evaluate ------------------------------------------------------------------------------------------------


def is_image_source(source: str) -> bool:
    """A folder or zip of images rather than a generator (exported folder, run folder, name or Hub id)."""
    path = Path(source).expanduser()
    if path.is_file():
        return zipfile.is_zipfile(path)
    markers = ("config.json", "generator", "recipe.yaml")  # an exported folder or a run folder
    return path.is_dir() and not any((path / m).exists() for m in markers)


def evaluate(source: str, data: str, num: int | None = None, num_real: int | None = None,
             metrics: str | list[str] = "fid,kid,pr", batch: int = 64, resolution: int | None = None,
             kid_subset_size: int | None = None, seed: int = 0, device: str | None = None,
             extractor: str = EXTRACTOR, cache: Path | None = None,
             say: Callable[[str], None] | None = None, warn_real: bool = True) -> dict:
    """Score SOURCE (a generator source or a folder/zip of images) against the real images at ``data``.

    ``num`` generated images (default :func:`default_num`: 10,000 on an accelerator, 1,000 on a CPU; for an image
    folder, its first ``num``, default all) against the first ``num_real`` images of ``data`` (default all), at
    the generator's resolution and channels (for an image folder: RGB at its first image's short side, unless
    ``resolution`` is given). With ``say``, one line before any features are extracted tells how many images will
    be and, from a timed probe, about how long that takes here (:func:`plan_line`). A source folder holding fewer
    than ``num`` images, or data fewer than ``num_real`` (with ``warn_real``), is scored with what it holds, and
    a warning says so.
    """
    names = parse_metrics(metrics)
    t0 = time.time()
    dev = pick_device(device)
    if resolution is not None and not MIN_EVAL_SIDE <= resolution <= MAX_RESOLUTION:
        raise MetricsError(f"--resolution {resolution} is out of range; expected {MIN_EVAL_SIDE} (the smallest side "
                           f"FID and KID are reported at) to {MAX_RESOLUTION}")
    generator = None
    if not is_image_source(source):  # a bad generator fails before the feature network loads
        generator = load_generator(source).to(dev)
    net = load_extractor(extractor, dev)  # missing weights fail before any image is read
    if generator is None:
        side, channels = resolution or max(_first_image_side(source), MIN_EVAL_SIDE), 3
        fake_cfg = DataConfig(path=str(source), resolution=side, channels=3, limit=num)
        fake_hit, fake_data = _cached_or_loaded(fake_cfg, net, cache)
    else:
        _, channels, side, _ = generator.sample(1, seed=seed).shape
        if resolution and resolution != side:
            raise MetricsError(f"--resolution {resolution} differs from the generator's {side}; drop it")
        if side < MIN_EVAL_SIDE:
            raise MetricsError(f"{source} makes {side}px images, below the {MIN_EVAL_SIDE}px evaluation scores; "
                               "evaluate a generator of a larger side")
        num = num or default_num(dev)
    real_cfg = DataConfig(path=str(data), resolution=side, channels=channels, limit=num_real)
    real_hit, real_data = _cached_or_loaded(real_cfg, net, cache)  # a bad --data fails before extraction
    n_real = len(real_hit if real_hit is not None else real_data)
    if generator is None and num and len(fake_hit if fake_hit is not None else fake_data) < num:
        log.warning("--num %d: %s holds %d readable images; scoring those", num, source,
                    len(fake_hit if fake_hit is not None else fake_data))
    if warn_real and num_real and n_real < num_real:
        log.warning("--num-real %d: %s holds %d readable images; scoring those", num_real, data, n_real)
    if say is not None:
        n_fake = num if generator is not None else len(fake_hit if fake_hit is not None else fake_data)
        fake_todo = n_fake if generator is not None or fake_hit is None else 0
        real_todo = 0 if real_hit is not None else len(real_data)
        rate = images_per_second(net, side) if fake_todo + real_todo else None
        bigger = DEFAULT_NUM_GPU if generator is not None and num < DEFAULT_NUM_GPU else None
        say(plan_line(n_fake, n_real, fake_todo, real_todo,
                      "generated" if generator is not None else "source", dev, net.name, rate, bigger))
    cached = {}
    if generator is None:
        fake, cached["fake"] = (fake_hit, True) if fake_hit is not None else \
            dataset_features(fake_cfg, net, batch, cache, data=fake_data)
    else:
        fake = features_of(generated_batches(generator, num, batch, seed), net, num,
                           desc="features of generated images")
    real, cached["real"] = (real_hit, True) if real_hit is not None else \
        dataset_features(real_cfg, net, batch, cache, data=real_data)
    scores = compute_metrics(fake, real, names, kid_subset_size)
    return {**{k: scores.get(k) for k in KEYS}, "num_fake": len(fake), "num_real": len(real),
            "collapse": collapsed(scores), "metrics": names, "feature_extractor": net.name,
            "feature_dim": int(fake.shape[1]),
            "kid_subset_size": (kid_subset_size or kid_subset(len(fake), len(real))) if "kid" in names else None,
            "kid_subsets": KID_SUBSETS if "kid" in names else None,
            "source": str(source), "data": str(data), "resolution": side, "channels": channels,
            "cache_hit": cached, "device": str(dev),
            "seconds": round(time.time() - t0, 2), "versions": versions()}


def _cached_or_loaded(cfg: DataConfig, extractor: nn.Module, cache: Path | None) -> tuple[torch.Tensor | None,
                                                                                           ImageSet | None]:
    """(cached features, None) on a cache hit, else (None, the images): what is left to extract is known."""
    hit = cached_features(cfg, extractor.name, cache, device_of(extractor))
    return (hit, None) if hit is not None else (None, load_data(cfg))


@torch.no_grad()
def images_per_second(extractor: nn.Module, side: int, n: int = PROBE) -> float:
    """Images/s of ``extractor`` on this machine now: ``n`` random uint8 images of ``side`` px, timed after one
    warm-up pass of as many (allocations, kernel choice). Torch's global random state is not consumed."""
    device = next(extractor.parameters(), torch.empty(0)).device
    x = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    extractor(x)
    sync()
    t = time.perf_counter()
    extractor(x)
    sync()
    return n / max(time.perf_counter() - t, 1e-6)


def plan_line(n_fake: int, n_real: int, fake_todo: int, real_todo: int, what: str, device: torch.device | str,
              extractor: str, rate: float | None, bigger: int | None = None) -> str:
    """What an evaluation is about to do: images scored, how many need features, the rate measured here and the
    time it implies; with ``bigger``, the time ``--num bigger`` would take. Times are rounded to whole minutes:
    a probe of a few images on a shared CPU says no more."""
    name = "Inception" if extractor == EXTRACTOR else extractor
    head = f"scoring {n_fake:,} {what} + {n_real:,} real images with {name} on {device}"
    todo = fake_todo + real_todo
    if not todo or not rate:
        return f"{head}: all features cached"
    cached = n_fake + n_real - todo
    line = (f"{head}: {todo:,} to extract{f' ({cached:,} cached)' if cached else ''} at {_rate(rate)} images/s "
            f"(timed here on {PROBE} just now): {_duration(todo / rate)}")
    if bigger:
        line += f"; --num {bigger} would take {_duration((bigger + real_todo) / rate)}"
    return line


def _rate(rate: float) -> str:
    """Two significant figures: ``8.9``, ``47``, ``1,300``."""
    return f"{rate:.1f}" if rate < 10 else f"{float(f'{rate:.2g}'):,.0f}"


def _duration(seconds: float) -> str:
    """``under a minute``, ``about 7 min``, ``about 2.6 h``."""
    if seconds < 60:
        return "under a minute"
    return f"about {seconds / 60:.0f} min" if seconds < 90 * 60 else f"about {seconds / 3600:.1f} h"


def _first_image_side(source: str) -> int:
    """The short side of the first image of SOURCE that opens (through the training guards)."""
    path = Path(source).expanduser()
    names = list_images(path)
    for name in names:
        try:
            with open_image(path, name) as img:
                side = min(img.size)
        except Exception:  # unreadable, too large or a decompression bomb: the next one decides
            continue
        if side > MAX_RESOLUTION:
            raise MetricsError(f"{source}: its images are {side}px; pass --resolution (at most {MAX_RESOLUTION})")
        return side
    raise MetricsError(f"{source} holds no readable images" if names else f"{source} holds no images")


def format_table(result: dict) -> str:
    """The terminal table of an :func:`evaluate` result."""
    rows = []
    if result.get("fid") is not None:
        rows.append(("FID", f"{result['fid']:.4f}"))
    if result.get("kid_mean") is not None:
        rows.append(("KID", f"{result['kid_mean']:.6f} ± {result['kid_std']:.6f}"
                            f"  ({result['kid_subsets']} subsets of {result['kid_subset_size']})"))
    if result.get("precision") is not None:
        rows.append(("precision", f"{result['precision']:.4f}"))
        rows.append(("recall", f"{result['recall']:.4f}"))
    if result.get("diversity") is not None:
        flag = "  COLLAPSE: the samples are far less varied than the real images" if result.get("collapse") else ""
        rows.append(("diversity", f"{result['diversity']:.3f}  (feature spread, fakes / reals){flag}"))
    hits = result["cache_hit"]
    rows += [("generated" if "fake" not in hits else "source images", f"{result['num_fake']}"
              + (f"  (cache {'hit' if hits['fake'] else 'miss'})" if "fake" in hits else "")),
             ("real", f"{result['num_real']}  (cache {'hit' if hits['real'] else 'miss'})"),
             ("features", f"{result['feature_extractor']} ({result['feature_dim']}-d) on {result['device']}, "
                          f"{result['resolution']}px, {result['channels']} channel(s)"),
             ("versions", ", ".join(f"{k} {v}" for k, v in result["versions"].items()))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# --- in-training evaluation ---------------------------------------------------------------------------------


class TrainingEvaluator:
    """Scores the generator during training: ``eval.num`` images against the cached reference features.

    The reference is ``eval.data`` (default ``data.path``) through the training ``data.*`` preprocessing,
    limited to ``eval.num_real`` images (default: ``data.limit`` for the training data, else all). Only the
    main process loads Inception and evaluates; the others return ``{}`` and wait for it at a barrier. With
    several processes, keep an evaluation short of the process-group timeout: precompute the reference cache
    with ``ganxfer evaluate`` and keep ``eval.num`` moderate.
    """

    def __init__(self, recipe, device: torch.device | str) -> None:
        from accelerate import PartialState

        ev = recipe.eval
        self.metrics = parse_metrics(ev.metrics)  # eval.best_metric and eval.num: checked by recipe.check
        need = max(MIN_IMAGES[m] for m in self.metrics)
        self.num, self.batch, self.seed = ev.num, ev.batch, recipe.seed
        self.is_main = PartialState().is_main_process
        self.extractor, self.real = None, None
        if self.is_main:
            limit = ev.num_real or (recipe.data.limit if ev.data is None else None)
            if ev.num_real and recipe.data.limit and ev.data is None:
                limit = min(ev.num_real, recipe.data.limit)
            cfg = dataclasses.replace(recipe.data, path=ev.data or recipe.data.path, limit=limit)
            self.extractor = load_extractor(ev.feature_extractor, device)
            self.real, hit = dataset_features(cfg, self.extractor, self.batch)
            if len(self.real) < need:
                raise MetricsError(f"{cfg.path} gives {len(self.real)} reference images; {need} or more needed")
            log.info("in-training evaluation: %s on %d generated vs %d real images (reference cache %s)",
                     ",".join(self.metrics), self.num, len(self.real), "hit" if hit else "miss")

    def __call__(self, generator: nn.Module, acc) -> dict[str, float]:
        """The scores on the main process (plus ``eval_s``, seconds taken); ``{}`` on the others."""
        if not self.is_main:
            acc.wait_for_everyone()
            return {}
        t0 = time.time()
        fake = features_of(generated_batches(generator, self.num, self.batch, self.seed), self.extractor)
        scores = compute_metrics(fake, self.real, self.metrics)
        scores["collapse"] = collapsed(scores)
        if scores["collapse"]:
            log.warning("possible mode collapse: diversity %.3f (fakes / reals), recall %s", scores["diversity"],
                        f"{scores['recall']:.3f}" if "recall" in scores else "not measured")
        scores["eval_s"] = round(time.time() - t0, 3)
        acc.wait_for_everyone()
        return scores
