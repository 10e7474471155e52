"""`bridge.cli.leave`: the process exits without Python's teardown, yet with
its exit code, its exit handlers run and its buffered output written; with
another thread still running it exits the usual way, after that thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_leave_runs_exit_handlers_and_flushes_output() -> None:
    done = run(
        """
        import atexit, sys
        from bridge.cli import leave
        atexit.register(lambda: print("handler ran"))
        print("buffered", end=" ")
        print("to stderr", end="", file=sys.stderr)
        leave(3)
        """
    )
    assert done.returncode == 3
    assert done.stdout == "buffered handler ran\n"
    assert done.stderr == "to stderr"


def test_leave_waits_for_a_thread_still_working(tmp_path: Path) -> None:
    out = tmp_path / "written"
    done = run(
        f"""
        import threading, time
        from pathlib import Path
        from bridge.cli import leave
        def work():
            time.sleep(0.3)
            Path({str(out)!r}).write_text("finished")
        threading.Thread(target=work).start()
        leave(0)
        """
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "finished"
