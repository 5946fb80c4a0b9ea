"""``ganxfer plot``: curves of several runs on one figure, from run folders written like the loop writes them."""

import json
import sys

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from ganxfer.cli import main
from ganxfer.plot import PlotError, make_figure, read_run


def make_run(folder, name, speed, evals=True):
    """A run folder as the loop leaves it: recipe.yaml plus training and evaluation rows in metrics.jsonl."""
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"name": name, "seed": 0}))
    rows = []
    for i in range(1, 9):
        kimg = i * 0.5
        rows.append({"kimg": kimg, "step": i * 8, "loss_d": 1.4 - 0.05 * i, "loss_g": 0.7 + 0.1 * i,
                     "images_per_s": 20.0, "wall_s": kimg * 1000 / 20.0})
        if evals and i % 2 == 0:
            rows.append({"kimg": kimg, "step": i * 8, "kid_mean": 0.3 / (speed * i), "kid_std": 0.01,
                         "fid": 300 / (speed * i), "eval_s": 3.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_two_runs_on_one_figure(tmp_path):
    a = make_run(tmp_path / "a", "anime_from_mnist", speed=3)
    b = make_run(tmp_path / "b", "anime_dcgan", speed=1)
    out = tmp_path / "curves.png"
    res = CliRunner().invoke(main, ["plot", str(a), str(b), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (1200, 1080)  # three rows (FID, KID, losses) of two panels

    fig = make_figure([read_run(a), read_run(b)])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["FID vs kimg", "FID vs wall time", "KID vs kimg", "KID vs wall time", "D loss vs kimg",
                      "G loss vs kimg"]
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["anime_from_mnist", "anime_dcgan"]
    kid_wall = fig.axes[3].get_lines()[0]
    assert list(kid_wall.get_xdata()) == pytest.approx([50 / 60, 100 / 60, 150 / 60, 200 / 60])  # minutes
    assert list(kid_wall.get_ydata()) == pytest.approx([0.3 / 6, 0.3 / 12, 0.3 / 18, 0.3 / 24])


def test_eval_rows_get_wall_time_from_training_rows(tmp_path):
    run = make_run(tmp_path / "r", "x", speed=1)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines.insert(1, json.dumps({"kimg": 0.75, "step": 12, "kid_mean": 0.2, "kid_std": 0.01}))  # between rows
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    log = read_run(run)
    assert len(log.train) == 8 and len(log.evals) == 5
    assert log.evals[0]["wall_s"] == pytest.approx(37.5)


def test_runs_without_evaluation_plot_losses_and_same_names_get_folders(tmp_path):
    a = make_run(tmp_path / "first", "same", speed=1, evals=False)
    b = make_run(tmp_path / "second", "same", speed=1, evals=False)
    fig = make_figure([read_run(a), read_run(b)], ["first", "second"])
    assert [ax.get_title() for ax in fig.axes] == ["D loss vs kimg", "G loss vs kimg"]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["same (first)", "same (second)"]


def test_missing_log_is_one_line(tmp_path):
    res = CliRunner().invoke(main, ["plot", str(tmp_path), "--out", str(tmp_path / "c.png")])
    assert res.exit_code == 2 and "has no metrics.jsonl" in res.output
    with pytest.raises(PlotError):
        read_run(tmp_path)


def test_missing_matplotlib_names_the_install(tmp_path, monkeypatch):
    run = make_run(tmp_path / "r", "x", speed=1)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # a broken install
    res = CliRunner().invoke(main, ["plot", str(run), "--out", str(tmp_path / "c.png")])
    assert res.exit_code == 2 and "pip install matplotlib" in res.output
