"""SIGTERM and SIGINT stop the run loop whenever they come, even in the middle of
its wait between cycles. The handler takes no lock: an Event.set() in it once
deadlocked against the Event.wait() it interrupted, and a pod then stayed up
until the kubelet's SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.quick

STRESS = textwrap.dedent(
    """
    import os, random, signal, threading
    from bridge.commands.run import Stopper

    for _ in range(400):
        stopper = Stopper()
        stopper.install()
        # The signal lands anywhere in the wait: before it, inside select(), after it.
        timer = threading.Timer(random.random() * 0.003, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        while not stopper.wait(0.0005):
            pass
        timer.join()
        assert stopper.is_set() and stopper.signal == signal.SIGTERM
        stopper.restore()
    print("stopped 400 times")
    """
)


def test_a_signal_during_the_wait_always_stops_it() -> None:
    done = subprocess.run(
        [sys.executable, "-c", STRESS], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped 400 times" in done.stdout


def test_restore_gives_back_the_previous_handlers() -> None:
    import signal

    from bridge.commands.run import Stopper

    before = signal.getsignal(signal.SIGTERM)
    stopper = Stopper()
    stopper.install()
    assert signal.getsignal(signal.SIGTERM) != before
    assert not stopper.wait(0.01)
    stopper.restore()
    assert signal.getsignal(signal.SIGTERM) == before
