"""Resumable training state, pickle-free: tensors in safetensors files, everything else in JSON.

A checkpoint ``RUN/checkpoints/step-<images seen, 12 digits>/`` holds

- ``G.safetensors``, ``D.safetensors``, ``ema.safetensors``: the networks' state dicts;
- ``optim.safetensors`` + ``optim.json``: both optimizers' tensors and the rest of their state (and the
  GradScaler's, under fp16);
- ``rng_<rank>.safetensors``: torch's CPU (and CUDA) generator and the loop's own, per process (the loop's
  is alike on every process, so a run resumed with more processes gives the new ranks rank 0's file, and one
  resumed with fewer ignores the extra files: the data order and the draws depend only on the images seen);
- ``trainer.json``: the :class:`Counters`; written last, it marks the checkpoint complete.

It is written into ``checkpoints/.tmp-*``, fsynced, renamed into place and the folder fsynced, so an
interrupted write never shadows the previous checkpoint. Pruning renames to ``.old-*`` before deleting; both
kinds of leftover are removed by :func:`clean_leftovers`. Nothing here is ever unpickled.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import safetensors.torch
import torch
from accelerate import Accelerator
from torch import nn

from ganxfer.errors import GanxferError

PREFIX = "step-"
log = logging.getLogger(__name__)


class CheckpointError(GanxferError):
    """A checkpoint that cannot be written, or that does not fit the run, phrased as one line."""


class Damaged(Exception):
    """A checkpoint folder that does not load; the message says why."""


@dataclass
class Counters:
    """The loop's bookkeeping, saved as ``trainer.json``."""

    images_seen: int = 0  # real images shown to D, over all processes
    step: int = 0  # generator steps
    d_step: int = 0  # discriminator steps (R1's cadence counts these)
    wall_s: float = 0.0  # training time, pauses for sampling, evaluation and checkpoints excluded
    best: float | None = None  # best eval.best_metric so far (lower is better)


def number(path: Path) -> int | None:
    """The images seen of a checkpoint folder ``step-<digits>``; None for any other name."""
    digits = path.name[len(PREFIX):]
    return int(digits) if path.name.startswith(PREFIX) and digits.isdigit() else None


def candidates(run_dir: Path) -> list[Path]:
    """Every ``step-*`` entry of a run, complete or not: stray names (``step-abc``) first, then newest first."""
    folder = Path(run_dir) / "checkpoints"
    found = [p for p in folder.iterdir() if p.name.startswith(PREFIX)] if folder.is_dir() else []
    return sorted(found, key=lambda p: (number(p) is not None, -(number(p) or 0), p.name))


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run (those with ``trainer.json``), oldest first."""
    found = [p for p in candidates(run_dir) if number(p) is not None and (p / "trainer.json").is_file()]
    return found[::-1]


def clean_leftovers(run_dir: Path) -> list[str]:
    """Remove what an interrupted write (``.tmp-*``) or prune (``.old-*``) left behind; return their names."""
    folder = Path(run_dir) / "checkpoints"
    gone = [p for p in folder.glob(".*") if p.name.startswith((".tmp-", ".old-"))] if folder.is_dir() else []
    for p in gone:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return sorted(p.name for p in gone)


def nonfinite(nets: dict[str, nn.Module | None]) -> list[str]:
    """The names of the networks holding a NaN or infinite weight or buffer (one host sync per network)."""
    bad = []
    for name, net in nets.items():
        floats = [t.isfinite().all() for t in net.state_dict().values() if t.is_floating_point()] if net else []
        if floats and not torch.stack(floats).all().item():
            bad.append(name)
    return bad


def fault(e: OSError, where: Path, need_bytes: int = 0) -> str | None:
    """One line for a storage fault (full disk, file-size limit, read-only folder), or None for other errors."""
    need = f"; it needs about {need_bytes / 2**20:.1f} MB" if need_bytes else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left to write into {where}{need}: free some space there, or use --run-dir on another disk"
    if e.errno == errno.EFBIG:
        return (f"a file in {where} exceeds the file-size limit ({e.strerror}){need}: raise 'ulimit -f', "
                "or use --run-dir on a file system that takes larger files")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{where} is not writable ({e.strerror}): make it writable, or use --run-dir for another folder"
    return None


# --- writing ---------------------------------------------------------------------------------------------


def _split(obj, key: str, tensors: dict[str, torch.Tensor]):
    """``obj`` as JSON, with each tensor stored in ``tensors`` under ``key`` and replaced by a reference."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {"tensor": key}
    if isinstance(obj, dict):  # a list of pairs keeps int keys (optimizer state is keyed by parameter index)
        return {"dict": [[k, _split(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint ({key})")


def _join(obj, tensors: dict[str, torch.Tensor]):
    """The inverse of :func:`_split`."""
    if isinstance(obj, dict):
        if "tensor" in obj:
            return tensors[obj["tensor"]]
        return {k: _join(v, tensors) for k, v in obj["dict"]}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _rng_state(acc: Accelerator, rng: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"loop": rng.get_state(), "torch": torch.get_rng_state()}
    if acc.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(acc.device)
    return state


def _write(path: Path, data: bytes | str) -> None:
    """Write and fsync one file. Safetensors go through here as bytes: its own writer turns ``OSError`` into
    a ``SafetensorError`` that no longer says which fault it was."""
    with open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    _write(path, safetensors.torch.save(tensors))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _retire(path: Path) -> None:
    """Delete a checkpoint folder so that an interruption leaves an ``.old-*`` leftover, never a half folder."""
    old = path.with_name(f".old-{path.name}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)
    shutil.rmtree(old)


def save_checkpoint(acc: Accelerator, run_dir: Path, counters: Counters, nets: dict[str, nn.Module | None],
                    optimizers: dict[str, torch.optim.Optimizer], rng: torch.Generator, keep: int) -> Path:
    """Write a checkpoint atomically (every process must call this) and prune all but the newest ``keep``.

    ``nets`` are unwrapped networks (None for an absent EMA). Non-finite weights are refused before anything
    is written; a storage fault removes the temporary folder and becomes a :class:`CheckpointError`.
    """
    folder = Path(run_dir) / "checkpoints"
    final = folder / f"{PREFIX}{counters.images_seen:012d}"
    tmp = folder / f".tmp-{final.name}"
    bad = nonfinite(nets)
    if bad:
        raise CheckpointError(f"{' and '.join(bad)} hold NaN or infinite weights; not writing {final}")
    need = sum(t.numel() * t.element_size() for n in nets.values() if n for t in n.state_dict().values()) * 3
    try:
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        _save(_rng_state(acc, rng), tmp / f"rng_{acc.process_index}.safetensors")
        acc.wait_for_everyone()
        if acc.is_main_process:
            for name, net in nets.items():
                if net is not None:
                    _save(_cpu(net.state_dict()), tmp / f"{name}.safetensors")
            tensors: dict[str, torch.Tensor] = {}
            structure = {name: _split(o.state_dict(), name, tensors) for name, o in optimizers.items()}
            if acc.scaler is not None:
                structure["scaler"] = _split(acc.scaler.state_dict(), "scaler", tensors)
            _save(tensors, tmp / "optim.safetensors")
            _write(tmp / "optim.json", json.dumps(structure))
            _write(tmp / "trainer.json", json.dumps(asdict(counters), indent=2))  # every file is fsynced
            if final.exists():
                _retire(final)
            os.replace(tmp, final)
            _fsync_dir(folder)  # the rename is durable too
            older = [p for p in checkpoints(run_dir) if number(p) <= counters.images_seen]
            for old in older[:-keep]:
                _retire(old)
    except OSError as e:
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        message = fault(e, folder, need)
        if message is None:
            raise
        raise CheckpointError(f"{message} (the previous checkpoint is intact)") from None
    acc.wait_for_everyone()
    return final


# --- reading ---------------------------------------------------------------------------------------------


@dataclass
class State:
    """A checkpoint read into memory, checked, and not yet applied."""

    folder: Path
    counters: Counters
    nets: dict[str, dict[str, torch.Tensor]]
    optimizers: dict[str, dict]
    scaler: dict | None
    rng: dict[str, torch.Tensor]


def read_checkpoint(folder: Path, rank: int, names: list[str]) -> State:
    """Read every file of a checkpoint; raise :class:`Damaged` (with the reason) if any does not load."""
    if number(folder) is None:
        raise Damaged(f"'{folder.name}' is not a checkpoint name (step-<digits>)")
    if (folder / "optimizer.bin").exists():
        raise Damaged("an older, pickled Accelerate checkpoint (optimizer.bin), which ganxfer no longer reads")
    try:
        counters = read_counters(folder / "trainer.json")
        if counters.images_seen != number(folder):
            raise ValueError(f"trainer.json says images_seen={counters.images_seen!r}")
        nets = {n: safetensors.torch.load_file(str(folder / f"{n}.safetensors")) for n in names}
        tensors = safetensors.torch.load_file(str(folder / "optim.safetensors"))
        structure = json.loads((folder / "optim.json").read_text())
        optimizers = {k: _join(v, tensors) for k, v in structure.items() if k != "scaler"}
        scaler = _join(structure["scaler"], tensors) if "scaler" in structure else None
        own = folder / f"rng_{rank}.safetensors"
        rng = safetensors.torch.load_file(str(own if own.is_file() else folder / "rng_0.safetensors"))
    except Exception as e:  # noqa: BLE001 - any failure to parse a file is damage, reported as one reason
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise Damaged(f"{type(e).__name__}: {reason}") from None
    return State(folder, counters, nets, optimizers, scaler, rng)


def read_counters(path: Path) -> Counters:
    """A ``trainer.json``, each counter checked: a whole number >= 0 (``best``: a finite number or null,
    ``wall_s``: a finite number >= 0); ValueError names the first that is not."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"trainer.json holds a JSON {type(data).__name__}, not an object")
    counters = Counters(**{f.name: data[f.name] for f in fields(Counters) if f.name in data})
    for f in fields(Counters):
        value = getattr(counters, f.name)
        number_ = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = (value is None or number_) if f.name == "best" else \
            number_ and value >= 0 and (f.name == "wall_s" or isinstance(value, int))
        if not ok:
            raise ValueError(f"trainer.json says {f.name}={value!r}")
    counters.wall_s = float(counters.wall_s)
    return counters


def _check_fits(state: State, nets: dict[str, nn.Module]) -> None:
    for name, net in nets.items():
        ours = net.state_dict()
        theirs = state.nets[name]
        for key in sorted(ours.keys() | theirs.keys()):
            a = tuple(theirs[key].shape) if key in theirs else "absent"
            b = tuple(ours[key].shape) if key in ours else "absent"
            if a != b:
                raise CheckpointError(f"{state.folder} does not fit this recipe: {name} tensor '{key}' is {a} there "
                                      f"and {b} here; the architecture cannot change on --resume (drop the --set "
                                      "that changes it), or start a new --run-dir")


def _restore_loop_rng(rng: torch.Generator, saved: torch.Tensor, images_seen: int, folder: Path, say: bool) -> None:
    """The loop's generator as the checkpoint left it; from a checkpoint of another device type (a CPU's
    mt19937 state on a GPU's Philox generator, or the reverse) it is seeded from the saved state and the images
    seen instead, the same on every process and every resume, and the run is no longer bit-exact."""
    if saved.numel() == rng.get_state().numel():
        rng.set_state(saved)
        return
    digest = hashlib.sha256(saved.contiguous().numpy().tobytes() + str(images_seen).encode()).digest()
    rng.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    if say:
        log.warning("--resume: checkpoints/%s holds the random state of another device type (this run is on %s); "
                    "the loop's random draws go on from a seed derived from it, so the run is no longer bit-exact "
                    "with an uninterrupted one", folder.name, rng.device.type)


def load_checkpoint(acc: Accelerator, run_dir: Path, nets: dict[str, nn.Module | None],
                    optimizers: dict[str, torch.optim.Optimizer], rng: torch.Generator) -> State:
    """Restore the newest checkpoint that loads, saying why each newer one was skipped; return what it read.

    Every process reads the same files and so picks the same checkpoint. A checkpoint that loads but does
    not fit the networks (another architecture) is an error, not a reason to fall back.
    """
    present = {n: net for n, net in nets.items() if net is not None}
    skipped = []
    for folder in candidates(run_dir):
        try:
            state = read_checkpoint(folder, acc.process_index, list(present))
        except Damaged as e:
            skipped.append(folder.name)
            if acc.is_main_process:
                log.warning("--resume: skipping checkpoints/%s: %s", folder.name, e)
            continue
        _check_fits(state, present)
        saved_by = len(list(folder.glob("rng_*.safetensors")))
        if saved_by != acc.num_processes and acc.is_main_process:
            log.info("--resume: checkpoints/%s was written by %d process(es) and continues with %d; the global "
                     "batch, data order and random draws stay the same", folder.name, saved_by, acc.num_processes)
        for name, net in present.items():
            net.load_state_dict(state.nets[name], strict=True)
        try:
            for name, opt in optimizers.items():
                opt.load_state_dict(state.optimizers[name])
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{folder}: the optimizer state does not fit this recipe ({e}); resume with the "
                                  "run's own recipe, or start a new --run-dir") from None
        if acc.scaler is not None and state.scaler is not None:
            acc.scaler.load_state_dict(state.scaler)
        _restore_loop_rng(rng, state.rng["loop"], state.counters.images_seen, folder, acc.is_main_process)
        torch.set_rng_state(state.rng["torch"])
        if "cuda" in state.rng and acc.device.type == "cuda":
            torch.cuda.set_rng_state(state.rng["cuda"], acc.device)
        return state
    raise CheckpointError(f"--resume: none of the {len(skipped)} checkpoint(s) in {Path(run_dir) / 'checkpoints'} "
                          "loads (see the warnings above); start over with --overwrite, or use another --run-dir")
