"""The progress bar: drawn per target on a TTY for big targets, never otherwise."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

from bridge.observability.progress import MIN_TOTAL, Progress


def feed(progress: Progress, total: int) -> None:
    for done in range(1, total + 1):
        progress.on_event("progress", {"target": "agents", "done": done, "total": total})


def test_draws_a_bar_that_ends_with_a_newline() -> None:
    out = io.StringIO()
    feed(Progress(enabled=True, stream=out), 50)
    text = out.getvalue()
    assert text.startswith("\ragents: [")
    assert text.endswith("] 50/50\n")
    assert text.count("\n") == 1


def test_silent_when_disabled_or_small() -> None:
    out = io.StringIO()
    feed(Progress(enabled=False, stream=out), 50)
    feed(Progress(enabled=True, stream=out), MIN_TOTAL - 1)
    Progress(enabled=True, stream=out).on_event("commit", {"target": "agents"})
    assert out.getvalue() == ""


def test_enabled_only_on_a_tty_without_quiet_or_json(tmp_path: Path) -> None:
    code = (
        "from bridge.observability.progress import Progress;"
        "print(Progress.for_terminal(quiet=False, log_format='text').enabled,"
        " Progress.for_terminal(quiet=True, log_format='text').enabled,"
        " Progress.for_terminal(quiet=False, log_format='json').enabled)"
    )
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert piped.stdout.split() == ["False", "False", "False"]
    # Under a pseudo-terminal (stderr is a TTY) only the first is on.
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            check=True,
            env={**os.environ},
        )
    finally:
        os.close(secondary)
        os.close(primary)
    assert done.stdout.split() == ["True", "False", "False"]
