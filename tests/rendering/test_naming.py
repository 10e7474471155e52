from __future__ import annotations

import re

import pytest

from bridge.models import Deployment
from bridge.rendering.naming import MAX_NAME, folder_name, folder_names, with_hash

pytestmark = pytest.mark.quick  # needs nothing beside the checkout: run in a fresh clone

LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def dep(name: str, dep_id: str) -> Deployment:
    return Deployment(
        id=dep_id,
        name=name,
        source="external_docker",
        status="READY",
        listener_id="l",
        namespace="agents",
        image_uri="acme/a:1",
        revision_id="r",
    )


def test_clean_names_are_kept() -> None:
    assert folder_name("support-agent", "id-1") == "support-agent"


def test_sanitised_names_get_an_id_hash() -> None:
    for name in ("../../x", "Support Agent", "a" * 80, "9lives", "ü", "", "-x-", "a..b"):
        out = folder_name(name, "id-1")
        assert LABEL.match(out), (name, out)
        assert len(out) <= MAX_NAME
        assert out != name
        # postgres StatefulSet name + controller-revision-hash fits a label value
        assert len(f"{out}-postgres") + 11 <= 63


def test_hash_depends_on_id_only() -> None:
    assert folder_name("My Agent", "id-1") == folder_name("My Agent", "id-1")
    assert folder_name("My Agent", "id-1") != folder_name("My Agent", "id-2")


def test_collisions_are_split_by_id() -> None:
    names = folder_names([dep("agent", "id-1"), dep("agent", "id-2"), dep("other", "id-3")])
    assert names["id-1"] != names["id-2"]
    assert names["id-3"] == "other"
    assert len(set(names.values())) == 3


def test_a_remembered_folder_name_is_keyed_on_the_name_and_the_id() -> None:
    """folder_name is remembered (it is asked for every deployment on every
    cycle): each of its two inputs still decides the answer."""
    folder_name.cache_clear()
    first = folder_name("Agent One", "id-1")
    assert folder_name("Agent One", "id-1") == first
    assert folder_name.cache_info().hits == 1
    assert folder_name("Agent One", "id-2") != first  # another id: another suffix
    assert folder_name("Agent One", "id-2") == with_hash("agent-one", "id-2")
    assert folder_name("agent-one", "id-1") == "agent-one"  # another name
