"""The first GPU check, in minutes: the headline's images/s against a plain PyTorch DCGAN loop on the same GPU.

Every number comes from ganxfer's real loop (``ganxfer.loop.train``) or the plain loop of ``throughput.py``, on
one device, one after the other; rows are appended to ``benchmarks/RESULTS.md``, and every measurement is also
printed as a JSON line, so a run cut short still reports what it finished. Parts, in order (``--only`` picks):

- ``plain``: the plain DCGAN loop against ``anime_dcgan`` through ganxfer's loop, batch 64 (the CPU benchmark's
  comparison, on this device);
- ``batch``: ``anime_from_mnist`` at batch 32, 256 and 512: images/s after warm-up, host syncs per step
  (``torch.cuda.set_sync_debug_mode``), peak memory;
- ``precision``: at batch 256, bf16 against fp32, channels-last off, and the D's input at 224 px;
- ``resume``: a short run of the headline's GPU form (``anime_from_mnist_gpu``) stopped by SIGINT and resumed
  with ``--resume``; its exported generator is copied to ``--out`` so that KID can be scored on another machine
  (``ganxfer evaluate OUT/generator --data $GANXFER_DATA/anime-faces-64 --num 1000 --metrics kid,pr``).

    bash benchmarks/gpu_check.sh BUNDLE OUT      # on the GPU machine (BUNDLE from make-gpu-bundle)
    bash benchmarks/gpu_check.sh --smoke         # the same flow at toy sizes on a CPU (RESULTS.md untouched)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from results import RESULTS, append_row, git_commit

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## GPU check: the headline's images/s, syncs and memory (benchmarks/gpu_check.py)"
COLUMNS = ("| date | commit | device | what | batch | precision | img/s | vs plain DCGAN loop | host syncs per step | "
           "peak memory GiB |\n|---|---|---|---|---|---|---|---|---|---|")
QUIET = ["train.sample_every_kimg=0", "train.checkpoint_every_kimg=0", "train.log_with=[]", "train.minutes=null",
         "train.bn_batches=1", "train.snapshot_every_minutes=0"]


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return f"1x {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"cpu, {os.cpu_count()} cores, torch {torch.__version__}"


def report(out: Path, **row) -> None:
    """One measurement: printed as JSON and appended to OUT/gpu_check.jsonl."""
    line = json.dumps(row)
    print(line, flush=True)
    with open(out / "gpu_check.jsonl", "a") as f:
        f.write(line + "\n")


def loop_speed(recipe: str, sets: list[str], steps: int, batch: int, out: Path, count_syncs: bool) -> dict:
    """Train ``steps`` iterations of ``recipe`` through ganxfer's loop: images/s over its log rows but the first
    and last, host syncs per step (the log row's own included, one per 5 steps) and the peak memory."""
    from ganxfer.loop import train
    from ganxfer.recipe import load_recipe

    r = load_recipe(recipe, [*sets, f"train.batch_size={batch}", f"train.kimg={steps * batch / 1000}",
                             f"train.log_every_kimg={5 * batch / 1000}", *QUIET])  # a log row (one sync) per 5 steps
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(dir=out) as run, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda and count_syncs:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            train(r, Path(run) / "run")
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
        rows = [json.loads(x) for x in (Path(run) / "run" / "metrics.jsonl").read_text().splitlines()]
    timed = [row for row in rows if "images_per_s" in row]
    timed = timed[1:-1] or timed  # the first row holds the warm-up (cudnn autotuning), the last the export
    ips = len(timed) * batch / sum(batch / row["images_per_s"] for row in timed)
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return {"img_per_s": round(ips, 1), "syncs_per_step": round(syncs / steps, 2) if count_syncs and cuda else None,
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}


def part_plain(args, out: Path) -> float:
    sys.path.insert(0, str(Path(__file__).parent))
    import throughput

    root = Path(os.environ["GANXFER_DATA"]) / "anime-faces-64"
    plain = throughput.plain_loop(root, args.images, args.steps, 64, device=args.device)
    ours = loop_speed(str(ROOT / "recipes" / "anime_dcgan.yaml"), [f"data.limit={args.images}"], args.steps, 64, out,
                      count_syncs=False)["img_per_s"]
    report(out, part="plain", plain_img_per_s=round(plain, 1), ganxfer_img_per_s=ours, ratio=round(ours / plain, 2))
    row(args, "plain DCGAN loop", 64, "fp32", plain, 1.0, None, None)
    row(args, "anime_dcgan, ganxfer loop", 64, "fp32", ours, ours / plain, None, None)
    return plain


def part_batch(args, out: Path, plain: float | None) -> None:
    for batch in args.batches:
        m = loop_speed("anime_from_mnist", [f"data.limit={args.images}"], args.steps, batch, out, count_syncs=True)
        report(out, part="batch", batch=batch, **m)
        row(args, "anime_from_mnist", batch, "auto", m["img_per_s"], m["img_per_s"] / plain if plain else None,
            m["syncs_per_step"], m["peak_gib"])


def part_precision(args, out: Path, plain: float | None) -> None:
    batch = args.batches[min(1, len(args.batches) - 1)]
    for what, sets in (("fp32", ["train.mixed_precision=no"]), ("bf16", ["train.mixed_precision=bf16"]),
                       ("bf16, NCHW", ["train.mixed_precision=bf16", "train.channels_last=false"]),
                       ("bf16, D input 224 px", ["train.mixed_precision=bf16", "discriminator.input_size=224"])):
        if "bf16" in what and args.device == "cpu" and not args.quick:
            continue
        m = loop_speed("anime_from_mnist", [f"data.limit={args.images}", *sets], args.steps, batch, out,
                       count_syncs=False)
        report(out, part="precision", batch=batch, variant=what, **m)
        row(args, f"anime_from_mnist, {what}", batch, what.split(",")[0], m["img_per_s"],
            m["img_per_s"] / plain if plain else None, None, m["peak_gib"])


def part_resume(args, out: Path) -> bool:
    """The GPU form of the headline (``anime_from_mnist_gpu``, a CPU-sized batch with ``--quick``) for
    ``--resume-minutes`` of training: stopped by SIGINT halfway, then resumed to its budget. True when both
    exits and the exported generator are as they should be."""
    run = out / "resume-run"
    shutil.rmtree(run, ignore_errors=True)
    sets = ["train.batch_size=16", f"data.limit={args.images}"] if args.quick else []
    base = [sys.executable, "-m", "ganxfer", "finetune", "anime_from_mnist_gpu", "--run-dir", str(run),
            "--set", f"train.minutes={args.resume_minutes}", "--set", "train.kimg=100000",
            "--set", "train.log_with=[]", *(x for s in sets for x in ("--set", s))]
    t0 = time.time()
    proc = subprocess.Popen(base, cwd=ROOT)
    metrics = run / "metrics.jsonl"
    while proc.poll() is None and not (run / "samples" / "000000000.png").is_file():  # drawn as training starts
        time.sleep(0.5)
    time.sleep(args.resume_minutes * 60 / 2)
    proc.send_signal(signal.SIGINT)
    first = proc.wait()
    second = subprocess.run([*base, "--resume"], cwd=ROOT).returncode
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    kimg = max((r.get("kimg", 0) for r in rows), default=0)
    report(out, part="resume", first_exit=first, resumed_exit=second, kimg=kimg, seconds=round(time.time() - t0))
    with contextlib.suppress(FileNotFoundError):
        shutil.copytree(run / "generator", out / "generator", dirs_exist_ok=True)
        shutil.copy(metrics, out / "resume-metrics.jsonl")
    shutil.rmtree(run, ignore_errors=True)
    return first == 130 and second == 0 and (out / "generator" / "model.safetensors").is_file()


def row(args, what: str, batch: int, precision: str, ips: float, ratio: float | None, syncs, peak) -> None:
    shown = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    append_row(args.results, HEADING, COLUMNS,
               f"| {datetime.date.today()} | {git_commit()} | {device_name(args.device)} | {what} | {batch} | "
               f"{precision} | {ips:.0f} | {shown(ratio, '.2f')}x | {shown(syncs, 'g')} | {shown(peak, 'g')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="where the exported generator and the JSON lines go")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", nargs="*", default=["plain", "batch", "precision", "resume"])
    ap.add_argument("--batches", type=int, nargs="*", default=[32, 256, 512])
    ap.add_argument("--steps", type=int, default=40, help="iterations per speed measurement")
    ap.add_argument("--images", type=int, default=12000, help="faces decoded (the bundle's count)")
    ap.add_argument("--resume-minutes", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check the flow on a CPU")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.quick:
        args.batches, args.steps, args.images, args.resume_minutes = [8, 16], 4, 256, 0.2
    args.out.mkdir(parents=True, exist_ok=True)
    report(args.out, part="device", device=device_name(args.device), commit=git_commit())
    plain = part_plain(args, args.out) if "plain" in args.only else None
    if "batch" in args.only:
        part_batch(args, args.out, plain)
    if "precision" in args.only:
        part_precision(args, args.out, plain)
    if "resume" in args.only and not part_resume(args, args.out):
        sys.exit("gpu_check: the stopped-and-resumed run did not end as it should (see the resume line above)")


if __name__ == "__main__":
    main()
