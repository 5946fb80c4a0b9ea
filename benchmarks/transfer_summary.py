"""Summarise a warm-start study written by ``benchmarks/transfer_study.sh``: a KID table and a sample figure.

Reads ``STUDY/{anime_from_mnist,anime_scratch_projected}{,-start}``: the in-training KID rows of each run's
``metrics.jsonl`` and the kimg-0 score of each starting generator (``-start.json``). Appends one row per
evaluated kimg (warm KID, scratch KID, their ratio) to RESULTS.md, and draws ``STUDY/samples.png``: the same
16 latents through both generators at kimg 0 and at the end of the budget.

    python benchmarks/transfer_summary.py runs/transfer_study --figure docs/warm_start_samples.jpg
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch
import yaml
from results import RESULTS, append_row, git_commit, machine
from torchvision.utils import save_image

import ganxfer

WARM, SCRATCH = "anime_from_mnist", "anime_scratch_projected"
HEADING = "## Warm start vs scratch: KID during training (benchmarks/transfer_study.sh, transfer_summary.py)"
COLUMNS = ("| date | commit | machine | seed | kimg | warm start KID x10^3 | scratch KID x10^3 | warm / scratch | "
           "fakes : reals | training wall s (warm, scratch) |\n|---|---|---|---|---|---|---|---|---|---|")


def kid_rows(study: Path, name: str) -> tuple[dict[float, tuple[float, float, float | None]], dict]:
    """kimg -> (kid_mean, kid_std, training wall_s) for one arm (kimg 0 from the -start score), and that score.

    In-training evaluation uses the study's --num/--num-real, so the -start score's sample counts hold for all.
    """
    start = json.loads((study / f"{name}-start.json").read_text())
    rows = {0.0: (start["kid_mean"], start["kid_std"], 0.0)}
    lines = [json.loads(x) for x in (study / name / "metrics.jsonl").read_text().splitlines() if x.strip()]
    walls = {r["kimg"]: r["wall_s"] for r in lines if "wall_s" in r}
    rows.update({r["kimg"]: (r["kid_mean"], r["kid_std"], walls.get(r["kimg"])) for r in lines if "kid_mean" in r})
    return rows, start


def figure(study: Path, out: Path, n: int = 16) -> None:
    """Rows: warm start at kimg 0, warm start at the end, scratch at kimg 0, scratch at the end; same z."""
    grids = [ganxfer.load_generator(str(study / run / "generator")).sample(n, seed=0)
             for run in (f"{WARM}-start", WARM, f"{SCRATCH}-start", SCRATCH)]
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(grids), str(out), nrow=n, normalize=True, value_range=(-1, 1), padding=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", type=Path, nargs="?", default=Path("runs/transfer_study"))
    ap.add_argument("--figure", type=Path,
                    help="where to write the sample figure (default STUDY/samples.png; .jpg keeps it small)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    (warm, start), (scratch, _) = kid_rows(args.study, WARM), kid_rows(args.study, SCRATCH)
    device = "CUDA " + torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    seed = yaml.safe_load((args.study / WARM / "recipe.yaml").read_text())["seed"]
    head = f"| {datetime.date.today()} | {git_commit()} | {machine()}, {device} | {seed} |"
    for kimg in sorted(set(warm) & set(scratch)):
        (w, ws, tw), (s, ss, ts) = warm[kimg], scratch[kimg]
        wall = f"{tw:.0f}, {ts:.0f}" if tw is not None and ts is not None else "-"
        row = (f"{head} {kimg:g} | {w * 1e3:.1f} ± {ws * 1e3:.1f} | {s * 1e3:.1f} ± {ss * 1e3:.1f} | "
               f"{w / s:.2f}x | {start['num_fake']} : {start['num_real']} | {wall} |")
        print(row)
        append_row(args.results, HEADING, COLUMNS, row)
    figure(args.study, args.figure or args.study / "samples.png")


if __name__ == "__main__":
    main()
