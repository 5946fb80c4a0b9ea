"""A one-off study, not a maintained benchmark: the exported EMA rebuilt with other horizons, against the recipe's.

Which horizon should the exported EMA generator average over? Rebuilt after the fact from weight dumps. The study
is done (docs/research/losses-and-levers.md: longer horizons do not pay); the script stays because
tests/test_ema.py checks its arithmetic.

Train with every checkpoint kept (``--set train.keep_checkpoints=1000``; they are 5 kimg apart in the
recipes), or copy ``G.safetensors``, ``ema.safetensors`` and ``trainer.json`` out of each as the run writes
them, then::

    python benchmarks/posthoc_ema.py runs/s5/nocut-s2 runs/s5/nocut-s2/checkpoints --out runs/s5/ema/nocut-s2

For each schedule the EMA at the last dump is rebuilt from the live weights, taken as linear in the step
between dumps, with the run's warm-started generator as step 0. BatchNorm is recalibrated as the loop does it
before an export, and each export is scored (KID from 500 fakes against 2,000 reals, precision/recall on
500 : 500). The recipe's own schedule is rebuilt too, as a check on the interpolation: the script prints its
distance to the run's real ``ema.safetensors``; compare its scores with the run's last snapshot's (within 0.001
and 0.005 KID on the two runs of
docs/research/losses-and-levers.md: good enough to rank horizons rebuilt alike, not to the last digit).

Schedules (``t`` is the step, ``r`` a fraction of the steps so far):

- ``recipe``: the loop's own, :func:`ganxfer.ema.ema_decay`: ``min(train.ema, (1 + t) / (10 + t))``, a
  half-life of about 0.077 t until ``train.ema`` caps it;
- ``rampup-R``: StyleGAN2-ADA's ``ema_rampup`` without its cap, a half-life of ``R * t`` steps.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import safetensors.torch
import torch

from ganxfer.ema import ema_decay, recalibrated

Schedule = Callable[[int], float]


def schedules(ema: float, rampups: list[float]) -> dict[str, Schedule]:
    """Per-step decay by name; each takes the step count before the update, as the loop's update_ema does."""
    out: dict[str, Schedule] = {"recipe": lambda t: ema_decay(t, ema)}
    for r in rampups:
        out[f"rampup-{r:g}"] = lambda t, r=r: 0.5 ** (1 / max(r * (t + 1), 1e-8))
    return out


def coefficients(beta: Schedule, s0: int, s1: int) -> tuple[float, float, float]:
    """``(p, a, b)`` with EMA(s1) = p EMA(s0) + a G(s0) + b G(s1) for G linear in the step between them."""
    p, a, b = 1.0, 0.0, 0.0
    for t in range(s0 + 1, s1 + 1):  # the update after step t sees G(t), with the decay of step count t - 1
        k = beta(t - 1)
        w = (t - s0) / (s1 - s0)
        p, a, b = k * p, k * a + (1 - k) * (1 - w), k * b + (1 - k) * w
    return p, a, b


def rebuild(beta: Schedule, start: dict[str, torch.Tensor], dumps: list[tuple[int, dict[str, torch.Tensor]]],
            keys: list[str]) -> dict[str, torch.Tensor]:
    """The EMA of ``keys`` (the parameters) at the last dump, from ``start`` at step 0."""
    ema = {k: start[k].double() for k in keys}
    prev_step, prev = 0, start
    for step, state in dumps:
        p, a, b = coefficients(beta, prev_step, step)
        ema = {k: p * ema[k] + a * prev[k].double() + b * state[k].double() for k in keys}
        prev_step, prev = step, state
    return {k: v.float() for k, v in ema.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="the run folder (its recipe.yaml)")
    ap.add_argument("dumps", type=Path, help="the run's checkpoints/ (or copies of its step-*/ folders)")
    ap.add_argument("--out", type=Path, required=True, help="where the exports and scores.jsonl go")
    ap.add_argument("--rampup", type=float, nargs="*", default=[0.05, 0.15, 0.3])
    ap.add_argument("--data", default=None, help="real images (default: the run's data.path)")
    ap.add_argument("--num", type=int, default=500)
    ap.add_argument("--num-real", type=int, default=2000)
    args = ap.parse_args()

    from ganxfer.metrics import evaluate
    from ganxfer.nets import build_generator, export_model
    from ganxfer.recipe import load_recipe
    from ganxfer.transfer import warm_start_generator

    recipe = load_recipe(args.run / "recipe.yaml")
    G = build_generator(recipe)
    if recipe.generator.init:
        G = warm_start_generator(G, recipe, None)
    start = {k: v.detach().clone() for k, v in G.state_dict().items()}
    keys = [k for k, _ in G.named_parameters()]
    folders = sorted(p for p in args.dumps.glob("step-*") if (p / "trainer.json").is_file())  # by images seen
    if not folders:
        raise SystemExit(f"posthoc_ema: {args.dumps} holds no complete step-*/ checkpoint folders")
    dumps = [(json.loads((p / "trainer.json").read_text())["step"], safetensors.torch.load_file(p / "G.safetensors"))
             for p in folders]
    real_ema = safetensors.torch.load_file(folders[-1] / "ema.safetensors")
    last_step, last = dumps[-1]
    print(f"{len(dumps)} dumps, steps {dumps[0][0]}..{last_step}")
    data = args.data or recipe.data.path
    tr = recipe.train
    for name, beta in schedules(tr.ema, args.rampup).items():
        ema = rebuild(beta, start, dumps, keys)
        half = math.log(0.5) / math.log(beta(last_step))
        if name == "recipe":
            err = math.sqrt(sum((ema[k] - real_ema[k]).pow(2).sum().item() for k in keys))
            gap = math.sqrt(sum((last[k].float() - real_ema[k]).pow(2).sum().item() for k in keys))
            print(f"recipe rebuilt: |rebuilt - real EMA| = {err:.4g}, |live G - real EMA| = {gap:.4g}")
        G.load_state_dict({**last, **ema})
        folder = export_model(recalibrated(G, tr.bn_batches, tr.batch_size, seed=recipe.seed),
                              args.out / name, "generator")
        res = evaluate(str(folder), data, num=args.num, num_real=args.num_real, metrics="kid,pr")
        out = {"schedule": name, "step": last_step, "half_life_steps": round(half),
               **{k: res[k] for k in ("kid_mean", "kid_std", "precision", "recall", "diversity")}}
        print(json.dumps(out))
        with open(args.out / "scores.jsonl", "a") as fh:
            fh.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
