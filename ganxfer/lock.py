"""One writer per run folder: ``RUN/.lock`` is held (``flock``) by the process training into it.

The file names its holder (PID, host, start time) for the message a second writer gets. The kernel releases
the lock when its holder dies, however it dies, so a lock left by a killed run is taken over, with a message
naming the run that left it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from ganxfer.errors import GanxferError

log = logging.getLogger(__name__)


class LockError(GanxferError):
    """The run folder is held by another process."""


def _holder(text: str) -> dict:
    try:
        owner = json.loads(text)
        return owner if isinstance(owner, dict) else {}
    except (ValueError, RecursionError):  # damaged: the holder is simply unknown
        return {}


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir/.lock`` for the block; ``enabled=False`` (non-main
    processes of a multi-process run) makes it a no-op."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path, self.enabled, self.fd = Path(run_dir) / ".lock", enabled, None

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _holder(os.read(fd, 4096).decode(errors="replace"))
                os.close(fd)
                who = f"PID {owner.get('pid', '?')} on {owner.get('host', '?')}, since {owner.get('since', '?')}"
                raise LockError(f"{self.path.parent} is in use by another ganxfer run ({who}); wait for it to "
                                "finish, or train into another --run-dir") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:  # the holder released (unlinked) it between our open and flock
                same = False
            if not same:
                os.close(fd)
                continue
            self.fd = fd
        try:  # a signal (raised as an exception) between here and the return must not leave the lock behind
            old = _holder(os.read(self.fd, 4096).decode(errors="replace"))
            if old.get("pid"):  # a holder that released cleanly leaves no file; this one died holding it
                log.warning("taking over the lock of %s, left by PID %s on %s (started %s), which is no longer "
                            "running", self.path.parent, old["pid"], old.get("host", "?"), old.get("since", "?"))
            me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps(me).encode(), 0)
            os.fsync(self.fd)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiter then re-checks the inode and retries
            os.close(self.fd)
            self.fd = None
