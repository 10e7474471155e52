"""Title and body of a bridge pull request: pure, from a list of changes.

Input: what a reviewer needs per deployment (name, id, revision, image, kind
of change, a control-plane link) and the target's cluster and namespace.
Entries carry no secret value, and none can be passed: there is no field for
one. Output: a title `[cluster/namespace] N deployment changes` of at most 256
characters and a Markdown body of at most 65,536 (GitHub's limits, the
tightest of the three forges), with rows left out and a note saying so when
the table would not fit.

Every value from outside (names, ids, images, the cluster's name, links) is
made inert: cut to a bounded length, stripped of control characters, and put
in a code span whose backtick fence is longer than any run inside it, with
`|` escaped, so it cannot end a table cell, open a link, mention a user,
reference an issue or embed HTML. Links are written only for http(s) URLs,
percent-encoded so they cannot leave their `<...>`.

The body's first line is a hidden marker, `<!-- gitops-bridge:state=... -->`,
carrying a hash of the desired state (Renovate's approach): the publisher
updates a pull request's title and body only when the hash it would write
differs from the one it reads back (`marker_of`), so an unchanged state costs
no write, and a state a reviewer closed unmerged is recognised.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

TITLE_MAX = 256
BODY_MAX = 65_536
CELL_MAX = 200  # characters of one value in the table
MARKER_RE = re.compile(r"<!-- gitops-bridge:state=(sha256:[0-9a-f]{64}) -->")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class ChangeKind(enum.StrEnum):
    DEPLOY = "deploy"
    DELETE = "delete"
    RESTORE = "restore"  # undo of a manual edit
    REKEY = "rekey"  # secrets re-encrypted for new recipients


@dataclass(frozen=True)
class PullEntry:
    """One deployment change proposed by a pull request."""

    deployment_name: str
    deployment_id: str
    change: ChangeKind
    revision_id: str | None = None
    image: str | None = None
    link: str | None = None  # the deployment in the control plane's UI


@dataclass(frozen=True)
class PullTexts:
    title: str
    body: str
    state: str  # "sha256:<hex>", also in the body's marker


def state_hash(
    entries: Iterable[PullEntry], *, cluster: str, namespace: str, extra: str = ""
) -> str:
    """A hash of the desired state a pull request proposes, independent of order.
    `extra`: anything else that makes the state (e.g. the rendered tree's id)."""
    rows = sorted(
        (e.deployment_id, e.deployment_name, e.change.value, e.revision_id or "", e.image or "")
        for e in entries
    )
    doc = json.dumps(
        {"v": 1, "cluster": cluster, "namespace": namespace, "rows": rows, "extra": extra}
    )
    return "sha256:" + hashlib.sha256(doc.encode("utf-8")).hexdigest()


def marker_of(body: str) -> str | None:
    """The state hash in a pull request body written by `pull_texts`, or None."""
    found = MARKER_RE.search(body[:4096])
    return found.group(1) if found else None


def pull_texts(
    entries: Sequence[PullEntry],
    *,
    cluster: str,
    namespace: str,
    extra_state: str = "",
    intro: str = "",
) -> PullTexts:
    """Title and body for `entries`. `intro`: the bridge's own Markdown paragraph
    (e.g. "Merging this pull request approves these deletions"), not outside input."""
    state = state_hash(entries, cluster=cluster, namespace=namespace, extra=extra_state)
    count = len(entries)
    noun = "deployment change" if count == 1 else "deployment changes"
    where = f"{plain(cluster, 80)}/{plain(namespace, 80)}"
    title = f"[{where}] {count} {noun}"[:TITLE_MAX]
    head = [
        f"<!-- gitops-bridge:state={state} -->",
        f"LangSmith GitOps Bridge proposes {count} {noun} for cluster {code(cluster)}, "
        f"namespace {code(namespace)}. Merging this pull request lets Argo CD or Flux "
        f"apply {'it' if count == 1 else 'them'}.",
        "",
    ]
    if intro:
        head += [intro, ""]
    head += [
        "| deployment | id | change | revision | image | control plane |",
        "|---|---|---|---|---|---|",
    ]
    rows = [_row(e) for e in sorted(entries, key=lambda e: (e.deployment_name, e.deployment_id))]
    tail = ["", "Each change is one commit on this branch; its trailers name the deployment."]
    body = _fit(head, rows, tail)
    return PullTexts(title=title, body=body, state=state)


def _row(entry: PullEntry) -> str:
    cells = [
        code(entry.deployment_name),
        code(entry.deployment_id),
        entry.change.value,
        code(entry.revision_id) if entry.revision_id else "—",
        code(entry.image) if entry.image else "—",
        link(entry.link) if entry.link else "—",
    ]
    return "| " + " | ".join(cells) + " |"


def _fit(head: list[str], rows: list[str], tail: list[str]) -> str:
    """Head, as many rows as fit, a note for the rest, tail: at most BODY_MAX."""
    fixed = "\n".join(head) + "\n" + "\n".join(tail)
    budget = BODY_MAX - len(fixed) - 400  # room for the note
    kept: list[str] = []
    used = 0
    for row in rows:
        if used + len(row) + 1 > budget:
            break
        kept.append(row)
        used += len(row) + 1
    lines = head + kept
    left = len(rows) - len(kept)
    if left:
        lines += [
            "",
            f"**{left} more deployment change{'s' if left != 1 else ''} not listed**: the "
            f"description is limited to {BODY_MAX:,} characters. The commits of this pull "
            "request list every change.",
        ]
    return "\n".join(lines + tail)[:BODY_MAX]


def plain(value: str, limit: int = CELL_MAX) -> str:
    """Outside text for plain-text places (a title): one line, bounded."""
    text = " ".join(_UNSAFE.sub(" ", value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def code(value: str, limit: int = CELL_MAX) -> str:
    """Outside text as an inert Markdown code span, safe inside a table cell."""
    text = plain(value, limit).replace("|", "\\|")
    if not text:
        return "—"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def link(url: str) -> str:
    """An http(s) link as `[open](<url>)`; anything else shown inert."""
    if len(url) > 2048:
        return code(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return code(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return code(url)
    # Everything but the URL's own structure is percent-encoded: no `>`, `)`,
    # space, quote or backslash can end the destination or start HTML.
    safe = quote(url, safe=":/?#[]@!$&'*+,;=%-._~")
    safe = safe.replace("'", "%27").replace("*", "%2A").replace("[", "%5B").replace("]", "%5D")
    return f"[open](<{safe}>)"
