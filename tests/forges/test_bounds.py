"""Everything from a forge is hostile: an oversized, deeply nested, slow or
malformed answer ends as ForgeAnswerInvalid (temporary, nothing changed), never
as a hang, a RecursionError or memory spent without bound."""

from __future__ import annotations

import json
import time

import pytest

from bridge.forges import ForgeAnswerInvalid, ForgeUnavailable
from tests.forges.conftest import Site

LIST = r"/pulls$|/merge_requests$"


def test_an_oversized_answer_is_not_read(site: Site) -> None:
    forge = site.client()
    chunk = b"[" + b'{"a": "' + b"x" * (1024 * 1024) + b'"},'
    site.state.fail("GET", LIST, 200, chunks=[chunk] * 12)  # 12 MiB without a length
    with pytest.raises(ForgeAnswerInvalid, match="larger than"):
        forge.find_pull("gitops-bridge/main", "main")
    site.state.fail(
        "GET", LIST, 200, headers={"Content-Length": str(64 * 1024 * 1024)}, chunks=[b"[]"]
    )
    with pytest.raises(ForgeAnswerInvalid, match="larger than"):
        forge.find_pull("gitops-bridge/main", "main")


def test_a_deeply_nested_answer_is_refused(site: Site) -> None:
    forge = site.client()
    site.state.fail("GET", LIST, 200, body=b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ForgeAnswerInvalid, match="nested"):
        forge.find_pull("gitops-bridge/main", "main")
    nested: object = "x"
    for _ in range(40):  # deeper than any forge object, shallow enough for json
        nested = [nested]
    site.state.fail("GET", LIST, 200, body=json.dumps([{"head": nested}]).encode())
    with pytest.raises(ForgeAnswerInvalid):
        forge.find_pull("gitops-bridge/main", "main")


def test_a_slow_answer_hits_the_deadline(site: Site) -> None:
    forge = site.client(deadline=0.5, timeout=5.0)
    site.state.fail("GET", LIST, 200, chunks=[b"[", b" ", b" ", b" ", b" ", b" ", b"]"], delay=0.2)
    started = time.monotonic()
    with pytest.raises(ForgeAnswerInvalid, match="longer than"):
        forge.find_pull("gitops-bridge/main", "main")
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize(
    "body",
    [
        b"<html>proxy login</html>",
        b'{"not": "a list"}',
        b'[{"number": "one"}]',
        b'[{"number": 1, "html_url": 5}]',
    ],
)
def test_malformed_answers(site: Site, body: bytes) -> None:
    forge = site.client()
    site.state.fail("GET", LIST, 200, body=body)
    with pytest.raises(ForgeUnavailable) as caught:
        forge.find_pull("gitops-bridge/main", "main")
    assert caught.value.temporary and "acme/prod-agents" in str(caught.value)
    assert not site.state.pulls


def test_hostile_strings_are_bounded_and_inert(site: Site) -> None:
    forge = site.client()
    from tests.forges.test_lifecycle import new_pull

    number = forge.open_pull(new_pull()).pull.number
    pull = site.state.pulls[number]
    pull.title = "evil\x1b[2J\u202etitle\n" + "x" * 5000
    got = forge.get_pull(number)
    assert "\x1b" not in got.title and "\u202e" not in got.title and "\n" not in got.title
    assert len(got.title) <= 1024
