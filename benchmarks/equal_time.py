"""The equal-time study: recipes trained for the same minutes, scored against the tutorial baseline (anime_dcgan).

Each arm is trained for the same minutes of training wall time and scored from its snapshots.

Train each arm with snapshots (one training at a time; the machine must be otherwise idle)::

    ganxfer train recipes/anime_dcgan.yaml --run-dir runs/study/anime_dcgan-s0 --set train.kimg=10000 \\
        --set train.minutes=30 --set train.snapshot_every_minutes=10 --set "train.snapshot_at_minutes=[1,2,3,5]"

then score every snapshot (KID from 500 fakes against 2,000 cached reals, precision/recall on 500 : 500, and
the share of 1,000 samples with a border artefact or a dark blotch, benchmarks/edges.py) and write the table,
the curve figure and the 8x8 grids::

    python benchmarks/equal_time.py score runs/study
    python benchmarks/equal_time.py report runs/study --baseline anime_dcgan-s0 --docs docs/equal_time
    python benchmarks/equal_time.py figure docs/equal_time/anime_dcgan-s0.jpg "..." docs/equal_time/RUN.jpg "..."

``score`` appends to ``RUN/scores.jsonl`` and skips snapshots already scored, so it can be rerun after more
arms finish. ``report`` appends rows to RESULTS.md, writes ``DOCS/<run>.jpg`` and keeps each run's scores in
``DOCS/scores/<run>.jsonl``, and draws ``DOCS/curves.png`` from those and the study's runs. Run folders are not
kept between sessions: pass ``--baseline-kid`` when the baseline's folder is gone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from pathlib import Path

import torch
import yaml
from edges import border_artefacts, dark_blotches
from results import RESULTS, append_row, git_commit, machine

HEADING = "## Equal training time on CPU: KID and recall from snapshots (benchmarks/equal_time.py)"
COLUMNS = ("| date | commit | machine | run | recipe changes | seed | img/s | kimg at end | KID x10^3 by minute | "
           "recall at end | time to the baseline's final KID | speed-up |\n" + "|---" * 12 + "|")


def rows(run: Path, file: str = "metrics.jsonl") -> list[dict]:
    path = run / file
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def snapshot_minutes(snapshot: str) -> float:
    """The training minute in a snapshot's name (``snapshots/min-10`` -> 10.0)."""
    return float(snapshot.split("min-")[1])


def score(study: Path, data: str, num: int, num_real: int, minutes: list[float] | None = None) -> None:
    """Score every snapshot not yet scored, or only those at ``minutes`` (a cheap look at pilot runs)."""
    from ganxfer import load_generator
    from ganxfer.metrics import evaluate

    for run in sorted(p for p in study.iterdir() if (p / "metrics.jsonl").is_file()):
        done = {r["snapshot"] for r in rows(run, "scores.jsonl")}
        snaps = [r for r in rows(run) if "snapshot" in r and r["snapshot"] not in done
                 and (minutes is None or snapshot_minutes(r["snapshot"]) in minutes)]
        for snap in reversed(snaps):  # the latest first: an interrupted scoring keeps the points that matter most
            res = evaluate(str(run / snap["snapshot"]), data, num=num, num_real=num_real, metrics="kid,pr")
            out = {"snapshot": snap["snapshot"], "minutes": snapshot_minutes(snap["snapshot"]),
                   "kimg": snap["kimg"], "wall_s": snap["wall_s"],
                   **{k: res[k] for k in ("kid_mean", "kid_std", "precision", "recall", "diversity", "collapse",
                                          "num_fake", "num_real")},
                   **border_artefacts((g := load_generator(str(run / snap["snapshot"]))).sample(1000, seed=0)),
                   **dark_blotches(g)}
            print(run.name, json.dumps(out))
            with open(run / "scores.jsonl", "a") as fh:
                fh.write(json.dumps(out) + "\n")


def time_to(points: list[tuple[float, float]], target: float) -> float | None:
    """The first minute at which KID reaches ``target``, interpolating log KID between snapshots (from 0 min
    when the first snapshot is already there); None when it never does."""
    prev = None
    for minutes, kid in points:
        if kid <= target:
            if prev is None:
                return minutes
            (m0, k0), (m1, k1) = prev, (minutes, kid)
            f = (math.log(k0) - math.log(target)) / max(math.log(k0) - math.log(k1), 1e-12)
            return m0 + f * (m1 - m0)
        prev = (minutes, kid)
    return None


def changes(run: Path) -> str:
    """What the run's recipe.yaml changes against the recipe file of the same name."""
    from ganxfer.recipe import differences, load_recipe

    mine = load_recipe(run / "recipe.yaml")
    base = Path("recipes") / f"{mine.name}.yaml"
    if not base.is_file():
        return "-"
    skip = ("train.kimg", "train.minutes", "train.snapshot", "train.checkpoint", "eval.", "seed", "name", "data.path")
    diff = [d for d in differences(load_recipe(base), mine) if not d.startswith(skip)]
    return "; ".join(diff).replace("|", "/") or "none"


def grid(run: Path, out: Path) -> None:
    """8x8 samples (seed 0) of the run's last snapshot, each face shown at 2x."""
    from torchvision.transforms.functional import to_pil_image
    from torchvision.utils import make_grid

    import ganxfer

    last = max((r for r in rows(run, "scores.jsonl")), key=lambda r: r["minutes"])
    images = ganxfer.load_generator(str(run / last["snapshot"])).sample(64, seed=0)
    images = torch.nn.functional.interpolate(images.float(), scale_factor=2, mode="nearest")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet = make_grid(images, nrow=8, normalize=True, value_range=(-1, 1), padding=2, pad_value=1.0)
    to_pil_image(sheet).save(out, quality=92)


def figure(panels: list[tuple[Path, str]], out: Path) -> None:
    """The README's figure: grids side by side, each under its caption (``panels``: (grid image, caption))."""
    from PIL import Image, ImageDraw, ImageFont

    grids = [Image.open(path).convert("RGB") for path, _ in panels]
    pad, top = 16, 44
    sheet = Image.new("RGB", (sum(g.width for g in grids) + pad * (len(grids) + 1),
                              max(g.height for g in grids) + top + pad), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=22)
    x = pad
    for g, (_, caption) in zip(grids, panels, strict=True):
        draw.text((x, 10), caption, fill="black", font=font)
        sheet.paste(g, (x, top))
        x += g.width + pad
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=90)


def committed(docs: Path) -> dict[str, list[dict]]:
    """The scored points kept in the repository (``DOCS/scores/<run>.jsonl``), by run: run folders are not kept
    between sessions, so the curve figure draws earlier arms from these."""
    folder = docs / "scores"
    return {p.stem: rows(folder, p.name) for p in sorted(folder.glob("*.jsonl"))} if folder.is_dir() else {}


def curves(points: dict[str, list[dict]], out: Path) -> None:
    """KID and feature spread against minutes for each run's points (a point may lack the spread or the std:
    the earliest arms' were recovered from RESULTS.md)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, pts in points.items():
        pts = sorted(pts, key=lambda r: r["minutes"])
        a.errorbar([r["minutes"] for r in pts], [r["kid_mean"] * 1e3 for r in pts],
                   [r.get("kid_std", 0.0) * 1e3 for r in pts], marker="o", label=name, capsize=2)
        div = [r for r in pts if r.get("diversity") is not None]
        b.plot([r["minutes"] for r in div], [r["diversity"] for r in div], marker="o", label=name)
    a.set(xlabel="training wall time (min, 2-core CPU)", ylabel="KID x10^3 (500 fakes vs 2,000 reals)",
          yscale="log", title="KID (lower is better)")
    from ganxfer.metrics import COLLAPSE_DIVERSITY

    b.axhline(COLLAPSE_DIVERSITY, color="grey", linestyle="--", linewidth=1, label="collapse flag below")
    b.set(xlabel="training wall time (min, 2-core CPU)", ylabel="Inception feature spread, fakes / reals",
          title="diversity (recall: see the table)")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    a.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def report(study: Path, baseline: str, docs: Path, results: Path, heading: str = HEADING,
           only: list[str] | None = None, plot: list[str] | None = None,
           baseline_kid: float | None = None, baseline_minutes: float = 30.0) -> None:
    """Rows and grids for the scored runs (``only`` these, when given: rows already in the table stay), and the
    curve figure of all of them (``plot`` these, when given).

    The speed-up is against the last scored snapshot of the ``baseline`` run in ``study``, or, when that run
    folder is gone (run folders are not kept between sessions), against ``baseline_kid`` reached at
    ``baseline_minutes``, as RESULTS.md records it."""
    runs = sorted(p for p in study.iterdir() if rows(p, "scores.jsonl"))
    if baseline_kid is not None:
        base = {"kid_mean": baseline_kid, "minutes": baseline_minutes}
    else:
        scored = rows(study / baseline, "scores.jsonl")
        if not scored:
            raise SystemExit(f"report: no scored baseline run {study / baseline}; train and score it, or pass "
                             "--baseline-kid with its recorded KID")
        base = sorted(scored, key=lambda r: r["minutes"])[-1]
    head = f"| {datetime.date.today()} | {git_commit()} | {machine()}, CPU |"
    for run in (r for r in runs if not only or r.name in only):
        pts = sorted(rows(run, "scores.jsonl"), key=lambda r: r["minutes"])
        train = [r for r in rows(run) if "loss_d" in r]
        end = train[-1]
        ips = end["kimg"] * 1000 / end["wall_s"]
        reach = time_to([(r["minutes"], r["kid_mean"]) for r in pts], base["kid_mean"])
        kid = ", ".join(f"{r['minutes']:g}: {r['kid_mean'] * 1e3:.0f}" for r in pts)
        seed = yaml.safe_load((run / "recipe.yaml").read_text())["seed"]
        reach_s = f"{reach:.1f} min" if reach is not None else "not reached"
        speed = f"{base['minutes'] / reach:.1f}x" if reach else "-"
        bound = " (at or before the first snapshot)" if reach is not None and reach == pts[0]["minutes"] else ""
        row = (f"{head} {run.name} | {changes(run)} | {seed} | {ips:.0f} | {end['kimg']:.0f} | {kid} | "
               f"{pts[-1]['recall']:.3f} | {reach_s}{bound} | {speed}{'+' if bound else ''} |")
        print(row)
        append_row(results, heading, COLUMNS, row)
        grid(run, docs / f"{run.name}.jpg")
        (docs / "scores").mkdir(parents=True, exist_ok=True)
        (docs / "scores" / f"{run.name}.jsonl").write_text((run / "scores.jsonl").read_text())
    points = {**committed(docs), **{r.name: rows(r, "scores.jsonl") for r in runs}}
    curves({k: v for k, v in points.items() if not plot or k in plot}, docs / "curves.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score")
    s.add_argument("study", type=Path)
    s.add_argument("--data", default=None, help="real images (default $GANXFER_DATA/anime-faces-64)")
    s.add_argument("--num", type=int, default=500)
    s.add_argument("--num-real", type=int, default=2000)
    s.add_argument("--minutes", type=float, nargs="*", help="score only the snapshots at these minutes")
    r = sub.add_parser("report")
    r.add_argument("study", type=Path)
    r.add_argument("--baseline", default="anime_dcgan-s0")
    r.add_argument("--docs", type=Path, default=Path("docs/equal_time"))
    r.add_argument("--results", type=Path, default=RESULTS)
    r.add_argument("--heading", default=HEADING, help="the RESULTS.md section to add the rows to")
    r.add_argument("--only", nargs="*", help="the runs to add rows and grids for (default: all scored runs)")
    r.add_argument("--plot", nargs="*", help="the runs to draw in curves.png (default: all scored runs)")
    r.add_argument("--baseline-kid", type=float, help="the baseline's final KID (e.g. 0.323 from RESULTS.md), "
                   "when its run folder is not in the study")
    r.add_argument("--baseline-minutes", type=float, default=30.0, help="the minute of --baseline-kid")
    f = sub.add_parser("figure", help="grids side by side with captions, e.g. the README's figure")
    f.add_argument("panels", nargs="+", help="GRID CAPTION GRID CAPTION ...")
    f.add_argument("--out", type=Path, default=Path("docs/equal_time/equal-time-30min.jpg"))
    args = ap.parse_args()
    if args.cmd == "figure":
        if len(args.panels) % 2:
            raise SystemExit("figure: give a caption after each grid")
        figure([(Path(g), c) for g, c in zip(args.panels[::2], args.panels[1::2], strict=True)], args.out)
        return
    if args.cmd == "score":
        import os

        data = args.data or f"{os.environ['GANXFER_DATA']}/anime-faces-64"
        score(args.study, data, args.num, args.num_real, args.minutes)
    else:
        report(args.study, args.baseline, args.docs, args.results, args.heading, args.only, args.plot,
               args.baseline_kid, args.baseline_minutes)


if __name__ == "__main__":
    main()
