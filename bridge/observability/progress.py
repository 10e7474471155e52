"""A progress bar per target for long cycles (a cold start renders thousands).

Only on a TTY and never with --quiet or JSON logs: a bar is for a person
watching, and would corrupt a log stream. Drawn on stderr with carriage
returns; a target's bar ends with a newline when it completes. Cheap when
off (one attribute check per event). The bar has no colour, so NO_COLOR
leaves it as it is (`--quiet` turns it off).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import IO

from bridge.observability.display import escape

MIN_TOTAL = 20  # small targets finish before a bar would help
WIDTH = 30


class Progress:
    def __init__(self, enabled: bool, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._last_draw = 0.0

    @classmethod
    def for_terminal(cls, *, quiet: bool, log_format: str) -> Progress:
        tty = sys.stderr.isatty()
        return cls(enabled=tty and not quiet and log_format == "text")

    def on_event(self, name: str, data: Mapping[str, object]) -> None:
        if not self.enabled or name != "progress":
            return
        done, total = int(str(data["done"])), int(str(data["total"]))
        if total < MIN_TOTAL:
            return
        now = time.monotonic()
        if done < total and now - self._last_draw < 0.1:
            return  # redraw at most ten times a second
        self._last_draw = now
        filled = WIDTH * done // total
        bar = "#" * filled + "." * (WIDTH - filled)
        end = "\n" if done == total else ""
        self.stream.write(f"\r{escape(data['target'])}: [{bar}] {done}/{total}{end}")
        self.stream.flush()
