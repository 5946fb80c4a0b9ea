"""The loop's bookkeeping: a loss meter without per-step syncs, a training clock with pauses, the progress bar,
signals, and the main process's log lines.

The counters themselves are :class:`ganxfer.checkpoint.Counters`, since checkpoints save them.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
log = logging.getLogger(__name__)


def announce(acc: Accelerator | None, message: str, *args: object) -> None:
    """One line to the log, at level INFO, from the main process only (``acc`` None: the caller is it)."""
    if acc is None or acc.is_main_process:
        log.info(message, *args)


class Meter:
    """Sums of detached scalar tensors, kept on the device: nothing reaches the host until :meth:`means`
    (once per log row) or :meth:`health` (every few steps)."""

    def __init__(self, *names: str):
        self.names = names
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = dict.fromkeys(self.names, 0.0)
        self.counts = dict.fromkeys(self.names, 0)

    def add(self, name: str, value: torch.Tensor) -> None:
        self.sums[name] = self.sums[name] + value.detach().float()
        self.counts[name] += 1

    def update(self, values: dict[str, torch.Tensor]) -> None:
        """:meth:`add` each of ``values``."""
        for name, value in values.items():
            self.add(name, value)

    def _stacked(self, acc: Accelerator, *extra: float) -> torch.Tensor:
        values = [torch.as_tensor(self.sums[n], dtype=torch.float32, device=acc.device) for n in self.names]
        return torch.stack(values + [torch.tensor(x, device=acc.device) for x in extra])

    def means(self, acc: Accelerator) -> dict[str, float]:
        """Each name's mean since the last call, averaged over processes (one sync); then reset."""
        sums = acc.reduce(self._stacked(acc), reduction="mean").tolist()
        out = {n: s / self.counts[n] for n, s in zip(self.names, sums, strict=True) if self.counts[n]}
        self.reset()
        return out

    def health(self, acc: Accelerator, stop: bool, due: list[bool]) -> tuple[bool, bool, list[bool]]:
        """(every sum finite on every process, some process asked to stop, which of the ``due`` flags some
        process raised), in one sync."""
        sums = acc.reduce(self._stacked(acc, float(stop), *map(float, due)), reduction="sum")
        values = sums.tolist()
        n = len(self.names)
        return all(map(math.isfinite, values[:n])), values[n] > 0, [v > 0 for v in values[n + 1:]]


def crossed(before: int, after: int, every: float | None) -> bool:
    """Did a counter pass a multiple of ``every`` going from ``before`` to ``after``? (never when ``every`` is
    0 or None)."""
    if not every or every <= 0:
        return False
    return int(after // every) > int(before // every)


@dataclass(frozen=True)
class Cadence:
    """How often the loop does something: every ``kimg`` thousand images when the recipe sets it, else every
    ``seconds`` of training time, so a CPU run and a GPU run each get a sensible number of rows, grids or
    checkpoints. ``kimg`` 0: only at the end."""

    kimg: float | None
    seconds: float

    def by_images(self, before: int, after: int) -> bool:
        return bool(self.kimg) and crossed(before, after, max(1, round(self.kimg * 1000)))

    def by_time(self, before_s: float, after_s: float) -> bool:
        return self.kimg is None and crossed(before_s, after_s, self.seconds)


class Clock:
    """Training time in seconds: ``start_s`` plus the time elapsed outside :meth:`paused` blocks."""

    def __init__(self, start_s: float = 0.0):
        self.origin = time.time() - start_s

    def __call__(self) -> float:
        return time.time() - self.origin

    @contextmanager
    def paused(self):
        """Time spent in the block (sampling, evaluation, checkpoints) is not training time."""
        t0 = time.time()
        try:
            yield
        finally:
            self.origin += time.time() - t0


class Progress:
    """The progress bar (main process): kimg of the image budget, or under a time budget (``minutes``) minutes of
    training time, so that its estimate of the time left is the budget's; the postfix shows the other count."""

    def __init__(self, images: int, minutes: float | None, images_seen: int, wall_s: float, enabled: bool,
                 **kwargs: object):
        self.minutes = minutes
        total, at, self.unit = (minutes, wall_s / 60, "min") if minutes is not None else \
            (images / 1000, images_seen / 1000, "kimg")
        form = "{l_bar}{bar}| {n:.2f}/{total:.2f} " + self.unit + " [{elapsed}<{remaining}{postfix}]"
        self.bar = tqdm(total=total, initial=min(at, total), unit=self.unit, dynamic_ncols=True, disable=not enabled,
                        bar_format=form, **kwargs)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def update(self, images_seen: int, wall_s: float) -> None:
        at = wall_s / 60 if self.unit == "min" else images_seen / 1000
        self.bar.update(min(at, self.bar.total) - self.bar.n)

    def show(self, row: dict, images_seen: int, wall_s: float) -> None:
        """A log row's losses and images/s, and kimg under a time budget."""
        out = {"d": f"{row['loss_d']:.3f}", "g": f"{row['loss_g']:.3f}", "ips": f"{row['images_per_s']:.0f}"}
        if self.minutes is not None:
            out["kimg"] = f"{images_seen / 1000:.2f}"
        self.bar.set_postfix(out)


class Stop(BaseException):
    """SIGINT or SIGTERM, raised where the signal arrived (outside :attr:`Signals.deferred` stretches)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """While ``deferred`` is true, SIGINT/SIGTERM only set :attr:`received`, so the loop can stop at the end
    of a step and save a checkpoint first; otherwise, or on a second signal, they raise :class:`Stop`."""

    def __init__(self):
        self.received: int | None = None
        self.deferred = False
        self.previous: dict[int, object] = {}

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in EXIT_CODES}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        stop = not self.deferred or self.received is not None
        self.received = self.received or signum  # kept even when Python swallows the Stop (weakref callbacks,
        if stop:                                 # __del__, an import's lock cleanup): the step boundary sees it
            raise Stop(signum)
