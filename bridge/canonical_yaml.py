"""Canonical YAML: the one way the bridge turns data into bytes.

Sorted keys, 2-space indent, block style, trailing newline, and strings that
YAML 1.1 readers (kustomize, Argo CD, Flux) would misread as booleans, nulls
or numbers are quoted. Same data -> same bytes, on every machine.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

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
    """Plain dicts (sorted), lists and scalars; mappings and tuples of any kind accepted."""
    if isinstance(value, Mapping):
        return {str(k): _prepare(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [_prepare(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_CONTROL = re.compile("[\x00-\x1f\x7f\u2028\u2029\ufeff]")
_CONTROL_BUT_NL_TAB = re.compile("[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\ufeff]")
_TRAILING_BLANK = re.compile(r"[ \t]\n|[ \t]$")


def _has_awkward_whitespace(value: str) -> bool:
    # Literal blocks cannot hold trailing spaces on lines or leading spaces on
    # the first line faithfully; such strings stay double-quoted.
    return bool(
        _TRAILING_BLANK.search(value)
        or value.startswith((" ", "\t"))
        or _CONTROL_BUT_NL_TAB.search(value)
    )


def _needs_quotes(value: str) -> bool:
    return bool(
        value != value.strip()
        or value[0] in "!&*{}[]|>'\"%@`#,?:-"
        or ": " in value
        or " #" in value
        or _CONTROL.search(value)
    )


@functools.lru_cache(maxsize=65536)
def _str_style(value: str) -> str | None:
    if "\n" in value and not _has_awkward_whitespace(value):
        return "|"
    if value == "" or _AMBIGUOUS.match(value) or _needs_quotes(value):
        return '"'
    return None


# libyaml's emitter (CSafeDumper) is ~20x faster than a pure-Python one; the
# representers below stay in Python, so the quoting rules are ours, not libyaml's.
_Base: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_Base):  # type: ignore[misc]
    def ignore_aliases(self, data: Any) -> bool:
        return True  # never `&id001` anchors: every document spells out its data


def _represent_str(dumper: Any, value: str) -> Any:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=_str_style(value))


def _represent_none(dumper: Any, _value: None) -> Any:
    return dumper.represent_scalar("tag:yaml.org,2002:null", "null")


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(type(None), _represent_none)


def dumps(data: Any) -> str:
    """One document, canonical."""
    out: str = yaml.dump(
        _prepare(data),
        Dumper=_Dumper,
        default_flow_style=False,
        allow_unicode=True,
        sort_keys=False,  # _prepare sorted them, by str(key)
        width=4096,
        indent=2,
    )
    return out


def dump_bytes(data: Any) -> bytes:
    return dumps(data).encode("utf-8")


def dumps_all(documents: Iterable[Any]) -> str:
    """Several documents separated by `---`, each canonical."""
    return "---\n".join(dumps(d) for d in documents)
