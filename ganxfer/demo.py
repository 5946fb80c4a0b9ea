"""``ganxfer demo``: a Gradio page for one generator (seed grids, interpolations, a latent scale, downloads).

The arithmetic lives in :class:`Studio`, which needs torch only; :func:`build_demo` wraps it in a
``gr.Blocks`` page. Only the generator runs: a 64x64 DCGAN draws a grid of 64 in well under a second on a CPU.
Every input is checked on the server, so the limits hold for API callers too.
"""

from __future__ import annotations

import atexit
import math
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torchvision.transforms.functional import to_pil_image

from ganxfer.cache import NETWORK_ERRORS, hub_cache, hub_offline, parse_hub_id
from ganxfer.card import card_facts, find_run, run_info
from ganxfer.errors import GanxferError
from ganxfer.images import make_sheet
from ganxfer.nets import read_config
from ganxfer.schema import MAX_SEED
from ganxfer.sources import load_generator, pick_device, resolve

if TYPE_CHECKING:
    import gradio as gr

MAX_COUNT = 64  # images in one grid
MAX_FRAMES = 32  # frames in one interpolation
MAX_SCALE = 2.0  # latent scale: z ~ N(0, scale^2); below 1 is truncation-like (typical, less varied)
PAD = 2  # pixels between grid cells
KEEP_S = 120  # a request's files stay this long: Gradio copies them into its cache as the request ends
_SEED = re.compile(r"\s*\d{1,10}\s*")


class DemoError(GanxferError):
    """The demo cannot start (Gradio missing, a bad source), phrased as one line."""


class DemoInputError(GanxferError):
    """Bad input on the page; shown there as a message."""


def _shown(value: object) -> str:
    """``value`` as an error message quotes it: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _finite(value: object) -> float | None:
    """A number given as a number or as text (``'3'``, ``' 2.5 '``), or None for anything else: missing, a bool, a
    list, NaN, an infinity or words. API callers send whatever JSON they like."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or len(str(value)) > 40:
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def parse_seed(text: object, name: str = "seed") -> int:
    """A seed typed on the page: a whole number from 0 to 2^32 - 1 (``ganxfer sample --seed``'s range, so that every
    seed shown here can be drawn there)."""
    value = str(text) if isinstance(text, str) else str(int(text)) if _finite(text) is not None and \
        float(text).is_integer() else ""
    if not _SEED.fullmatch(value) or int(value) > MAX_SEED:
        raise DemoInputError(f"{name} must be a whole number from 0 to 2^32-1, not {_shown(text)}")
    return int(value)


def check_int(value: object, name: str, low: int, high: int) -> int:
    """A whole number in [low, high]; the upper bound is the server's limit."""
    number = _finite(value)
    if number is None or not number.is_integer():
        raise DemoInputError(f"{name} must be a whole number from {low} to {high}, not {_shown(value)}")
    if not low <= int(number) <= high:
        raise DemoInputError(f"{name} must be from {low} to {high} (this server's limit), not {int(number)}")
    return int(number)


def check_scale(value: object) -> float:
    number = _finite(value)
    if number is None or not 0 <= number <= MAX_SCALE:
        raise DemoInputError(f"latent scale must be from 0 to {MAX_SCALE:g}, not {_shown(value)}")
    return number


def latents(seed: int, n: int, dim: int) -> torch.Tensor:
    """The latents ``generator.sample(n, seed=seed)`` draws: the same seed gives the same images everywhere."""
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two latent vectors at each of ``t`` (Gaussian latents keep their norm)."""
    omega = torch.acos((a / a.norm() * b / b.norm()).sum().clamp(-1, 1))
    if omega.abs() < 1e-6:
        return torch.lerp(a, b, t[:, None])
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so)[:, None] * a + (torch.sin(t * omega) / so)[:, None] * b


class Studio:
    """One generator and what the page asks of it; results are PIL images and files in a temporary folder, one
    subfolder per request (:meth:`request`), removed by :meth:`close` (at the latest when the process exits)."""

    def __init__(self, source: str, device: str | None = None) -> None:
        self.source = source
        self.device = pick_device(device)
        self.folder = resolve(source, "generator")
        self.generator = load_generator(source).to(self.device).eval()
        self.out = Path(tempfile.mkdtemp(prefix="ganxfer-demo-"))  # inside the temp dir, which Gradio serves
        atexit.register(self.close)

    def close(self) -> None:
        """Remove the temporary folder and every file the requests wrote."""
        shutil.rmtree(self.out, ignore_errors=True)

    @torch.inference_mode()
    def _images(self, z: torch.Tensor) -> torch.Tensor:
        param = next(self.generator.parameters())
        return torch.cat([self.generator(zb.to(param.device, param.dtype)).float().cpu() for zb in z.split(64)])

    def grid(self, seed: int, count: int, scale: float = 1.0) -> Image.Image:
        """``count`` images of ``seed`` (those of ``ganxfer sample --seed`` at scale 1), as one grid."""
        images = self._images(latents(seed, count, self.generator.latent_dim) * scale)
        sheet = make_sheet(images, padding=PAD)
        return to_image(torch.nn.functional.pad(sheet, (PAD,) * 4) if count == 1 else sheet)  # make_grid skips it

    def frames(self, seed_a: int, seed_b: int, count: int, scale: float = 1.0) -> list[Image.Image]:
        """``count`` frames from the first image of ``seed_a`` to the first of ``seed_b``, by slerp of z."""
        dim = self.generator.latent_dim
        z = slerp(latents(seed_a, 1, dim)[0], latents(seed_b, 1, dim)[0], torch.linspace(0, 1, count))
        return [to_image(x * 0.5 + 0.5) for x in self._images(z * scale).clamp(-1, 1)]

    def request(self) -> Path:
        """A new folder for one request's files. Folders older than :data:`KEEP_S` go first: Gradio has copied
        their files by then, and a concurrent request's fresh folder is never among them."""
        now = time.time()
        for old in list(self.out.iterdir()):
            try:
                if now - old.stat().st_mtime > KEEP_S:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:  # another request removed it first
                pass
        self.out.mkdir(exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.out, prefix="request-"))

    def save(self, image: Image.Image, name: str, folder: Path | None = None) -> Path:
        path = (folder or self.request()) / name
        image.save(path)
        return path

    def save_gif(self, frames: list[Image.Image], name: str, ms: int = 100, folder: Path | None = None) -> Path:
        path = (folder or self.request()) / name
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms, loop=0, disposal=1)
        return path

    def grid_call(self, seed: object, count: object, scale: object) -> tuple[Image.Image | None, str | None, str]:
        """The page's (and API's) grid: (image, its file, status); bad input gives (None, None, the message)."""
        try:
            seed, count, scale = parse_seed(seed), check_int(count, "count", 1, MAX_COUNT), check_scale(scale)
        except DemoInputError as e:
            return None, None, f"**Error:** {e}"
        t = time.perf_counter()
        image = self.grid(seed, count, scale)
        path = self.save(image, f"grid-seed{seed}-n{count}-scale{scale:g}.png")
        return image, str(path), f"{count} image(s) of seed {seed} at scale {scale:g}, " \
                                 f"{image.width}×{image.height} px, {time.perf_counter() - t:.2f} s"

    def interpolate_call(self, seed_a: object, seed_b: object, count: object,
                         scale: object) -> tuple[str | None, str | None, list[str] | None, str]:
        """The page's (and API's) interpolation: (strip file, GIF file, both, status); bad input gives the message
        and no files."""
        try:
            a, b = parse_seed(seed_a, "seed A"), parse_seed(seed_b, "seed B")
            count, scale = check_int(count, "frames", 2, MAX_FRAMES), check_scale(scale)
        except DemoInputError as e:
            return None, None, None, f"**Error:** {e}"
        frames, folder = self.frames(a, b, count, scale), self.request()
        stem = f"interp-{a}-{b}-f{count}-scale{scale:g}"
        sheet = self.save(strip(frames), f"{stem}.png", folder)
        gif = self.save_gif(frames, f"{stem}.gif", folder=folder)
        return str(sheet), str(gif), [str(sheet), str(gif)], f"{count} frames from seed {a} to seed {b}"


def to_image(x: torch.Tensor) -> Image.Image:
    """(C, H, W) in [0, 1] -> an L or RGB PIL image."""
    return to_pil_image(x[0] if x.shape[0] == 1 else x)


def strip(frames: list[Image.Image]) -> Image.Image:
    """Frames side by side, ``PAD`` pixels apart, as ``make_grid`` spaces a grid."""
    w, h = frames[0].size
    sheet = Image.new(frames[0].mode, (len(frames) * (w + PAD) + PAD, h + 2 * PAD))
    for i, frame in enumerate(frames):
        sheet.paste(frame, (PAD + i * (w + PAD), PAD))
    return sheet


def facts(studio: Studio) -> str:
    """Markdown: what the model is, and what its run or model card records (images seen, KID, FID)."""
    config = read_config(studio.folder)
    res, channels = config.get("resolution", "?"), config.get("channels", 3)
    kind = config.get("ganxfer", {}).get("kind", "?").upper()
    lines = [f"## {studio.source}", "",
             f"A {kind} generator of {res}×{res} {'RGB' if channels == 3 else 'grayscale'} images, latent size "
             f"{config.get('latent_dim', '?')}, running on {studio.device.type}."]
    info = run_info(find_run(studio.source, studio.folder))
    card = _card_text(studio.source, studio.folder)
    recorded = card_facts(card) if card else {}
    if info.images_seen is not None:
        recorded["images_seen"] = info.images_seen
    if info.evals:
        recorded.update(info.evals[-1])
    seen = recorded.get("images_seen")
    said = [f"Trained on {seen:,} images ({seen / 1000:g} kimg)." if seen else "Images seen: not recorded."]
    scores = [f"KID ×10³ {recorded['kid_mean'] * 1e3:.2f}" if "kid_mean" in recorded else None,
              f"FID {recorded['fid']:.2f}" if "fid" in recorded else None]
    scores = [s for s in scores if s]
    at = f" at {recorded['kimg']:g} kimg" if "kimg" in recorded and scores else ""
    said.append(f"{' and '.join(scores)}{at} (lower is better)." if scores else "KID/FID: not evaluated.")
    return "\n".join(lines + ["", " ".join(said)])


def _card_text(source: str, folder: Path) -> str | None:
    """The model card (README.md) beside the weights, or of the Hub repo when it is cached or reachable."""
    if (folder / "README.md").is_file():
        return (folder / "README.md").read_text()
    parsed = None if Path(source).expanduser().exists() else parse_hub_id(source)
    if parsed is None:
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(parsed[0], "README.md", revision=parsed[1], cache_dir=hub_cache(),
                                    local_files_only=hub_offline())).read_text()
    except (*NETWORK_ERRORS, HfHubHTTPError, LocalEntryNotFoundError):
        return None


def _gradio():
    try:
        import gradio
    except ImportError:
        raise DemoError("the demo needs Gradio: pip install gradio (or '.[demo]' from a clone)") from None
    return gradio


def build_demo(source: str, device: str | None = None) -> gr.Blocks:
    """The demo page of generator ``source`` (bundled name, folder, run folder or Hub id), not yet launched."""
    gr = _gradio()
    studio = Studio(source, device)

    def on_grid(seed=None, count=None, scale=None):  # defaults: an API call may leave any argument out
        return studio.grid_call(seed, count, scale)

    def on_interpolate(seed_a=None, seed_b=None, count=None, scale=None):
        return studio.interpolate_call(seed_a, seed_b, count, scale)

    class Page(gr.Blocks):
        """The page, whose API callers may leave inputs out: the handlers get None for each and say what is
        missing (Gradio's own check raises, which logs a traceback and tells the caller nothing)."""

        def validate_inputs(self, block_fn, inputs):
            if isinstance(inputs, list):
                inputs.extend([None] * (len(block_fn.inputs) - len(inputs)))
            return super().validate_inputs(block_fn, inputs)

    with Page(title=f"ganxfer demo: {source}", delete_cache=(3600, 3600)) as page:
        page.studio = studio  # launch() removes its files when the server stops
        gr.Markdown(facts(studio), elem_id="facts")
        scale = gr.Slider(0, MAX_SCALE, value=1.0, step=0.05, label="latent scale",
                          info="z ~ N(0, scale²): below 1 is truncation-like (typical, less varied), 1 is as trained",
                          elem_id="scale")
        with gr.Tab("Grid"):
            with gr.Row():
                with gr.Column(scale=1):
                    seed = gr.Textbox("0", label="seed", elem_id="seed")
                    count = gr.Number(16, label=f"count (at most {MAX_COUNT})", precision=0, elem_id="count")
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                    status = gr.Markdown(elem_id="grid-status")
                    download = gr.File(label="download", interactive=False, elem_id="grid-file")
                with gr.Column(scale=2):
                    image = gr.Image(label="grid", format="png", type="pil", interactive=False, elem_id="grid",
                                     buttons=["download", "fullscreen"])
        with gr.Tab("Interpolation"):
            with gr.Row():
                seed_a = gr.Textbox("0", label="seed A", elem_id="seed-a")
                seed_b = gr.Textbox("1", label="seed B", elem_id="seed-b")
                frames = gr.Number(8, label=f"frames (at most {MAX_FRAMES})", precision=0, elem_id="frames")
            morph = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
            morph_status = gr.Markdown(elem_id="interp-status")
            sheet = gr.Image(label="frames", type="filepath", interactive=False, elem_id="strip",
                             buttons=["download", "fullscreen"])
            with gr.Row():
                gif = gr.Image(label="animation (GIF)", type="filepath", interactive=False, elem_id="gif",
                               buttons=["download", "fullscreen"])
                files = gr.File(label="download", file_count="multiple", interactive=False, elem_id="interp-files")
        # preprocess=False: the handlers get the values as sent and check them all themselves (Gradio's own
        # preprocessing of a Number raises, with a traceback in the log and no message to the caller, on 'abc')
        go.click(on_grid, [seed, count, scale], [image, download, status], api_name="grid", preprocess=False)
        page.load(on_grid, [seed, count, scale], [image, download, status], api_visibility="private",  # no blank grid
                  preprocess=False)
        morph.click(on_interpolate, [seed_a, seed_b, frames, scale], [sheet, gif, files, morph_status],
                    api_name="interpolate", preprocess=False)
    return page


def launch(source: str, port: int | None = None, share: bool = False, device: str | None = None) -> None:
    """Build the page of ``source`` and serve it until interrupted."""
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests are no news
    page = build_demo(source, device)
    previous = signal.signal(signal.SIGTERM, _stop)  # a stop by a service manager cleans up as Ctrl-C does
    try:
        page.launch(server_port=port, share=share)
    except OSError as e:
        if "empty port" not in str(e):
            raise
        raise DemoError(f"port {port} is taken; pick another with --port" if port else
                        "no free port from 7860 on (GRADIO_SERVER_PORT); pick one with --port") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        page.studio.close()


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt
