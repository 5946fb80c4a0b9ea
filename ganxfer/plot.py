"""Quality and loss curves of one or more runs on one figure: FID/KID against kimg and wall time, and losses.

A run folder's ``metrics.jsonl`` holds training rows (``kimg, step, loss_d, loss_g, images_per_s, wall_s``;
``wall_s`` is training time, without sampling, evaluation and checkpoint writes)
and evaluation rows (``kimg, step`` and metric keys such as ``fid``, ``kid_mean``, ``kid_std``). Evaluation
rows without ``wall_s`` get it interpolated from the training rows by kimg. Legends use ``recipe.yaml``'s name.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ganxfer.errors import GanxferError
from ganxfer.paths import output_file, writing

log = logging.getLogger(__name__)
QUALITY = (("fid", "FID"), ("kid_mean", "KID"))
LOSSES = (("loss_d", "D loss"), ("loss_g", "G loss"))
FORMATS = (".png", ".pdf", ".svg")  # what --out may be
PLOTTED = ("kimg", "wall_s", "fid", "kid_mean", "kid_std", "loss_d", "loss_g")  # numbers where present


class PlotError(GanxferError):
    """A plotting problem, phrased as one line for the user."""


@dataclass
class RunLog:
    name: str
    train: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)


def read_run(run: str | Path) -> RunLog:
    """The rows of ``RUN/metrics.jsonl``, split into training and evaluation rows, named from the recipe."""
    run = Path(run)
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise PlotError(f"{run} has no metrics.jsonl; pass run folders written by 'ganxfer train'")
    name = run.name
    if (run / "recipe.yaml").is_file():
        from ganxfer.recipe import parse_yaml  # bounded: no aliases, limited nesting

        recipe = parse_yaml((run / "recipe.yaml").read_bytes().decode("utf-8", errors="replace"),
                            str(run / "recipe.yaml"))
        name = str(recipe.get("name") or name) if isinstance(recipe, dict) else name
    out = RunLog(name)
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise PlotError(f"{path}:{i} is not valid JSON") from None
        bad = [k for k in PLOTTED if isinstance(row, dict) and row.get(k) is not None and not _number(row[k])]
        if not isinstance(row, dict) or bad or ("kimg" not in row and any(k in row for k, _ in QUALITY + LOSSES)):
            what = f"{bad[0]}={row[bad[0]]!r} is not a number" if bad else "it is no row of kimg and values"
            raise PlotError(f"{path}:{i}: {what}; fix or delete that line")
        if any(k in row for k, _ in QUALITY):
            out.evals.append(row)
        elif "loss_d" in row:  # grid-diversity and snapshot rows are neither
            out.train.append(row)
    for row in out.evals:
        row.setdefault("wall_s", _wall_at(out.train, row["kimg"]))
    return out


def _number(value) -> bool:
    """A JSON number (NaN and infinities included: they plot as gaps)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _wall_at(train: list[dict], kimg: float) -> float | None:
    import numpy as np

    pts = [(r["kimg"], r["wall_s"]) for r in train if "wall_s" in r]
    if not pts:
        return None
    xs, ys = zip(*sorted(pts), strict=True)
    return float(np.interp(kimg, [0.0, *xs], [0.0, *ys]))


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plotting needs matplotlib, which this install lacks; "
                        "install it with pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_runs(runs: list[str | Path], out: str | Path) -> Path:
    """Draw every run's curves into ``out`` (PNG, PDF or SVG by suffix, :data:`FORMATS`); returns ``out``."""
    out = output_file(out, "--out", FORMATS)  # before any run is read
    fig = make_figure([read_run(r) for r in runs], [Path(r).name for r in runs])
    try:
        with writing(out, "--out"):
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out, dpi=100)
    finally:
        _pyplot().close(fig)
    return out


def make_figure(logs: list[RunLog], folders: list[str] | None = None):
    """One row per quality metric present (against kimg and wall time), then D and G losses against kimg."""
    names = [lg.name for lg in logs]
    folders = folders or [str(i + 1) for i in range(len(logs))]
    labels = [f"{n} ({f})" if names.count(n) > 1 else n for n, f in zip(names, folders, strict=True)]
    quality = [(k, label) for k, label in QUALITY if any(k in r for lg in logs for r in lg.evals)]
    if not quality:
        log.warning("no FID/KID rows in %s; plotting losses only (enable eval.every_kimg)", ", ".join(names))
    plt = _pyplot()
    rows = len(quality) + 1
    fig, axes = plt.subplots(rows, 2, figsize=(12, 3.6 * rows), squeeze=False)
    for lg, name in zip(logs, labels, strict=True):
        for row, (key, label) in enumerate(quality):
            pts = [r for r in lg.evals if key in r]
            for col, x in enumerate(("kimg", "wall_s")):
                ax = axes[row][col]
                use = [r for r in pts if r.get(x) is not None]
                xs = [r[x] / (60 if x == "wall_s" else 1) for r in use]
                ys = [r[key] for r in use]
                (line,) = ax.plot(xs, ys, marker="o", ms=3, label=name)
                if key == "kid_mean" and all("kid_std" in r for r in use):
                    lo = [r[key] - r["kid_std"] for r in use]
                    hi = [r[key] + r["kid_std"] for r in use]
                    ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
                ax.set(xlabel="kimg" if x == "kimg" else "wall time (min)", ylabel=label,
                       title=f"{label} vs {'kimg' if x == 'kimg' else 'wall time'}")
        for col, (key, label) in enumerate(LOSSES):
            pts = [r for r in lg.train if key in r]
            axes[-1][col].plot([r["kimg"] for r in pts], [r[key] for r in pts], label=name)
            axes[-1][col].set(xlabel="kimg", ylabel=label, title=f"{label} vs kimg")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
