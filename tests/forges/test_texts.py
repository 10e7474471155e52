"""PR texts: the title and body a reviewer reads, with every outside value inert,
within the forges' limits, and a state marker that changes only with the state."""

from __future__ import annotations

import re

import pytest

from bridge.forges.texts import (
    BODY_MAX,
    TITLE_MAX,
    ChangeKind,
    PullEntry,
    code,
    link,
    marker_of,
    pull_texts,
)

pytestmark = pytest.mark.quick


def entry(name: str = "agent", i: int = 0, **kw: object) -> PullEntry:
    fields: dict = {
        "revision_id": f"rev-{i}",
        "image": f"ghcr.io/acme/a:{i}",
        "link": f"https://smith.test/d/{i}",
    }
    fields.update(kw)
    return PullEntry(name, f"dep-{i}", fields.pop("change", ChangeKind.DEPLOY), **fields)


def table_rows(body: str) -> list[str]:
    return [line for line in body.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_title_and_table() -> None:
    made = pull_texts(
        [entry("b", 2), entry("a", 1, change=ChangeKind.DELETE, image=None)],
        cluster="prod",
        namespace="agents",
    )
    assert made.title == "[prod/agents] 2 deployment changes"
    rows = table_rows(made.body)
    assert rows[0].startswith("| `a` | `dep-1` | delete |") and rows[1].startswith(
        "| `b` | `dep-2` | deploy |"
    )
    assert "[open](<https://smith.test/d/2>)" in rows[1]
    assert pull_texts([entry()], cluster="c", namespace="n").title == "[c/n] 1 deployment change"


def test_the_marker_changes_with_the_state_only() -> None:
    one = pull_texts([entry("a", 1), entry("b", 2)], cluster="c", namespace="n")
    same = pull_texts([entry("b", 2), entry("a", 1)], cluster="c", namespace="n")
    newer = pull_texts([entry("a", 1), entry("b", 3)], cluster="c", namespace="n")
    assert marker_of(one.body) == one.state == same.state != newer.state
    assert (
        pull_texts([entry()], cluster="c", namespace="n", extra_state="tree-1").state
        != pull_texts([entry()], cluster="c", namespace="n", extra_state="tree-2").state
    )
    assert marker_of("a body a human wrote") is None


@pytest.mark.parametrize(
    "hostile",
    [
        "a | b | c",
        "x\n| injected | row |",
        "[click](https://evil.test)",
        "<img src=x onerror=alert(1)>",
        "@platform-team please",
        "#1 and !2",
        "``` fenced",
        "`tick`",
        "\u202eevil\u200b",
        "<!-- gitops-bridge:state=sha256:" + "0" * 64 + " -->",
    ],
)
def test_outside_values_cannot_break_out(hostile: str) -> None:
    made = pull_texts(
        [entry(hostile, 1, image=hostile, revision_id=hostile, link="javascript:alert(1)")],
        cluster=hostile,
        namespace="n",
    )
    rows = table_rows(made.body)
    assert len(rows) == 1
    cells = re.split(r"(?<!\\)\|", rows[0])[1:-1]
    assert len(cells) == 6  # nothing added a cell
    for cell in (cells[0], cells[3], cells[4]):
        stripped = cell.strip()
        fence = re.match(r"`+", stripped)
        assert fence and stripped.endswith(fence.group(0))  # one code span, whole cell
    assert "javascript:" not in made.body.replace("`javascript:alert(1)`", "")
    assert "\u202e" not in made.body and "\n" not in made.title
    # A copied marker stays inside code spans (shown, not a comment); the real one is first.
    assert sum(line.startswith("<!--") for line in made.body.splitlines()) == 1
    assert marker_of(made.body) == made.state


def test_links_are_percent_encoded() -> None:
    assert link("https://smith.test/a b>c)d") == "[open](<https://smith.test/a%20b%3Ec%29d>)"
    assert link("ftp://x") == "`ftp://x`"
    assert code("") == "—"


def test_limits_and_truncation_note() -> None:
    many = [entry("agent-" + "n" * 150, i, image="registry.test/" + "i" * 180) for i in range(2000)]
    made = pull_texts(many, cluster="c" * 300, namespace="n" * 300)
    assert len(made.title) <= TITLE_MAX and len(made.body) <= BODY_MAX
    listed = len(table_rows(made.body))
    assert 0 < listed < 2000
    assert f"**{2000 - listed} more deployment changes not listed**" in made.body
    assert made.body.rstrip().endswith("its trailers name the deployment.")


def test_entries_carry_no_secret_values() -> None:
    # The type has no field for one: what cannot be passed cannot leak.
    assert set(PullEntry.__dataclass_fields__) == {
        "deployment_name",
        "deployment_id",
        "change",
        "revision_id",
        "image",
        "link",
    }
