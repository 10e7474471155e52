"""bridge.observability.display: outside values as one visible line; tables; whether to colour."""

from __future__ import annotations

import io
import logging

import pytest

from bridge.observability import logs
from bridge.observability.display import escape, escape_block, table, use_color

pytestmark = pytest.mark.quick


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain name-1.2", "plain name-1.2"),
        ("a\nb", r"a\nb"),
        ("a\r\tb", r"a\r\tb"),
        ("\x1b[31mred", r"\x1b[31mred"),
        ("nul\x00", r"nul\x00"),
        ("del\x7f", r"del\x7f"),
        ("nel\x85csi\x9b", r"nel\x85csi\x9b"),
        ("line\u2028para\u2029", r"line\u2028para\u2029"),
        ("\u202eevil\u2066x\u2069", r"\u202eevil\u2066x\u2069"),
        ("zero\u200bwidth\ufeff", r"zero\u200bwidth\ufeff"),
        ("lone\ud800", r"lone\ud800"),
        ("tag\U000e0041", r"tag\U000e0041"),
        ("ünïcødé 名前 ✓", "ünïcødé 名前 ✓"),
    ],
)
def test_escape(raw: str, shown: str) -> None:
    assert escape(raw) == shown
    assert escape(escape(raw)) == escape(raw)  # what it makes is all printable
    assert escape(raw).isprintable()


def test_escape_block_indents_what_follows_a_line_break() -> None:
    assert escape_block("first\n2030-01-01 ERROR x\x1b\n") == "first\n  2030-01-01 ERROR x\\x1b"


def test_table_escapes_every_cell_and_aligns() -> None:
    out = table(["A", "B"], [["x\ny", None], ["long-cell", "\x1b"]])
    assert out.split("\n") == ["A          B", "x\\ny       -", "long-cell  \\x1b"]


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_use_color() -> None:
    tty, pipe = _Stream(True), _Stream(False)
    assert use_color(None, tty, env={}) is True
    assert use_color(None, pipe, env={}) is False
    assert use_color(None, tty, env={"NO_COLOR": "1"}) is False
    assert use_color(None, tty, env={"NO_COLOR": ""}) is True  # empty: not set
    assert use_color(True, pipe, env={"NO_COLOR": "1"}) is True  # the flag wins
    assert use_color(False, tty, env={}) is False


def test_text_logs_escape_message_and_extras() -> None:
    stream = io.StringIO()
    logs.setup("text", "info", stream=stream)
    try:
        logging.getLogger("bridge.test-display").error(
            "deployment %s failed",
            "x\x1b[2J",
            extra=logs.deployment_extra("n\n2030-01-01T00:00:00 ERROR forged", "id\u2028"),
        )
    finally:
        logs.setup("text", "info")
    line = stream.getvalue()
    assert line.count("\n") == 1 and line.endswith("\n")
    assert "deployment x\\x1b[2J failed" in line
    assert "deployment=n\\n2030-01-01T00:00:00 ERROR forged deployment_id=id\\u2028" in line
