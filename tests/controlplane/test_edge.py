"""What becomes a path, a trailer or a file name is checked where it enters:
ids are UUID-shaped, the listener's compute_id is one safe folder name, no
string holds what UTF-8 cannot encode, free-form objects are not nested deep.
Each failure names the field and why, with the value escaped (never raw, never
a secret's), and a bad deployment fails alone."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest

from bridge.errors import InvalidDeployment
from bridge.models import (
    InvalidListener,
    freeze,
    parse_deployment,
    parse_listener,
    path_component_problem,
    unencodable_field,
)
from bridge.untrusted import MAX_DEPTH
from tests.controlplane.test_client import listener_doc, record

pytestmark = pytest.mark.quick


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(depth - 1):
        node = {"x": node}
    return node


def invalid(raw: dict[str, Any], **kwargs: Any) -> InvalidDeployment:
    with pytest.raises(InvalidDeployment) as info:
        parse_deployment(raw, **kwargs)
    return info.value


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("id", "{id}\nInjected: x", "\\nInjected: x"),
        ("id", "../../etc", "'../../etc'"),
        ("id", "{id}\x00", "\\x00"),
        ("id", "urn:uuid:{id}", "urn:uuid:"),
        ("latest_revision_id", "{id}\n", "\\n"),
        ("latest_revision_id", "rev\x1b[31m", "\\x1b[31m"),
        ("latest_revision_id", "", "''"),
    ],
)
def test_an_id_that_is_no_uuid_fails_its_deployment_naming_the_field(
    field: str, value: str, shown: str
) -> None:
    raw = record("agent")
    real_id = raw["id"]
    raw[field] = value.format(id=real_id)
    error = invalid(raw)
    text = str(error)
    assert f"field {field} " in text and "is not a UUID" in text and shown in text, text
    assert not any(c in text for c in "\n\x00\x1b"), text
    assert "'agent'" in text
    # The deployment is named by its id as sent, escaped: the folder it may
    # have can be found, and the message is one line.
    assert error.deployment_id.isprintable()
    if field == "id" and real_id in value.format(id=real_id):
        assert real_id in error.deployment_id


def test_uuids_in_either_case_and_a_missing_revision_are_accepted() -> None:
    raw = record("agent")
    raw["id"] = raw["id"].upper()
    raw["latest_revision_id"] = None
    dep = parse_deployment(raw)
    assert dep.id == raw["id"] and dep.revision_id is None


def test_a_name_with_control_characters_is_kept_as_sent_but_named_escaped() -> None:
    # Names are rendered through sanitized folder names; only messages escape them.
    raw = record("agent\nx")
    assert parse_deployment(raw).name == "agent\nx"
    raw["latest_revision_id"] = "bad"
    assert "deployment 'agent\\nx' (" in str(invalid(raw))


@pytest.mark.parametrize(
    ("path", "change"),
    [
        ("secrets[0].value", {"secrets": [{"name": "TOKEN", "value": "s3cr3t-\ud800-v4lue"}]}),
        ("secrets[0].name", {"secrets": [{"name": "TOK\udfffEN", "value": "x"}]}),
        ("name", {"name": "agent-\udc80"}),
        ("source_config.resource_spec.annotations.a", None),
    ],
)
def test_a_string_utf8_cannot_encode_fails_its_deployment_without_showing_it(
    path: str, change: dict[str, Any] | None
) -> None:
    raw = record("agent")
    if change is None:
        raw["source_config"]["resource_spec"] = {"annotations": {"a": "\ud800"}}
    else:
        raw.update(change)
    text = str(invalid(raw))
    assert f"field {path} is not valid Unicode text" in text, text
    assert "s3cr3t" not in text and "v4lue" not in text
    text.encode("utf-8")  # the message itself can be logged


def test_the_text_walk_is_skipped_when_the_caller_scanned_the_bytes() -> None:
    raw = record("agent", secrets=[{"name": "TOKEN", "value": "\ud800"}])
    assert parse_deployment(raw, check_text=False).secrets[0].name == "TOKEN"


def test_unencodable_field_finds_keys_and_values_at_any_depth() -> None:
    assert unencodable_field({"a": [1, {"b": "ok"}]}) is None
    assert unencodable_field({"a": [1, {"b": "\ud800"}]}) == "a[1].b"
    assert unencodable_field({"a": {"\ud800": 1}}) == "a.\\ud800"
    assert unencodable_field([nested(5000), "\ud800"]) == "[1]"  # iterative: no recursion


@pytest.mark.parametrize("kind", ["volumes", "volume_mounts", "init_containers", "sidecars"])
def test_a_free_form_object_nested_deep_fails_its_deployment(kind: str) -> None:
    raw = record("agent")
    raw["source_config"]["resource_spec"] = {
        kind: [{"name": "ok"}, {"name": "deep", **nested(500)}]
    }
    text = str(invalid(raw))
    assert f"field source_config.resource_spec.{kind}[1] is nested deeper than 64 levels" in text


def test_freeze_allows_max_depth_and_refuses_one_more() -> None:
    assert freeze(nested(MAX_DEPTH))
    with pytest.raises(ValueError, match="nested deeper than"):
        freeze(nested(MAX_DEPTH + 1))
    with pytest.raises(ValueError, match="nested deeper than"):
        freeze(nested(100_000 // 2))  # far past Python's recursion limit: no RecursionError


@pytest.mark.parametrize(
    "compute_id",
    [
        "",
        ".",
        "..",
        "../../x",
        "a/b",
        "a\\b",
        "prod\ncluster",
        "prod\x1b[31m",
        "prod\x00",
        "prod\u200b",  # zero-width space: invisible, not printable
        ".git",
        ".GIT",
        ".Git.",
        ".git ",
        ".git. .",
        "GIT~1",
        "x" * 254,
        "\ud800",
    ],
)
def test_a_compute_id_that_is_no_safe_folder_name_is_refused(compute_id: str) -> None:
    doc = listener_doc()
    doc["compute_id"] = compute_id
    with pytest.raises(InvalidListener) as info:
        parse_listener(doc)
    text = str(info.value)
    assert "compute_id" in text and text.isprintable(), text
    assert path_component_problem(compute_id) is not None


@pytest.mark.parametrize("compute_id", ["prod-cluster", "eu.prod_1", "clúster", "a" * 253, "git"])
def test_an_ordinary_compute_id_is_accepted(compute_id: str) -> None:
    doc = listener_doc()
    doc["compute_id"] = compute_id
    assert parse_listener(doc).compute_id == compute_id


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": "not-a-uuid"}, "`id`"),
        ({"id": str(uuid.uuid4()) + "\n"}, "`id`"),
        ({"compute_config": {"k8s_namespaces": ["agents", "ns\udfff"]}}, "k8s_namespaces[1]"),
    ],
)
def test_a_listener_with_a_bad_field_is_refused_naming_it(
    change: dict[str, Any], field: str
) -> None:
    doc = copy.deepcopy(listener_doc()) | change
    with pytest.raises(InvalidListener, match=field.replace("[", r"\[")):
        parse_listener(doc)


def test_what_deployments_share_is_held_once_and_what_they_do_not_is_kept() -> None:
    """The listing is held between cycles: values most deployments share are one
    object each, and an empty labels or annotations map is one map for all."""
    first, second = (parse_deployment(json.loads(json.dumps(record(name)))) for name in ("a", "b"))
    for field in ("source", "status", "listener_id", "namespace"):
        assert getattr(first, field) is getattr(second, field), field
    assert first.resource_spec.labels is second.resource_spec.labels
    assert not first.resource_spec.labels and not first.resource_spec.annotations
    labelled = record("c")
    labelled["source_config"]["resource_spec"] = {"labels": {"team": "x"}, "annotations": {}}
    spec = parse_deployment(labelled).resource_spec
    assert dict(spec.labels) == {"team": "x"} and not spec.annotations
    assert not second.resource_spec.labels  # the shared empty map is still empty
