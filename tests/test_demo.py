"""The demo page: its arithmetic on the bundled generator, its one-line errors, and the page itself in headless
Chromium (``-m browser``), served by a real ``ganxfer demo dcgan-mnist-64`` process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from ganxfer.cli import main
from ganxfer.demo import (
    MAX_COUNT,
    MAX_FRAMES,
    PAD,
    DemoInputError,
    Studio,
    check_int,
    check_scale,
    facts,
    parse_seed,
    strip,
)
from ganxfer.sources import load_generator

MODEL = "dcgan-mnist-64"


@pytest.fixture(scope="module")
def studio() -> Studio:
    return Studio(MODEL, "cpu")


def pixels(image: Image.Image | bytes) -> np.ndarray:
    return np.asarray((Image.open(io.BytesIO(image)) if isinstance(image, bytes) else image).convert("L"), np.int16)


def test_grid_is_what_sample_draws(studio):
    """At scale 1 the grid of a seed is `ganxfer sample --seed`'s images; scale 0 draws z = 0 in every cell."""
    images = load_generator(MODEL).sample(9, seed=3)
    expected = to_pil_image(make_grid(images, nrow=3, padding=PAD, normalize=True, value_range=(-1, 1)))
    grid = studio.grid(3, 9)
    assert grid.size == (3 * (64 + PAD) + PAD,) * 2
    assert np.array_equal(pixels(grid), pixels(expected))
    assert not np.array_equal(pixels(studio.grid(4, 9)), pixels(grid))
    flat = pixels(studio.grid(3, 4, scale=0.0))
    cells = [flat[PAD + r * 66:PAD + r * 66 + 64, PAD + c * 66:PAD + c * 66 + 64] for r in (0, 1) for c in (0, 1)]
    assert all(np.array_equal(cells[0], cell) for cell in cells) and cells[0].std() > 0


def test_interpolation_runs_from_seed_a_to_seed_b(studio, tmp_path):
    frames = studio.frames(5, 6, 7)
    assert len(frames) == 7 and frames[0].size == (64, 64)
    first_of = lambda seed: pixels(studio.grid(seed, 1))[PAD:-PAD, PAD:-PAD]  # noqa: E731
    assert np.abs(pixels(frames[0]) - first_of(5)).max() <= 1
    assert np.abs(pixels(frames[-1]) - first_of(6)).max() <= 1
    assert strip(frames).size == (7 * (64 + PAD) + PAD, 64 + 2 * PAD)
    gif = Image.open(studio.save_gif(frames, "x.gif"))
    assert gif.n_frames == 7 and gif.info["loop"] == 0


def test_inputs_are_checked():
    """Whatever an API caller sends (words, lists, NaN, infinities, nothing, a bool) is a message, never an
    exception of Python's; seeds take what ``ganxfer sample --seed`` takes."""
    assert parse_seed(" 42 ") == 42 and parse_seed(7) == 7 and parse_seed(2**32 - 1) == 2**32 - 1
    assert parse_seed(7.0) == 7 and check_int("16", "count", 1, MAX_COUNT) == 16 and check_scale("0.5") == 0.5
    for bad in ("abc", "1.5", "-1", "", None, str(2**32), 2**63 - 1, 1.5, [1, 2], float("nan"), float("inf"), True,
                {"a": 1}, "9" * 10_000):
        with pytest.raises(DemoInputError, match="whole number from 0 to 2.32-1"):
            parse_seed(bad)
    for bad in ("abc", [1, 2], float("nan"), float("inf"), None, True, "1e999", {}):
        with pytest.raises(DemoInputError, match="count must be a whole number from 1 to 64, not "):
            check_int(bad, "count", 1, MAX_COUNT)
        with pytest.raises(DemoInputError, match="latent scale must be from 0 to 2, not "):
            check_scale(bad)
    assert check_int(64, "count", 1, MAX_COUNT) == 64
    with pytest.raises(DemoInputError, match="from 1 to 64 .this server's limit., not 65"):
        check_int(65, "count", 1, MAX_COUNT)
    with pytest.raises(DemoInputError, match="whole number"):
        check_int(2.5, "frames", 2, MAX_FRAMES)
    with pytest.raises(DemoInputError, match="latent scale"):
        check_scale(2.5)


def test_facts_come_from_the_card_or_the_run(studio, tmp_path):
    text = facts(studio)
    assert "64×64 grayscale" in text and "1,183,808 images (1183.81 kimg)" in text
    assert "KID ×10³ 12.79 and FID 25.13 at 1183.8 kimg" in text
    run = tmp_path / "run"  # a run folder: its own metrics.jsonl, no card
    (run / "generator").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (run / "generator" / name).write_bytes((studio.folder / name).read_bytes())
    (run / "metrics.jsonl").write_text(json.dumps({"kimg": 0.5, "loss_d": 1.0}) + "\n"
                                       + json.dumps({"kimg": 0.5, "kid_mean": 0.0123}) + "\n")
    text = facts(Studio(str(run), "cpu"))
    assert "500 images (0.5 kimg)" in text and "KID ×10³ 12.30 at 0.5 kimg" in text and "FID" not in text
    (run / "metrics.jsonl").unlink()
    assert "Images seen: not recorded. KID/FID: not evaluated." in facts(Studio(str(run), "cpu"))


def test_demo_without_gradio_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # what `import gradio` meets when it is not installed
    res = CliRunner().invoke(main, ["demo", MODEL])
    assert res.exit_code == 2
    assert res.output == "error: the demo needs Gradio: pip install gradio (or '.[demo]' from a clone)\n"


def test_demo_of_an_unknown_source_is_one_line(gradio):
    res = CliRunner().invoke(main, ["demo", "no-such-model"])
    assert res.exit_code == 2 and "'no-such-model' is not a local path" in res.output


def test_a_taken_port_is_one_line(gradio, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")  # no machine here reaches Gradio's servers
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = CliRunner().invoke(main, ["demo", MODEL, "--port", str(port), "--device", "cpu"])
    assert res.exit_code == 2 and res.output == f"error: port {port} is taken; pick another with --port\n"


# --- the page in a real browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(gradio):
    """``ganxfer demo dcgan-mnist-64`` on a free port, as a user starts it; its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "ganxfer", "demo", MODEL, "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url, deadline = f"http://127.0.0.1:{port}/", time.time() + 300
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    pytest.fail(f"ganxfer demo did not start: {proc.stdout.read()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(chromium, server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(server)
        page.wait_for_selector("#generate")
        yield page
        browser.close()


def run(page, button: str, status: str, fields: dict[str, str], expect: str) -> str:
    """Fill the fields, click, and wait until the status line says ``expect``; return the status text."""
    from playwright.sync_api import expect as pw_expect

    boxes = {page.locator(f"{selector} textarea, {selector} input"): value for selector, value in fields.items()}
    for box, value in boxes.items():
        box.fill(value)
    for box, value in boxes.items():  # a tab's fields can mount late and reset a value typed into them: type again
        for _ in range(3):
            try:
                pw_expect(box).to_have_value(value, timeout=3_000)
                break
            except AssertionError:
                box.fill(value)
    for box, value in boxes.items():  # all still hold what was typed
        pw_expect(box).to_have_value(value)
    page.click(button)
    pw_expect(page.locator(status)).to_contain_text(expect)
    return page.inner_text(status)


@contextlib.contextmanager
def tab(page, name: str, ready: str):
    """On the page's ``name`` tab once ``ready`` shows, and back on the Grid tab afterwards, pass or fail (the
    page is shared by the module's tests)."""
    page.get_by_role("tab", name=name).click()
    page.locator(ready).wait_for(state="visible")
    try:
        yield
    finally:
        page.get_by_role("tab", name="Grid").click()
        page.locator("#generate").wait_for(state="visible")


def shown(page, selector: str) -> bytes:
    """The bytes of the image the page shows in ``selector``, fetched as the browser does."""
    img = page.locator(f"{selector} img").first
    img.wait_for()
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=img.element_handle())
    return page.request.get(img.get_attribute("src")).body()


@pytest.mark.browser
def test_page_loads_with_the_card_facts(page):
    assert "ganxfer demo: dcgan-mnist-64" in page.title()
    facts_text = page.inner_text("#facts")
    assert "1,183,808 images" in facts_text and "FID 25.13" in facts_text
    assert page.locator("#seed textarea").input_value() == "0"


@pytest.mark.browser
def test_page_opens_with_a_grid_before_any_click(page, server):
    """A fresh page draws its fields' grid (seed 0, 16 images) on load: no empty frame until Generate is clicked."""
    from playwright.sync_api import expect as pw_expect

    fresh = page.context.browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        fresh.set_default_timeout(60_000)
        fresh.goto(server)
        pw_expect(fresh.locator("#grid-status")).to_contain_text("16 image(s) of seed 0 at scale 1")
        first = shown(fresh, "#grid")
        expected = to_pil_image(make_grid(load_generator(MODEL).sample(16, seed=0), nrow=4, padding=PAD,
                                          normalize=True, value_range=(-1, 1)))
        assert np.abs(pixels(first) - pixels(expected)).max() <= 1
        assert fresh.locator("#grid-file a").first.get_attribute("download") == "grid-seed0-n16-scale1.png"
    finally:
        fresh.close()


@pytest.mark.browser
def test_generate_shows_the_seeds_grid(page, tmp_path):
    run(page, "#generate", "#grid-status", {"#seed": "1", "#count": "16"}, "16 image(s) of seed 1")
    one = shown(page, "#grid")
    assert Image.open(io.BytesIO(one)).size == (4 * (64 + PAD) + PAD,) * 2  # 266 x 266
    expected = to_pil_image(make_grid(load_generator(MODEL).sample(16, seed=1), nrow=4, padding=PAD,
                                      normalize=True, value_range=(-1, 1)))
    assert np.abs(pixels(one) - pixels(expected)).max() <= 1  # what `ganxfer sample --seed 1` draws
    link = page.locator("#grid-file a").first
    assert link.get_attribute("download") == "grid-seed1-n16-scale1.png"
    assert pixels(page.request.get(link.get_attribute("href")).body()).shape == pixels(one).shape
    if os.environ.get("GANXFER_SCREENSHOT"):  # the README's picture: GANXFER_SCREENSHOT=docs/demo.png
        page.screenshot(path=os.environ["GANXFER_SCREENSHOT"], full_page=True)
    run(page, "#generate", "#grid-status", {"#seed": "2"}, "of seed 2")
    two = shown(page, "#grid")
    run(page, "#generate", "#grid-status", {"#seed": "1"}, "of seed 1")
    again = shown(page, "#grid")
    assert not np.array_equal(pixels(one), pixels(two))
    assert np.array_equal(pixels(one), pixels(again))


@pytest.mark.browser
def test_interpolation_returns_the_frames_asked_for(page):
    with tab(page, "Interpolation", "#interpolate"):
        run(page, "#interpolate", "#interp-status", {"#seed-a": "3", "#seed-b": "4", "#frames": "5"},
            "5 frames from seed 3 to seed 4")
        assert Image.open(io.BytesIO(shown(page, "#strip"))).size == (5 * (64 + PAD) + PAD, 64 + 2 * PAD)
        gif = Image.open(io.BytesIO(shown(page, "#gif")))
        assert gif.format == "GIF" and gif.n_frames == 5
        names = [a.get_attribute("download") for a in page.locator("#interp-files a").all()]
        assert names == ["interp-3-4-f5-scale1.png", "interp-3-4-f5-scale1.gif"]


@pytest.mark.browser
def test_limits_are_enforced_on_the_server(page, server):
    run(page, "#generate", "#grid-status", {"#seed": "0", "#count": str(MAX_COUNT + 1)},
        f"Error: count must be from 1 to {MAX_COUNT} (this server's limit), not {MAX_COUNT + 1}")
    assert page.locator("#grid img").count() == 0
    run(page, "#generate", "#grid-status", {"#seed": "seven", "#count": "4"},
        "Error: seed must be a whole number from 0 to 2^32-1, not 'seven'")
    with tab(page, "Interpolation", "#interpolate"):
        run(page, "#interpolate", "#interp-status", {"#frames": str(MAX_FRAMES + 1)},
            f"Error: frames must be from 2 to {MAX_FRAMES} (this server's limit), not {MAX_FRAMES + 1}")
    # an API caller gets the same answer: the limit lives on the server, not in the page
    call = page.request.post(server + "gradio_api/call/grid", data={"data": ["0", 1000, 1.0]})
    answer = page.request.get(server + f"gradio_api/call/grid/{call.json()['event_id']}").text()
    assert "count must be from 1 to 64" in answer and "event: complete" in answer


def test_the_page_draws_its_first_grid_on_load(gradio):
    """The page's load event runs the grid of the fields' initial values (what the browser test sees), and only
    the Generate button's event is the public API."""
    from ganxfer.demo import build_demo

    page = build_demo(MODEL, "cpu")
    on_load = [f for f in page.fns.values() if any(trigger == "load" for _, trigger in f.targets)]
    assert len(on_load) == 1 and on_load[0].api_visibility == "private"
    values = [block.value for block in on_load[0].inputs]
    assert values == ["0", 16, 1.0]  # seed, count, latent scale as the page opens
    image, path, status = on_load[0].fn(*values)
    assert status.startswith("16 image(s) of seed 0 at scale 1") and image.size == (4 * (64 + PAD) + PAD,) * 2
    assert [f.api_name for f in page.fns.values() if f.api_visibility == "public"] == ["grid", "interpolate"]


def test_concurrent_requests_keep_their_files_and_close_removes_them():
    """Each request writes into a folder of its own, which no concurrent request removes: 400 grid and
    interpolation calls on 16 threads each find their files in place when they return. close() (called when the
    server stops, at the latest at exit) removes every file."""
    from concurrent.futures import ThreadPoolExecutor

    studio = Studio(MODEL, "cpu")

    def call(i: int) -> list[str]:
        if i % 2:
            sheet, gif, _, status = studio.interpolate_call(str(i), str(i + 1), 2, 1.0)
            paths = [sheet, gif]
        else:
            _, path, status = studio.grid_call(str(i), 1, 1.0)
            paths = [path]
        assert "Error" not in status, status
        return [p for p in paths if not Path(p).is_file()]

    with ThreadPoolExecutor(16) as pool:
        missing = [p for gone in pool.map(call, range(400)) for p in gone]
    assert missing == [] and len(list(studio.out.iterdir())) == 400
    studio.close()
    assert not studio.out.exists()


def test_api_callers_get_a_message_for_any_input_and_the_server_cleans_up(gradio, tmp_path):
    """Through the HTTP API of a real ``ganxfer demo``: words, lists, NaN, infinity and missing arguments are each
    answered with a message, with no traceback in the server's log, and a stopped server (SIGTERM) leaves no
    ganxfer-demo-* folder behind."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(tmp_path),
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "ganxfer", "demo", MODEL, "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}/"

    def call(api: str, data: list) -> str:
        body = json.dumps({"data": data}).encode()  # NaN and Infinity as JavaScript writes them
        request = urllib.request.Request(f"{url}gradio_api/call/{api}", body, {"Content-Type": "application/json"})
        event = json.loads(urllib.request.urlopen(request, timeout=60).read())["event_id"]
        return urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event}", timeout=60).read().decode()

    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-2000:]
                time.sleep(0.5)
        for data, message in ((["0", "abc", 1.0], "count must be a whole number from 1 to 64, not 'abc'"),
                              (["0", [1, 2], 1.0], "count must be a whole number from 1 to 64, not [1, 2]"),
                              (["0", float("nan"), 1.0], "not nan"), (["0", float("inf"), 1.0], "not inf"),
                              (["0"], "count must be a whole number"), ([], "seed must be a whole number"),
                              (["0", 4, "x"], "latent scale must be from 0 to 2, not 'x'")):
            answer = call("grid", data)
            assert "event: complete" in answer and message in answer, (data, answer)
        answer = call("interpolate", ["0", "1", "abc"])
        assert "event: complete" in answer and "frames must be a whole number from 2 to 32, not 'abc'" in answer
        assert "event: complete" in call("grid", ["0", 4, 1.0])
    finally:
        proc.terminate()
        log = proc.communicate(timeout=60)[0]
    assert "Traceback" not in log, log[-3000:]
    assert list(tmp_path.glob("ganxfer-demo-*")) == []


def test_torch_is_untouched_by_the_page(studio):
    """The grid draws its own latents: torch's global random state is not consumed."""
    state = torch.random.get_rng_state()
    studio.grid(0, 2)
    assert torch.equal(state, torch.random.get_rng_state())
