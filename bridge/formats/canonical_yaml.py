"""Canonical YAML: the one way the bridge turns data into bytes.

Sorted keys, 2-space indent, block style, trailing newline, and strings that
YAML 1.1 readers (kustomize, Argo CD, Flux) would misread as booleans, nulls
or numbers are quoted. Same data -> same bytes, on every machine.

The bytes are defined by PyYAML's dumper with the representers below
(`_dumps_pyyaml`). Rendering writes ~10 documents per deployment, and that
dumper costs ~6 ms per deployment in its Python representer, so `dumps` first
tries a small emitter (`_Emitter`) that writes the same bytes for the common
subset (str-keyed mappings, lists, plain / double-quoted / literal strings,
ints, floats, bools, None) and gives the document back to PyYAML whenever it
meets anything it is not sure to spell exactly as libyaml does (an exotic
string, a long line, a non-str key, an unknown type). tests/canonical_yaml
checks the two against each other on generated and hostile data.
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


def _dumps_pyyaml(data: Any) -> str:
    """The reference spelling (and the path for anything `_Emitter` declines)."""
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


# --- the fast emitter -------------------------------------------------------------
#
# It mirrors libyaml's choices (emitter.c: yaml_emitter_analyze_scalar,
# select_scalar_style, write_*_scalar) for block style, indent 2, width 4096,
# allow_unicode, no anchors; where a rule would take more than a few lines to
# mirror, it declines (raises _Decline) and PyYAML writes the whole document.


class _Decline(Exception):
    """This document is not for the fast emitter; PyYAML writes it."""


# Characters libyaml writes as they are (IS_PRINTABLE, minus the line breaks
# U+2028/U+2029 and the BOM, which it escapes): anything else makes a string
# "special" and forces double quotes with escapes.
_PRINTABLE_CLASS = "\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd"


# Compiled on first use: these wide classes take ~8 ms to compile, paid by every
# `run --once` process at import, though an unchanged cycle writes no YAML.
@functools.cache
def _printable() -> re.Pattern[str]:
    return re.compile(f"[{_PRINTABLE_CLASS}]*")


@functools.cache
def _printable_lines() -> re.Pattern[str]:
    return re.compile(f"[\n{_PRINTABLE_CLASS}]*")


_ESCAPES = {
    "\x00": "\\0",
    "\x07": "\\a",
    "\x08": "\\b",
    "\x09": "\\t",
    "\x0a": "\\n",
    "\x0b": "\\v",
    "\x0c": "\\f",
    "\x0d": "\\r",
    "\x1b": "\\e",
    '"': '\\"',
    "\\": "\\\\",
    "\x85": "\\N",
    "\u2028": "\\L",
    "\u2029": "\\P",
}


@functools.cache
def _to_escape() -> re.Pattern[str]:
    return re.compile(f'["\\\\]|[^{_PRINTABLE_CLASS}]')


# A string longer than this could reach column 4096, where libyaml folds lines.
_MAX_SCALAR = 2000
_MAX_PAD = 1000
# Keys: libyaml writes a key longer than 128 bytes as a complex key ("? ").
_MAX_KEY_BYTES = 128
_STR_TAG = "tag:yaml.org,2002:str"
_FLOAT = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?)$"
)


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    known = _ESCAPES.get(ch)
    if known is not None:
        return known
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def _double_quoted(value: str) -> str:
    return '"' + _to_escape().sub(_escape, value) + '"'


def _resolves_to_str(value: str) -> bool:
    """Whether PyYAML's resolver reads `value` as a plain string (else libyaml quotes it)."""
    resolvers = _Dumper.yaml_implicit_resolvers
    for tag, regexp in [*resolvers.get(value[0], ()), *resolvers.get(None, ())]:
        if regexp.match(value):
            return bool(tag == _STR_TAG)
    return True


# Longer values are written without the cache. Over a cold cycle of 1,000
# deployments, the 3,080 distinct values longer than this (sealed ciphertexts,
# whole config blobs: each unique to one deployment) were asked for 3,160
# times, so they were 80 of its 352,712 hits. They were also most of its
# memory: ~12 MB of a full cache at the end of a cold cycle at 10,000.
_CACHED_SCALAR = 64


def _scalar_text(value: str) -> str | None:
    """How libyaml writes `value` in one line after "key: " or "- "; None for a
    literal block (written by the caller) or when the fast emitter declines."""
    if len(value) <= _CACHED_SCALAR:
        return _cached_scalar_text(value)
    return _scalar_text_of(value)


def _scalar_text_of(value: str) -> str | None:
    if len(value) > _MAX_SCALAR:
        raise _Decline
    style = _str_style(value)
    printable = _printable().fullmatch(value) is not None
    if style == "|":
        if not _printable_lines().fullmatch(value):
            return _double_quoted(value)  # special characters: no block scalar
        if value.startswith("\n") or value.endswith("\n\n") or value == "\n":
            raise _Decline  # needs an indentation or "+" chomping indicator
        return None
    if style == '"' or not printable:
        return _double_quoted(value)
    # Plain, unless libyaml or the resolver objects; then it would use single quotes.
    if value.startswith(("---", "...")) or value.endswith(":") or not _resolves_to_str(value):
        raise _Decline
    return value


# Bounded: template strings repeat in every render and stay cached; names, ids
# and images are unique per deployment and would only fill memory (~200 B each).
_cached_scalar_text = functools.lru_cache(maxsize=8192)(_scalar_text_of)


@functools.lru_cache(maxsize=4096)
def _key_text(key: str) -> str:
    if len(key.encode("utf-8")) > _MAX_KEY_BYTES or not _printable().fullmatch(key):
        raise _Decline
    text = _scalar_text(key)
    if text is None:
        raise _Decline
    return text


def _float_text(value: float) -> str:
    if value.is_integer():
        return str(int(value))  # as _prepare does
    if value != value or value in (float("inf"), float("-inf")):
        raise _Decline
    text = repr(value).lower()
    if "." not in text and "e" in text:
        text = text.replace("e", ".0e", 1)
    if not _FLOAT.match(text):
        raise _Decline
    return text


class _Emitter:
    def __init__(self) -> None:
        self.out: list[str] = []

    def value(self, value: Any, pad: str, lead: str, item: bool) -> None:
        """`value` after `lead` ("key: " or "- ", with what precedes it on the line):
        the rest of the line and the lines below, indented from `pad` (the column
        of that key or dash); `item` says the lead is a sequence dash."""
        out = self.out
        kind = type(value)
        if kind is str:
            text = _scalar_text(value)
            if text is None:
                self.literal(value, pad + "  ", lead)
            else:
                out.append(lead + text + "\n")
        elif kind is dict:
            self.nested_mapping(value, pad, lead, item)
        elif kind is list or kind is tuple:
            if not value:
                out.append(lead + "[]\n")
            elif item:
                self.sequence(value, pad + "  ", lead)
            else:
                # Block sequences in a mapping are not indented (libyaml's default).
                out.append(lead[:-1] + "\n")
                self.sequence(value, pad, pad)
        elif value is None:
            out.append(lead + "null\n")
        elif kind is bool:
            out.append(lead + ("true\n" if value else "false\n"))
        elif kind is int:
            out.append(lead + str(value) + "\n")
        elif kind is float:
            out.append(lead + _float_text(value) + "\n")
        elif isinstance(value, Mapping):  # last: an ABC check is slow
            self.nested_mapping(value, pad, lead, item)
        else:
            raise _Decline

    def nested_mapping(self, value: Mapping[Any, Any], pad: str, lead: str, item: bool) -> None:
        if not value:
            self.out.append(lead + "{}\n")
        elif item:  # the first key goes on the dash's line
            self.mapping(value, pad + "  ", lead)
        else:
            self.out.append(lead[:-1] + "\n")
            self.mapping(value, pad + "  ", pad + "  ")

    def mapping(self, mapping: Mapping[Any, Any], pad: str, first: str) -> None:
        if len(pad) > _MAX_PAD:
            raise _Decline
        out = self.out
        line = first
        for key in sorted(mapping):  # TypeError (mixed key types) declines too
            if type(key) is not str:
                raise _Decline
            value = mapping[key]
            lead = line + _key_text(key) + ": "
            line = pad
            if type(value) is str:  # the common case, without a call
                text = _scalar_text(value)
                if text is not None:
                    out.append(lead + text + "\n")
                    continue
            self.value(value, pad, lead, False)

    def sequence(self, items: list[Any] | tuple[Any, ...], pad: str, first: str) -> None:
        if len(pad) > _MAX_PAD:
            raise _Decline
        line = first
        for item in items:
            self.value(item, pad, line + "- ", True)
            line = pad

    def literal(self, value: str, pad: str, lead: str) -> None:
        chomp = "" if value.endswith("\n") else "-"
        lines = value[:-1].split("\n") if not chomp else value.split("\n")
        self.out.append(lead + "|" + chomp + "\n")
        self.out.extend(pad + line + "\n" if line else "\n" for line in lines)


def _dumps_fast(data: Any) -> str:
    """`_dumps_pyyaml(data)` for the subset it knows; raises _Decline otherwise."""
    emitter = _Emitter()
    if type(data) is dict or isinstance(data, Mapping):
        if not data:
            return "{}\n"
        emitter.mapping(data, "", "")
    elif type(data) is list or type(data) is tuple:
        if not data:
            return "[]\n"
        emitter.sequence(data, "", "")
    else:
        raise _Decline  # a bare scalar document: rare, and libyaml adds "..." to some
    return "".join(emitter.out)


def dumps(data: Any) -> str:
    """One document, canonical."""
    try:
        return _dumps_fast(data)
    except (_Decline, TypeError):
        return _dumps_pyyaml(data)


def dump_bytes(data: Any) -> bytes:
    return dumps(data).encode("utf-8")


def dumps_all(documents: Iterable[Any]) -> str:
    """Several documents separated by `---`, each canonical."""
    return "---\n".join(dumps(d) for d in documents)
