"""Where commands write: the one rule for every output path, checked before anything is computed or written.

- **A file** (``sample --out grid.png``, ``evaluate --json``, ``plot --out``) must end in the suffix of what is
  written; an existing file is replaced only when it is a regular file with that suffix (the same kind of output).
- **A folder** (``sample --out DIR``, ``push --dry-run DIR``) must be new or empty.
- **A run folder** (``--run-dir``) must be a folder, and what the loop writes in it (``checkpoints/``,
  ``recipe.yaml``, ``.lock``, ...) must be the kind of entry the loop writes there.

For each: an empty path, a path under a file, and a location that cannot be written to (a read-only folder,
``/proc``) are refused too. Missing parent folders are created when the output is written. Every refusal is one
:class:`OutputError` line that names the path and what to do.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ganxfer.errors import GanxferError

# what the training loop writes into a run folder, by kind: a wrong kind of entry would fail mid-run
RUN_FOLDERS = ("checkpoints", "generator", "generator-best", "discriminator", "samples", "snapshots", "tb")
RUN_FILES = (".lock", "metrics.jsonl", "recipe.yaml", "transfer.json", "dropped.png")


class OutputError(GanxferError):
    """An output path that cannot be written, phrased as one line."""


def _given(path: str | Path | None, what: str, example: str) -> Path:
    """``path`` as a Path; an empty one (which ``Path('')`` would turn into the current folder) is refused."""
    text = "" if path is None else os.fspath(path)
    if not text.strip():
        raise OutputError(f"{what} is empty; name {example}")
    return Path(text).expanduser()


def _kind(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return "a broken link"
    if path.is_dir():
        return "a folder"
    if path.is_file():
        return "a file"
    return "a special file (device, FIFO or socket)"


def _writable(path: Path, what: str, folder: bool = False) -> None:
    """Refuse ``path`` (a file, or with ``folder`` a folder to write into) when one of its parents is not a folder,
    or the nearest existing one cannot be written to.

    Writability is tried (a file created and removed there), not inferred from permission bits, which say
    nothing for root, read-only mounts or ``/proc``."""
    parent = path.absolute() if folder else path.absolute().parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{what} {path}: {parent} is {_kind(parent)}, not a folder, so nothing can be written "
                          "under it; pick a path whose folders are folders")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".ganxfer-write-check-")
    except OSError as e:
        raise OutputError(f"{what} {path}: {parent} is not writable ({e.strerror}); make it writable, or pick "
                          "another location") from None
    os.close(fd)
    os.unlink(probe)


def output_file(path: str | Path | None, what: str, suffixes: tuple[str, ...]) -> Path:
    """An output file named ``path`` (for the option ``what``) that may be written as one of ``suffixes``."""
    shown = "/".join(suffixes)
    out = _given(path, what, f"a {shown} file, such as out{suffixes[0]}")
    if out.suffix.lower() not in suffixes:
        raise OutputError(f"{what} {out}: the file is written as {shown}; name it so, such as "
                          f"{out.with_suffix(suffixes[0]) if out.name not in ('.', '..') else 'out' + suffixes[0]}")
    if out.exists() or out.is_symlink():
        if out.is_dir():
            raise OutputError(f"{what} {out} is a folder; name a file inside it, such as {out / ('out' + suffixes[0])}")
        if out.is_symlink() or not out.is_file():
            raise OutputError(f"{what} {out} is {'a link' if out.is_symlink() else _kind(out)}, not a regular file; "
                              "name another file")
        if not os.access(out, os.W_OK):
            raise OutputError(f"{what} {out} is read-only; make it writable, or name another file")
    _writable(out, what)
    return out


def output_folder(path: str | Path | None, what: str) -> Path:
    """An output folder named ``path`` (for the option ``what``): new or empty, so nothing is mixed or clobbered."""
    out = _given(path, what, "a new or empty folder, such as out/")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputError(f"{what} {out} is {_kind(out)}; name a new or empty folder")
        if any(out.iterdir()):
            raise OutputError(f"{what} {out} already holds files, so it is not an empty folder; name a new or "
                              "empty folder")
    _writable(out, what, folder=True)
    return out


def check_run_dir(run_dir: str | Path | None) -> Path:
    """A run folder the loop can write: refused, before anything is touched, when it is empty, a file, under a
    file, not writable, or holds an entry of the wrong kind where the loop writes (``checkpoints`` a file,
    ``recipe.yaml`` a folder, ...)."""
    run = _given(run_dir, "--run-dir", "a folder, such as runs/mine (or leave --run-dir out for runs/<name>)")
    if run.exists() or run.is_symlink():
        if not run.is_dir():
            raise OutputError(f"--run-dir {run} is {_kind(run)}; a run folder is a folder: pick another --run-dir")
        for name in RUN_FOLDERS + RUN_FILES:
            entry = run / name
            if not (entry.exists() or entry.is_symlink()):
                continue
            want = "a folder" if name in RUN_FOLDERS else "a file"
            if _kind(entry) != want:
                raise OutputError(f"--run-dir {run}: {entry} is {_kind(entry)} where the run writes {want}; move "
                                  "it away, or pick another --run-dir")
    _writable(run, "--run-dir", folder=True)
    return run


@contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """Writes into ``path`` (checked by the functions above) whose storage fails later (a full disk, a folder made
    read-only meanwhile) end in one line too."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"{what} {path}: writing failed ({e.strerror or type(e).__name__}); free some space or "
                          "pick another location") from None
