"""The approval file's format and the Approved-By trailer (issue #17): strict, so a
typo or a hostile file never approves a deletion; byte-stable held record."""

from __future__ import annotations

import pytest

from bridge.formats.approvals import (
    MAX_APPROVAL_BYTES,
    MAX_HELD_BYTES,
    MAX_HELD_IDS,
    ApprovalFileError,
    held_record,
    parse_approval,
    safe_text,
)
from bridge.formats.commits import TRAILER_KEYS, CommitInfo, parse

A = "7d1c2a4e-0000-4000-8000-000000000001"
B = "7d1c2a4e-0000-4000-8000-000000000002"


def test_a_valid_approval_lists_its_ids_sorted_once() -> None:
    text = f"# checked in LangSmith by jane\ndeploymentIds:\n  - {B}\n  - {A}\n  - {B}\n"
    assert parse_approval(text.encode()) == (A, B)
    assert parse_approval(f"deploymentIds: [{A}]".encode()) == (A,)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "exactly the key 'deploymentIds'"),
        (b"- " + A.encode(), "exactly the key 'deploymentIds'"),
        (f"deploymentIds: [{A}]\nreason: cleanup\n".encode(), "found: ['deploymentIds', 'reason']"),
        (f"deploymentids: [{A}]".encode(), "exactly the key"),
        (b"deploymentIds: []", "non-empty list"),
        (b"deploymentIds: null", "non-empty list"),
        (f"deploymentIds: {A}".encode(), "non-empty list"),
        (b"deploymentIds: [../../other-ns/x]", "deploymentIds[0] is '../../other-ns/x'"),
        (b"deploymentIds: ['a b']", "deploymentIds[0]"),
        (b"deploymentIds: [12345]", "deploymentIds[0] is 12345"),
        (b"deploymentIds: [{id: x}]", "deploymentIds[0] is 'dict'"),
        (b"deploymentIds: ['x\\u0007y']", "deploymentIds[0]"),
        (b"deploymentIds: [a", "not valid YAML at line"),
        (b"deploymentIds: [\xff]", "not UTF-8"),
        (b"a: &a [x]\nb: *a\n", "exactly the key"),
    ],
)
def test_anything_else_is_refused_with_a_clear_reason(data: bytes, says: str) -> None:
    with pytest.raises(ApprovalFileError) as caught:
        parse_approval(data)
    assert says in str(caught.value)
    assert "\x07" not in str(caught.value)


def test_an_oversized_approval_is_not_even_parsed() -> None:
    data = b"deploymentIds:\n" + f"  - {A}\n".encode() * (MAX_APPROVAL_BYTES // 40)
    with pytest.raises(ApprovalFileError, match="at most 65536 are read"):
        parse_approval(data)


def test_a_nested_approval_is_refused_not_a_crash() -> None:
    for data in (
        b"deploymentIds: " + b"[" * 512 + b"]" * 512 + b"\n",  # 1 KB, flow style
        b"deploymentIds:\n" + b"".join(b"  " * i + b"- \n" for i in range(1, 150)),
    ):
        with pytest.raises(ApprovalFileError, match="nested deeper than"):
            parse_approval(data)


def test_the_held_record_of_many_deletions_reads_back_within_its_own_bounds() -> None:
    ids = [f"7d1c2a4e-0000-4000-8000-{i:012d}" for i in range(20_000)]
    record = held_record(ids)
    assert len(record) > MAX_APPROVAL_BYTES  # larger than an approval may be
    assert len(parse_approval(record, max_bytes=MAX_HELD_BYTES, max_ids=MAX_HELD_IDS)) == 20_000
    with pytest.raises(ApprovalFileError, match="at most 65536 are read"):
        parse_approval(record)


def test_the_held_record_is_byte_stable_and_reads_back() -> None:
    one, two = held_record([B, A, B]), held_record([A, B])
    assert one == two
    assert parse_approval(one) == (A, B)
    assert one.endswith(f"deploymentIds:\n- {A}\n- {B}\n".encode())


def test_safe_text_replaces_control_characters() -> None:
    assert safe_text("Jane\x1b[31m Doe\n") == "Jane?[31m Doe"


def info(**kwargs: object) -> CommitInfo:
    base: dict[str, object] = {
        "kind": "delete",
        "namespace": "agents",
        "name": "alpha",
        "deployment_id": A,
        "revision_id": B,
        "listener_id": "00000000-0000-0000-0000-000000000000",
        "cluster": "prod-eu-1",
        "bridge_version": "1.0.0",
    }
    return CommitInfo(**{**base, **kwargs})  # type: ignore[arg-type]


def test_approved_by_is_the_last_trailer_of_an_approved_delete_only() -> None:
    message = info(approved_by="Jane Doe <jane@example.com>", body="Held; approved.").message()
    parsed = parse(message)
    assert parsed is not None and parsed.approved_by == "Jane Doe <jane@example.com>"
    assert list(parsed.trailers) == [*TRAILER_KEYS, "Approved-By"]
    assert message.rstrip("\n").endswith("Approved-By: Jane Doe <jane@example.com>")
    plain = parse(info().message())
    assert plain is not None and plain.approved_by is None
    with pytest.raises(ValueError, match="only a delete"):
        info(kind="deploy", image="r/x:1", approved_by="Jane <j@x>").message()
    with pytest.raises(ValueError, match="unsafe"):
        info(approved_by="Jane\n<j@x>").message()
    # A deploy claiming an approval is not a bridge commit (audit: drift).
    forged = info(kind="deploy", image="r/x:1").message() + "Approved-By: Jane <j@x>\n"
    assert parse(forged) is None
