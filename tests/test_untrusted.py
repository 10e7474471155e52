"""bridge.untrusted: every bad document is an UntrustedInput naming its source."""

from __future__ import annotations

import pytest

from bridge.untrusted import UntrustedInput, check_depth, parse_json, parse_yaml

pytestmark = pytest.mark.quick

DEEP = [
    b"[" * 100_000,
    b'{"a":' * 5_000,
    b"a:\n" + b"- " * 600 + b"x",
    b"[" * 70 + b"]" * 70,
]


@pytest.mark.parametrize("data", DEEP, ids=["json-list", "json-object", "yaml-block", "just-over"])
@pytest.mark.parametrize("parse", [parse_json, parse_yaml])
def test_deep_documents_are_refused_by_name(parse: object, data: bytes) -> None:
    with pytest.raises(UntrustedInput, match=r"^state of x: "):
        parse(data, source="state of x")  # type: ignore[operator]


@pytest.mark.parametrize("parse", [parse_json, parse_yaml])
def test_size_is_checked_first(parse: object) -> None:
    with pytest.raises(UntrustedInput, match="at most 10 are read"):
        parse(b'{"a": "0123456789"}', source="s", max_bytes=10)  # type: ignore[operator]


def test_honest_documents_parse() -> None:
    assert parse_json('{"a": [1, {"b": null}]}', source="s") == {"a": [1, {"b": None}]}
    assert parse_yaml(b"deploymentIds:\n  - a\n  - b\n", source="s") == {
        "deploymentIds": ["a", "b"]
    }
    nested: object = 1
    for _ in range(63):
        nested = [nested]
    check_depth(nested, source="s")


@pytest.mark.parametrize(
    "data", [b"\xff\xfe", b"{not json", b"a: [unclosed"], ids=["bytes", "json", "yaml"]
)
def test_malformed_documents_are_refused_by_name(data: bytes) -> None:
    with pytest.raises(UntrustedInput, match=r"^src: "):
        parse_json(data, source="src") if data != b"a: [unclosed" else parse_yaml(
            data, source="src"
        )
