"""A lone surrogate (valid JSON: "\\ud800") anywhere in a record is found and named,
whichever way the check goes: the fast pass over plain JSON values, or the
walk that builds the path."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.models import FrozenDict, unencodable_field

LONE = "\ud800"


@pytest.mark.quick
@pytest.mark.parametrize(
    ("record", "path"),
    [
        ({"id": "x", "name": "ok"}, None),
        ({"id": "x", "name": "é ü 日本"}, None),  # not ASCII, encodable
        ({"id": LONE}, "id"),
        ({"secrets": [{"name": "a", "value": "v" + LONE}]}, "secrets[0].value"),
        ({"source_config": {"resource_spec": {"labels": {LONE: "v"}}}}, None),  # key: below
        ({"a": [[1, 2.5, True, None, ["deep", LONE]]]}, "a[0][4][1]"),
        (LONE, "(the value itself)"),
    ],
)
def test_an_unencodable_string_is_found_with_its_path(record: Any, path: str | None) -> None:
    found = unencodable_field(record)
    if path is None and isinstance(record, dict) and "source_config" in record:
        assert found is not None and found.startswith("source_config.resource_spec.labels.")
    else:
        assert found == path


@pytest.mark.quick
def test_other_containers_are_looked_at_closely() -> None:
    """Frozen values (tuples, FrozenDict) are not what json.loads makes: the fast
    pass declines them and the walk still finds what is there."""
    assert unencodable_field(FrozenDict({"a": ("ok", LONE)})) == "a[1]"
    assert unencodable_field(FrozenDict({"a": ("ok", "fine")})) is None
