"""Bit-for-bit check of the training loop: the headline recipe (``recipes/anime_from_mnist.yaml``) trained for
200 steps on the CPU, and a sha256 of every tensor it leaves: the exported generator (the EMA, BatchNorm
recalibrated) and discriminator, and the last checkpoint's G, D, EMA and optimizer state.

Record the hashes once from a reference commit, then check any later commit against them:

    source ../shared/env.sh
    python benchmarks/bitexact.py --out benchmarks/bitexact-reference.json          # on the reference commit
    python benchmarks/bitexact.py --check benchmarks/bitexact-reference.json        # after a refactor

Each precision (``train.mixed_precision``: ``no``, and ``auto``, bf16 where the CPU has it) is one run of about
two minutes on 2 cores. CPU kernels differ between instruction sets, so hashes compare on one machine only:
the file records the machine it came from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import safetensors.torch
import torch
from results import git_commit, machine

STEPS, BATCH = 200, 32
SETTINGS = ["--set", f"train.batch_size={BATCH}", "--set", "train.minutes=null", "--set", "data.limit=2000",
            "--set", "train.sample_every_kimg=1000", "--set", "train.checkpoint_every_kimg=1000",
            "--set", "train.log_every_kimg=1.6"]


def tensor_hashes(path: Path) -> dict[str, str]:
    """sha256 of each tensor's dtype, shape and bytes, by name."""
    out = {}
    for name, t in sorted(safetensors.torch.load_file(str(path)).items()):
        h = hashlib.sha256(f"{t.dtype} {tuple(t.shape)}".encode())
        h.update(t.contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
        out[name] = h.hexdigest()
    return out


def run(precision: str, folder: Path, train: bool = True, steps: int = STEPS) -> dict[str, dict[str, str]]:
    """Train the headline recipe for ``steps`` steps at ``precision`` into ``folder`` (``train`` False: a finished
    run is there already); the hashes of what it left, by file."""
    if train:
        cmd = [sys.executable, "-m", "ganxfer", "train", "recipes/anime_from_mnist.yaml", *SETTINGS,
               "--set", f"train.kimg={steps * BATCH / 1000:g}", "--set", f"train.mixed_precision={precision}",
               "--run-dir", str(folder)]
        subprocess.run(cmd, check=True)
    (last,) = sorted((folder / "checkpoints").glob("step-*"))[-1:]
    files = {"generator": folder / "generator" / "model.safetensors",
             "discriminator": folder / "discriminator" / "model.safetensors",
             **{f"checkpoint/{p.stem}": p for p in sorted(last.glob("*.safetensors"))}}
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in rows) == steps, "the run did not take the expected number of steps"
    return {name: tensor_hashes(path) for name, path in files.items()}


def compare(reference: dict, found: dict) -> bool:
    """Print one line per precision and file: identical, or which tensors differ. True when all match."""
    same = True
    for precision, files in reference["runs"].items():
        for name, hashes in files.items():
            got = found["runs"].get(precision, {}).get(name)
            if got is None:
                print(f"{precision:5s} {name:28s} MISSING")
                same = False
                continue
            differ = [k for k in hashes if got.get(k) != hashes[k]] + sorted(set(got) - set(hashes))
            same &= not differ
            print(f"{precision:5s} {name:28s} {len(hashes):4d} tensors  "
                  + ("identical" if not differ else f"DIFFER: {', '.join(differ[:5])}"
                                                    + (f" (+{len(differ) - 5})" if len(differ) > 5 else "")))
    return same


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="write the hashes here")
    p.add_argument("--check", type=Path, help="compare with the hashes in this file; exit 1 if any differ")
    p.add_argument("--precision", nargs="+", default=["no", "auto"], help="train.mixed_precision values to run")
    p.add_argument("--runs", type=Path, help="keep the runs in DIR/<precision> (default: a temporary folder)")
    p.add_argument("--hash-only", action="store_true", help="hash the finished runs in --runs, training nothing")
    p.add_argument("--steps", type=int, default=STEPS, help="training steps (the reference file's: 200)")
    args = p.parse_args()
    found = {"commit": git_commit(), "machine": machine(), "steps": args.steps, "settings": SETTINGS, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precision:
            found["runs"][precision] = run(precision, (args.runs or Path(tmp)) / precision, not args.hash_only,
                                           args.steps)
    if args.out:
        args.out.write_text(json.dumps(found, indent=1) + "\n")
    if args.check:
        reference = json.loads(args.check.read_text())
        if reference.get("steps", STEPS) != args.steps:
            sys.exit(f"{args.check} holds {reference.get('steps', STEPS)} steps; pass --steps to match")
        reference["runs"] = {k: v for k, v in reference["runs"].items() if k in args.precision}
        for precision in set(args.precision) - set(reference["runs"]):
            print(f"{precision:5s} no reference in {args.check}: not compared")
        print(f"reference {reference['commit']} on {reference['machine']}\nnow       {found['commit']} on "
              f"{found['machine']}")
        sys.exit(0 if compare(reference, found) else 1)


if __name__ == "__main__":
    main()
