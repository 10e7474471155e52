"""Named crash points for the reliability suite (fault injection).

`GITOPS_BRIDGE_CRASH_AT=<point>[:<n>]` makes the process SIGKILL itself the
n-th time (default: the first) it reaches `<point>`, so tests can prove that a
crash anywhere converges on the next run. Without the variable a checkpoint
is one dict lookup. Points:

- `writing-files`   (publishing) a target's objects written to the clone (a batch's
                    commits, or the tree of a commit made alone), the branch not moved yet
- `before-commit`   (publishing) a target's changes planned, nothing committed
- `between-commits` (publishing) between two commits of a target's batch (fast-import
                    mid-stream: the first ones in its unfinished pack)
- `before-push`     (publishing) every commit of a target made, not pushed
- `during-push`     (publishing) 50 ms into the push (tests slow the remote with a hook)
- `after-push`      (publishing) the remote has the commits, the cycle has not finished

`GITOPS_BRIDGE_RAISE_AT=<point>[/<match>][:<n>]` raises `InjectedFault` (an
exception nobody expects) the first n times (default: every time) `<point>`
is reached with a key containing `<match>`, so tests can prove that one
failure stays with what it belongs to. Points (key in brackets):

- `plan-deployment` (reconcile; the deployment's name) planning one deployment
- `plan-target`     (reconcile; the target's namespace) planning one target
- `write-status`    (running; "") writing the status file at the end of a cycle

A crash is the whole pod dying: the git processes the bridge started (each in
its own session, see `publishing.transport.run_git`) are killed with it, so a
push or a ref update can be cut in half and leave its lock files behind.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

_ENV = "GITOPS_BRIDGE_CRASH_AT"
_RAISE_ENV = "GITOPS_BRIDGE_RAISE_AT"
_raised: dict[str, int] = {}
_counts: dict[str, int] = {}
_lock = threading.Lock()


def _wanted() -> tuple[str, int] | None:
    spec = os.environ.get(_ENV)
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    return point, int(nth) if nth.isdigit() else 1


def _hit(point: str) -> bool:
    wanted = _wanted()
    if wanted is None or wanted[0] != point:
        return False
    with _lock:
        _counts[point] = _counts.get(point, 0) + 1
        return _counts[point] == wanted[1]


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (Linux); [] where there is no /proc."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.parent.name))
    return found


def die() -> None:
    """SIGKILL this process and the process groups of its children, as a pod kill would."""
    for child in _children(os.getpid()):
        for kill in (os.killpg, os.kill):  # a child in its own session leads its group
            try:
                kill(child, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    os.kill(os.getpid(), signal.SIGKILL)


def checkpoint(point: str) -> None:
    if _hit(point):
        die()


def crash_soon(point: str, delay: float) -> None:
    """For points inside a long operation (a push): die `delay` seconds after reaching it."""
    if _hit(point):
        timer = threading.Timer(delay, die)
        timer.daemon = True
        timer.start()


class InjectedFault(RuntimeError):
    """Raised by `fault_point` under GITOPS_BRIDGE_RAISE_AT (tests only)."""


def raising() -> bool:
    """Whether GITOPS_BRIDGE_RAISE_AT is set: a loop over 10,000 deployments asks
    once, not at each one's point (an environment lookup is ~2 us)."""
    return bool(os.environ.get(_RAISE_ENV))


def fault_point(point: str, key: str = "") -> None:
    """Raise InjectedFault when GITOPS_BRIDGE_RAISE_AT names this point (and key)."""
    spec = os.environ.get(_RAISE_ENV)
    if not spec:
        return
    where, sep, count = spec.rpartition(":")
    if not (sep and count.isdigit()):
        where, count = spec, ""
    wanted, _, match = where.partition("/")
    if wanted != point or match not in key:
        return
    with _lock:
        _raised[point] = _raised.get(point, 0) + 1
        if count and _raised[point] > int(count):
            return
    raise InjectedFault(f"injected at {point}")
