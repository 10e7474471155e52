"""Logging: one line per event, text or JSON, never a secret.

Every record about a deployment carries `deployment` (name) and
`deployment_id` extras. A filter scrubs registered secret values from every
message as a last line of defence; the first line is never to log them.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

from bridge.errors import code_location
from bridge.observability.display import escape
from bridge.redaction import MASK, Redacted, scrub

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
_EXTRA_KEYS = (
    "deployment",
    "deployment_id",
    "target",
    "namespace",
    "revision",
    "commit",
    "event",
    "seconds",
)


def register_secret(value: Redacted | str | None) -> None:
    """Values the log filter must never let through (API key, bridge key, ...)."""
    text = value.reveal() if isinstance(value, Redacted) else value
    if text and len(text) >= 4:
        with _LOCK:
            _SECRETS.add(text)


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        with _LOCK:
            secrets = tuple(_SECRETS)
        cleaned = scrub(message, *secrets)
        if record.exc_info and record.exc_info[1] is not None:
            # A traceback's text may quote values (a secret of a deployment that
            # no filter knows): its frames only, on the event's one line.
            exc = record.exc_info[1]
            cleaned += f" [traceback: {type(exc).__name__} at {code_location(exc, frames=8)}]"
            record.exc_info = None
            record.exc_text = None
        record.msg = cleaned.replace("\n", " | ")
        record.args = ()
        for key in _EXTRA_KEYS:
            value = getattr(record, key, None)
            if isinstance(value, str):
                setattr(record, key, scrub(value, *secrets))
            elif isinstance(value, Redacted):
                setattr(record, key, MASK)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        return json.dumps(doc, sort_keys=True, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <message> key=value ...`, one line per record: the message
    and every extra are escaped (bridge.display), so no value from outside can
    start a line of its own or send a terminal escape."""

    def format(self, record: logging.LogRecord) -> str:
        base = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f" {record.levelname:<7} {escape(record.getMessage())}"
        )
        extras = [
            f"{key}={escape(getattr(record, key))}"
            for key in _EXTRA_KEYS
            if getattr(record, key, None) is not None
        ]
        return base + (" " + " ".join(extras) if extras else "")


def setup(fmt: str = "text", level: str = "info", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ScrubFilter())
    root = logging.getLogger("bridge")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def deployment_extra(name: str, deployment_id: str, **more: Any) -> dict[str, Any]:
    return {"deployment": name, "deployment_id": deployment_id, **more}
