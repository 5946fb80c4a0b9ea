"""The loop's meter, clock, progress bar and signal handling."""

import io
import os
import signal
import time
import weakref

import pytest
import torch
from accelerate import Accelerator

from ganxfer.bookkeeping import Clock, Meter, Progress, Signals, Stop


def test_meter_averages_each_name_over_its_own_steps():
    acc = Accelerator(cpu=True)
    meter = Meter("loss_d", "loss_g", "r1")
    for x in (1.0, 2.0, 3.0, 6.0):  # e.g. d_steps=2: four D steps
        meter.add("loss_d", torch.tensor(x, requires_grad=True) * 1)
    meter.add("loss_g", torch.tensor(0.5))
    meter.update({"loss_g": torch.tensor(1.5), "r1": torch.tensor(8.0)})  # R1 applied on one D step of four
    assert meter.health(acc, stop=False, due=[True, False]) == (True, False, [True, False])
    assert meter.means(acc) == {"loss_d": 3.0, "loss_g": 1.0, "r1": 8.0}
    assert meter.means(acc) == {}  # reset; names without steps are left out
    meter.add("loss_g", torch.tensor(float("nan")))
    assert meter.health(acc, stop=True, due=[]) == (False, True, [])


class Ticks:
    """A ``time`` module whose clock moves only when the test says, so a busy machine changes nothing."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def test_clock_leaves_out_paused_time(monkeypatch):
    ticks = Ticks()
    monkeypatch.setattr("ganxfer.bookkeeping.time", ticks)
    clock = Clock(start_s=10.0)
    ticks.now += 2.0
    with clock.paused():
        ticks.now += 50.0
    ticks.now += 3.0
    assert clock() == 15.0


def test_signals_are_deferred_inside_the_loop_only():
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under a shell's background job
    with Signals() as signals:
        with pytest.raises(Stop):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert signals.received == signal.SIGTERM  # a run that got one is stopping, whether Stop got through or not
    with Signals() as signals:
        signals.deferred = True
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert signals.received == signal.SIGINT
        with pytest.raises(Stop):  # a second signal does not wait
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the ignored Stop, as intended
def test_a_stop_that_python_swallows_is_still_seen_at_the_step_boundary():
    """A signal that lands in a weakref callback (an import's module-lock cleanup, say) raises Stop where Python
    only prints 'Exception ignored': the loop must still see it, at the end of its first step."""

    class Thing:
        pass

    with Signals() as signals:
        thing = Thing()
        ref = weakref.ref(thing, lambda _: (os.kill(os.getpid(), signal.SIGINT), time.sleep(1)))
        del thing  # the callback runs now; its Stop is ignored
        assert ref() is None and signals.received == signal.SIGINT


def test_progress_counts_the_budget_that_ends_the_run():
    """Under train.minutes the bar counts minutes of training time, so its estimate is the time left (not hours
    to an image budget a CPU never reaches), and kimg moves to the postfix; without it, kimg of train.kimg."""
    row = {"loss_d": 1.0, "loss_g": 2.0, "images_per_s": 18.4}
    with Progress(200_000, 30.0, 0, 0.0, True, file=io.StringIO(), mininterval=0) as timed:
        timed.update(2340, 127.0)
        timed.show(row, 2340, 127.0)
        text = str(timed.bar)
    assert "2.12/30.00 min" in text and "kimg=2.34" in text and "kimg [" not in text, text
    with Progress(200_000, None, 1000, 60.0, True, file=io.StringIO(), mininterval=0) as images:
        images.update(2340, 127.0)
        images.show(row, 2340, 127.0)
        text = str(images.bar)
    assert "2.34/200.00 kimg" in text and "d=1.000" in text and "kimg=" not in text, text
    with Progress(200_000, 30.0, 2340, 1900.0, True, file=io.StringIO()) as over:  # resumed past the budget
        assert over.bar.n == 30.0
