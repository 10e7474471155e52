"""Named crash points for the reliability suite (fault injection).

`GITOPS_BRIDGE_CRASH_AT=<point>[:<n>]` makes the process SIGKILL itself the
n-th time (default: the first) it reaches `<point>`, so tests can prove that a
crash anywhere converges on the next run. Without the variable a checkpoint
is one dict lookup. Points: before-commit, between-commits, before-push,
during-push, after-push, writing-files.
"""

from __future__ import annotations

import os
import signal
import threading

_ENV = "GITOPS_BRIDGE_CRASH_AT"
_counts: dict[str, int] = {}
_lock = threading.Lock()


def _wanted() -> tuple[str, int] | None:
    spec = os.environ.get(_ENV)
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    return point, int(nth) if nth.isdigit() else 1


def checkpoint(point: str) -> None:
    wanted = _wanted()
    if wanted is None or wanted[0] != point:
        return
    with _lock:
        _counts[point] = _counts.get(point, 0) + 1
        hit = _counts[point] == wanted[1]
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)


def crash_soon(point: str, delay: float) -> None:
    """For points inside a long operation (a push): die `delay` seconds after reaching it."""
    wanted = _wanted()
    if wanted is None or wanted[0] != point:
        return
    with _lock:
        _counts[point] = _counts.get(point, 0) + 1
        hit = _counts[point] == wanted[1]
    if hit:
        timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL))
        timer.daemon = True
        timer.start()
