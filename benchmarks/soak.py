"""Exact resume under SIGKILL, against an uninterrupted run of the same recipe (bit-identical G and D expected).

A small MNIST run is killed (SIGKILL) N times and resumed each time; its exported generator and discriminator
weights are compared with the uninterrupted run's.

Kills alternate between a random moment of the run and the moment a checkpoint write (``.tmp-*``) or prune
(``.old-*``) is seen in progress. Each attempt after a kill resumes (or starts again, when no checkpoint
was complete yet), so every kill also exercises the stale-lock takeover and the leftover cleaning.
Augmentation, flips, R1 and the EMA are on, so every random stream must resume exactly.

    source ../shared/env.sh && python benchmarks/soak.py --kills 6
"""

from __future__ import annotations

import argparse
import datetime
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import safetensors.torch
from results import RESULTS, append_row, git_commit, machine

HEADING = "## Soak: SIGKILL at random points and during checkpoint writes, then resume (benchmarks/soak.py)"
COLUMNS = ("| date | commit | machine | kimg | checkpoint every kimg | kills (during a write) | attempts | "
           "bit-identical G and D |\n|---|---|---|---|---|---|---|---|")
SETTINGS = ["--set", "data.limit=256", "--set", "data.resolution=32", "--set", "generator.ngf=8",
            "--set", "discriminator.ndf=8", "--set", "train.batch_size=16", "--set", "train.log_every_kimg=0.032",
            "--set", "augment.policy=color,translation,cutout", "--set", "data.hflip=true",
            "--set", "loss.r1_gamma=1.0", "--set", "loss.r1_every=2", "--set", "train.ema=0.9"]


def command(run: Path, kimg: float, every: float, resume: bool) -> list[str]:
    return [sys.executable, "-m", "ganxfer", "train", "recipes/mnist_dcgan.yaml", *SETTINGS,
            "--set", f"train.kimg={kimg}", "--set", f"train.checkpoint_every_kimg={every}",
            "--set", "train.keep_checkpoints=2", "--run-dir", str(run), *(["--resume"] if resume else [])]


def has_checkpoint(run: Path) -> bool:
    return any((p / "trainer.json").is_file() for p in (run / "checkpoints").glob("step-*"))


def lock_text(run: Path) -> str:
    try:
        return (run / ".lock").read_text()
    except OSError:
        return ""


def writing(run: Path) -> bool:
    folder = run / "checkpoints"
    return folder.is_dir() and any(p.name.startswith((".tmp-", ".old-")) for p in folder.iterdir())


def attempt(run: Path, kimg: float, every: float, kill: str | None, delay: float) -> tuple[str, float]:
    """One run: ``kill`` None runs it to the end; 'random' kills it after ``delay`` s, 'write' during the first
    checkpoint write or prune it is seen in. Returns what happened and when this process took the lock."""
    resume = has_checkpoint(run)
    t0 = time.time()
    proc = subprocess.Popen(command(run, kimg, every, resume), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    locked = None  # once this process holds the lock it has also cleaned the last attempt's leftovers
    while proc.poll() is None:
        if locked is None and str(proc.pid) in lock_text(run) and not writing(run):
            locked = time.time() - t0
        if kill == "random" and time.time() - t0 >= delay or kill == "write" and locked and writing(run):
            break
        time.sleep(0.001 if kill == "write" else 0.02)
    if proc.poll() is not None:  # it finished (or failed) before any kill
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"an attempt failed:\n{err[-3000:]}")
        return "finished", locked or 0.0
    during = writing(run)
    proc.kill()
    proc.communicate()
    return ("killed during a write" if during else "killed"), locked or 0.0


def weights(run: Path) -> dict:
    return {part: safetensors.torch.load_file(str(run / part / "model.safetensors"))
            for part in ("generator", "discriminator")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs before the run may finish")
    parser.add_argument("--kimg", type=float, default=0.512, help="training budget of the run")
    parser.add_argument("--every", type=float, default=0.032, help="checkpoint cadence in kimg")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--no-record", action="store_true", help="do not append the result to RESULTS.md")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="ganxfer-soak-") as tmp:
        reference, soaked = Path(tmp) / "reference", Path(tmp) / "soaked"
        t0 = time.time()
        _, startup = attempt(reference, args.kimg, args.every, None, 0)
        duration = time.time() - t0
        print(f"uninterrupted run: {duration:.1f} s, {startup:.1f} s of it starting up", flush=True)
        kills = writes = attempts = 0
        while kills < args.kills:
            mode = "write" if kills % 2 else "random"
            # random kills fall anywhere from start-up to a share of the training, so that the run lasts N kills
            delay = rng.uniform(0.5 * startup, startup + 1.5 * (duration - startup) / args.kills)
            what, _ = attempt(soaked, args.kimg, args.every, mode, delay)
            attempts += 1
            print(f"attempt {attempts} ({mode}{f', {delay:.1f} s' if mode == 'random' else ''}): {what}", flush=True)
            if what == "finished":
                break
            kills += 1
            writes += what == "killed during a write"
        if kills == args.kills:
            attempts += 1
            print(f"attempt {attempts}: {attempt(soaked, args.kimg, args.every, None, 0)[0]}", flush=True)
        a, b = weights(reference), weights(soaked)
        same = all(a[p].keys() == b[p].keys() and all(a[p][k].equal(b[p][k]) for k in a[p]) for p in a)
    print(f"{kills} kills ({writes} during a checkpoint write or prune), {attempts} attempts: generator and "
          f"discriminator {'bit-identical' if same else 'DIFFERENT'} to the uninterrupted run")
    if not args.no_record:
        append_row(RESULTS, HEADING, COLUMNS, f"| {datetime.date.today()} | {git_commit()} | {machine()} | "
                   f"{args.kimg} | {args.every} | {kills} ({writes}) | {attempts} | {'yes' if same else 'NO'} |")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
