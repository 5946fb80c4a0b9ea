"""Resumable training state: Accelerate's state (safetensors models, optimizers, scaler) plus ours.

A checkpoint is written into ``checkpoints/.tmp-*`` and renamed into place only when complete, so an
interrupted write never shadows the previous checkpoint. Ours is ``trainer.json`` (counters),
``ema.safetensors`` and ``rng_<rank>.safetensors`` (the training generator's state).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import safetensors.torch
import torch
from accelerate import Accelerator
from torch import nn

PREFIX = "step-"


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    done = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / "trainer.json").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def save_checkpoint(acc: Accelerator, run_dir: Path, counters: dict, ema: nn.Module | None,
                    gen: torch.Generator, keep: int) -> Path:
    """Write a checkpoint atomically (every process must call this) and prune all but the last ``keep``."""
    folder = Path(run_dir) / "checkpoints"
    final = folder / f"{PREFIX}{counters['images_seen']:012d}"
    tmp = folder / f".tmp-{final.name}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp), safe_serialization=True)
    safetensors.torch.save_file({"state": gen.get_state()}, str(tmp / f"rng_{acc.process_index}.safetensors"))
    acc.wait_for_everyone()
    if acc.is_main_process:
        if ema is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
            safetensors.torch.save_file(state, str(tmp / "ema.safetensors"))
        (tmp / "trainer.json").write_text(json.dumps(counters, indent=2))
        for f in tmp.rglob("*"):  # make the bytes durable before the rename publishes them
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def load_checkpoint(acc: Accelerator, folder: Path, ema: nn.Module | None, gen: torch.Generator) -> dict:
    """Restore Accelerate's state, the EMA generator and the training generator; return the counters."""
    acc.load_state(str(folder))
    rng = folder / f"rng_{acc.process_index}.safetensors"
    if rng.is_file():
        gen.set_state(safetensors.torch.load_file(str(rng))["state"])
    if ema is not None and (folder / "ema.safetensors").is_file():
        ema.load_state_dict(safetensors.torch.load_file(str(folder / "ema.safetensors")), strict=True)
    return json.loads((folder / "trainer.json").read_text())
