"""Shared by the benchmark scripts: add a row to a benchmark's table in RESULTS.md.

benchmarks/RESULTS.md holds the current tables only (the docs site shows it as docs/results.md); each maintained
benchmark appends under its own heading there. Superseded rows move to the study's page in docs/research/.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """The machine column of every table: architecture, cores, torch version and its CPU threads."""
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def git_commit() -> str:
    """Short commit hash, marked when the working tree has uncommitted changes."""
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True).stdout.strip()
    return f"{sha} (+ uncommitted changes)" if dirty else sha


def append_row(path: Path, heading: str, columns: str, row: str) -> None:
    """Add ``row`` after the last row of the table under ``heading`` (before any prose that follows the
    table), creating the section if needed."""
    text = path.read_text() if path.is_file() else ""
    if heading not in text:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + f"{heading}\n\n{columns}\n"
    start = text.index(heading)
    end = text.find("\n## ", start)
    end = len(text) if end < 0 else end + 1
    lines = text[start:end].rstrip("\n").split("\n")
    last = max((i for i, line in enumerate(lines) if line.startswith("|")), default=len(lines) - 1)
    section = "\n".join(lines[: last + 1] + [row] + lines[last + 1 :]) + "\n"
    path.write_text(text[:start] + section + ("\n" + text[end:] if text[end:] else ""))
