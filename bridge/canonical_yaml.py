"""Canonical YAML: the one way the bridge turns data into bytes.

Sorted keys, 2-space indent, block style, trailing newline, and strings that
YAML 1.1 readers (kustomize, Argo CD, Flux) would misread as booleans, nulls
or numbers are quoted. Same data -> same bytes, on every machine.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

# YAML 1.1 and 1.2 resolve these plain scalars to something other than a string.
_AMBIGUOUS = re.compile(
    r"""^(?:
        [-+]?(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][-+]?\d+)?   # numbers, 0123, 1e3, .5
      | [-+]?0[xXoObB][0-9a-fA-F_]+                      # hex / octal / binary
      | [-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)
      | y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE
      | on|On|ON|off|Off|OFF|null|Null|NULL|~
      | \d+(?::[0-5]?\d)+(?:\.\d*)?                      # sexagesimal (YAML 1.1)
      | \d{4}-\d\d?-\d\d?(?:[Tt ].*)?                    # timestamps
      | <<|=
    )$""",
    re.VERBOSE,
)


def _prepare(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _prepare(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_prepare(v) for v in value]
    if isinstance(value, str):
        if "\n" in value and not _has_awkward_whitespace(value):
            return LiteralScalarString(value)
        if value == "" or _AMBIGUOUS.match(value) or _needs_quotes(value):
            return DoubleQuotedScalarString(value)
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _has_awkward_whitespace(value: str) -> bool:
    # Literal blocks cannot hold trailing spaces on lines or leading spaces on
    # the first line faithfully; such strings stay double-quoted.
    return (
        any(line != line.rstrip(" \t") for line in value.split("\n"))
        or value.startswith((" ", "\t"))
        or "\r" in value
        or any(ord(c) < 32 and c not in "\n\t" for c in value)
    )


def _needs_quotes(value: str) -> bool:
    return (
        value != value.strip()
        or value[0] in "!&*{}[]|>'\"%@`#,?:-"
        or ": " in value
        or " #" in value
        or any(ord(c) < 32 or c in "\x7f\u2028\u2029\ufeff" for c in value)
    )


def _yaml() -> YAML:
    y = YAML(typ="rt", pure=True)
    y.indent(mapping=2, sequence=2, offset=0)
    y.width = 4096
    y.default_flow_style = False
    y.allow_unicode = True
    y.explicit_start = False
    representer = y.representer
    assert isinstance(representer, RoundTripRepresenter)
    representer.add_representer(
        type(None),
        lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"),
    )
    return y


_YAML = _yaml()


def dumps(data: Any) -> str:
    """One document, canonical."""
    stream = io.StringIO()
    _YAML.dump(_prepare(data), stream)
    return stream.getvalue()


def dump_bytes(data: Any) -> bytes:
    return dumps(data).encode("utf-8")


def dumps_all(documents: Iterable[Any]) -> str:
    """Several documents separated by `---`, each canonical."""
    return "---\n".join(dumps(d) for d in documents)
