"""Parsing what comes from outside: JSON and YAML with bounds on size and depth.

Everything the bridge reads from the control plane, from git (files anyone
with push access may have written), from webhooks and forges is hostile until
parsed here. The parsers of the standard library and PyYAML recurse: a
document nested 10^5 deep raises `RecursionError`, which is not a
`ValueError` and would escape every handler written for bad input. Here any
failure is an `UntrustedInput` (a ValueError) that names the source, and a
document deeper than `max_depth` is refused before anything recursive walks it.

Size is checked before parsing (`max_bytes`): callers that can, check it
before they even read (e.g. a git blob's size from `ls-tree -l`).
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64  # Kubernetes objects nest ~15 deep; no honest input comes close


class UntrustedInput(ValueError):
    """Outside input that is malformed, too large or nested too deep."""


def parse_json(
    data: bytes | str,
    *,
    source: str,
    max_bytes: int | None = None,
    max_depth: int | None = MAX_DEPTH,
) -> Any:
    """`json.loads`, bounded: UntrustedInput naming `source` on any problem.

    `max_depth=None` skips the depth walk, for a caller that checks the type of
    every value it keeps in a document of fixed shape (a state file): nothing it
    keeps is deeper than it looks, and a parse too deep for the stack still
    fails here."""
    _check_size(data, source, max_bytes)
    try:
        value = json.loads(data)
    except RecursionError:
        raise UntrustedInput(f"{source}: JSON nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UntrustedInput(f"{source}: not valid JSON ({e})") from None
    if max_depth is not None:
        check_depth(value, source=source, max_depth=max_depth)
    return value


def parse_yaml(
    data: bytes | str, *, source: str, max_bytes: int | None = None, max_depth: int = MAX_DEPTH
) -> Any:
    """`yaml.safe_load` (one document), bounded: UntrustedInput naming `source`."""
    import yaml

    _check_size(data, source, max_bytes)
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise UntrustedInput(f"{source}: not UTF-8 text") from None
    # Nesting is counted before PyYAML builds anything: its composer recurses
    # once per level, so a deep document would exhaust the stack first.
    if _bracket_depth(data) > max_depth:
        raise UntrustedInput(f"{source}: YAML nested deeper than {max_depth} levels")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        value = yaml.load(data, Loader=loader)  # noqa: S506 - a safe loader
    except RecursionError:
        raise UntrustedInput(f"{source}: YAML nested too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UntrustedInput(f"{source}: not valid YAML{where}") from None
    check_depth(value, source=source, max_depth=max_depth)
    return value


def check_depth(value: Any, *, source: str, max_depth: int = MAX_DEPTH) -> None:
    """UntrustedInput when parsed JSON (dicts, lists, tuples) nests deeper than
    `max_depth`. Iterative, so the check itself cannot overflow the stack."""
    # Only containers go on the stack (a record is mostly scalars): ~2x faster.
    containers = (dict, list, tuple)
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, containers) else []
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise UntrustedInput(f"{source}: nested deeper than {max_depth} levels")
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, containers):
                stack.append((child, depth + 1))


def _check_size(data: bytes | str, source: str, max_bytes: int | None) -> None:
    if max_bytes is not None and len(data) > max_bytes:
        raise UntrustedInput(f"{source}: {len(data)} bytes; at most {max_bytes} are read")


def _bracket_depth(text: str) -> int:
    """An upper bound on the nesting of a YAML text: flow brackets (`[`, `{`)
    open at once, or a line's block prefix (indentation and `- ` markers) in
    units of two characters, whichever is larger. Cheap and conservative:
    quoted brackets count too."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}" and depth:
            depth -= 1
    block = 0
    for line in text.splitlines():
        prefix = len(line) - len(line.lstrip(" -"))
        block = max(block, prefix)
    return max(deepest, block // 2)
