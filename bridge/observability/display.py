"""Text for people: outside values made safe to print, tables, and whether to colour.

Deployment names, images, ids, commit authors, error texts and file paths come
from the control plane, from git or from files anyone with push access wrote.
Printed raw, a newline in one forges a log line or a table row, an ANSI escape
repaints the terminal, a bidi override makes a name read backwards. `escape`
is the one place that turns such characters into visible escapes (`\\n`,
`\\x1b`, `\\u202e`), and every human-facing output goes through it: text logs
(bridge/observability/logs.py), the `status` and `deployments` tables, `diff`, `rekey`,
`validate`, `render`, `demo`, `audit --output markdown`, `bootstrap`'s
comments and the error line of `main`.

Machine-facing output is left alone on purpose: JSON logs and `--output json`
escape through their encoder and must round-trip the exact value; commits,
trailers and files written to git have their own encoders.

Must not: import anything but the standard library (every layer uses it).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import IO, Any

# Short forms people know; everything else is \xNN, \uNNNN or \UNNNNNNNN.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# What cannot be shown as itself: C0 and C1 controls and DEL (Cc: newlines,
# escapes, NUL, CSI \x9b, NEL \x85), format characters (Cf: bidi overrides and
# isolates, zero-width joiners, the BOM), the line and paragraph separators
# (Zl, Zp: line breaks to str.splitlines and to many viewers) and lone
# surrogates (Cs: not encodable, a print of one raises).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Fast path: printable ASCII is the common case and never needs a look-up.
_ALL_SAFE = re.compile(r"[ -~]*")


def _escape_char(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(value: object) -> str:
    """`value` as one line of text with every control character made visible.

    Printable text (any script) is unchanged; a backslash stays a backslash,
    so the result is for reading, not for parsing back."""
    text = value if isinstance(value, str) else str(value)
    if _ALL_SAFE.fullmatch(text):
        return text
    return "".join(
        _escape_char(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text
    )


def escape_lines(text: str) -> list[str]:
    """Multi-line text of the bridge's own (a diff, a report) as lines, each escaped:
    the line breaks stay line breaks, nothing inside a line can make another."""
    return [escape(line) for line in text.split("\n")]


def escape_block(text: str, indent: str = "  ") -> str:
    """A message that may span lines (a git or kustomize error): each line escaped,
    every line after the first indented, so none can pass for a line of its own."""
    return ("\n" + indent).join(escape_lines(text.rstrip("\n")))


def table(headers: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    """Columns aligned with two spaces; every cell escaped (None shows as `-`)."""
    grid = [[escape(h) for h in headers]]
    grid += [["-" if cell is None else escape(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in grid) for i in range(len(grid[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in grid
    )


def no_color(env: Mapping[str, str] | None = None) -> bool:
    """Whether the user asked for no colour (https://no-color.org: NO_COLOR set and
    not empty)."""
    return bool((os.environ if env is None else env).get("NO_COLOR"))


def use_color(flag: bool | None, stream: IO[Any], env: Mapping[str, str] | None = None) -> bool:
    """Colour or not: an explicit --color/--no-color wins, then NO_COLOR, then
    whether `stream` is a terminal."""
    if flag is not None:
        return flag
    if no_color(env):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
