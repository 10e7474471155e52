"""What the bridge writes on a forge: titles, bodies, comments, and the hidden
markers it reads back (stateless: the pull request itself says what it was
made for).

- `<!-- gitops-bridge:state=sha256:... -->` (bridge.forges.texts): the desired
  state a body describes. Its input here is the intent of each change (the
  deployment, its input digest, what its Secrets are sealed for), not the
  bytes, which a new Secret's encryption changes on every plan.
- `<!-- gitops-bridge:paused=<sha> -->`: the bridge stopped updating the pull
  request because of that commit by someone else (commented on once).
- `<!-- gitops-bridge:closed-by-bridge -->` replaces the state marker of a pull
  request the bridge closed itself, so that it is never taken for one a
  reviewer rejected.

Every value from outside goes through bridge.forges.texts (bounded, inert
Markdown); there is no field for a secret value anywhere here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence

from bridge.forges.texts import (
    ChangeKind,
    PullEntry,
    PullTexts,
    code,
    marker_of,
    pull_texts,
)
from bridge.formats.state import STATE_FILE, DeploymentState
from bridge.reconcile.plans import Change

PAUSED_RE = re.compile(r"<!-- gitops-bridge:paused=([0-9a-f]{40}) -->")
CLOSED_MARK = "<!-- gitops-bridge:closed-by-bridge -->"
Link = Callable[[str], str | None]


def change_texts(
    changes: Sequence[Change],
    *,
    cluster: str,
    namespace: str,
    link: Link,
    paused: tuple[str, str] | None = None,
) -> PullTexts:
    """Title and body of a pull request proposing `changes`. `paused`: (sha,
    author) of the commit by someone else that stopped the bridge."""
    entries = [
        PullEntry(
            deployment_name=c.info.name,
            deployment_id=c.info.deployment_id,
            change=ChangeKind(c.info.kind),
            revision_id=c.info.revision_id,
            image=c.info.image,
            link=link(c.info.deployment_id),
        )
        for c in changes
    ]
    return pull_texts(
        entries,
        cluster=cluster,
        namespace=namespace,
        extra_state=intent(changes),
        intro=paused_note(*paused) if paused else "",
    )


def held_texts(
    held: Sequence[tuple[str, str]],
    *,
    cluster: str,
    namespace: str,
    base: str,
    link: Link,
    paused: tuple[str, str] | None = None,
) -> PullTexts:
    """The pull request whose merge approves the deletions the guard holds."""
    entries = [
        PullEntry(
            deployment_name=name, deployment_id=dep_id, change=ChangeKind.DELETE, link=link(dep_id)
        )
        for dep_id, name in held
    ]
    intro = (
        "**Merging this pull request approves these deletions.** The mass-delete guard "
        "holds them (more than the policy lets go without approval). This pull request "
        f"commits the approval file to {code(base)}; the next cycle then deletes exactly "
        "these deployments, in the bridge's rolling pull request. Close it to keep them."
    )
    if paused:
        intro += "\n\n" + paused_note(*paused)
    return pull_texts(
        entries,
        cluster=cluster,
        namespace=namespace,
        extra_state="held-deletions",
        intro=intro,
    )


def intent(changes: Sequence[Change]) -> str:
    """A digest of what the changes mean, stable across plans of the same input."""
    rows = []
    for change in changes:
        states = [v for p, v in change.write.items() if p.endswith("/" + STATE_FILE)]
        state = _state(states[0]) if len(states) == 1 else None
        sealed = sorted((k, r.sealed_for) for k, r in state.secrets.items()) if state else []
        rows.append(
            [
                change.info.kind,
                change.info.deployment_id,
                change.info.name,
                state.input_digest if state else "",
                sealed,
                sorted(p for p in change.delete),
            ]
        )
    doc = json.dumps(sorted(rows, key=lambda r: (r[1], r[0])), sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def paused_note(sha: str, author: str) -> str:
    return (
        f"<!-- gitops-bridge:paused={sha} -->\n"
        f"**Paused**: commit {code(sha[:12])} on this branch was not made by the bridge "
        f"(author {code(author, 120)}). The bridge does not update this pull request while "
        "the branch holds commits by others; it resumes when the branch is the bridge's "
        "again, and a new desired state starts a new pull request."
    )


def paused_of(body: str) -> str | None:
    found = PAUSED_RE.search(body[:16384])
    return found.group(1) if found else None


def closed_body(body: str) -> str:
    """The body of a pull request the bridge closes: its state marker replaced, so
    that the closed pull request never reads as a desired state a reviewer rejected."""
    state = marker_of(body)
    if state is None:
        return body
    return body.replace(f"<!-- gitops-bridge:state={state} -->", CLOSED_MARK, 1)


def nothing_comment(base: str) -> str:
    return (
        f"Closed by LangSmith GitOps Bridge: nothing to propose. {code(base)} already "
        "matches what the control plane wants for every deployment of this pull request. "
        "A new change opens a new pull request."
    )


def superseded_comment(base: str) -> str:
    return (
        "Closed by LangSmith GitOps Bridge: the control plane now wants something else, and "
        "this branch holds commits the bridge did not make, so it cannot be updated. A new "
        f"pull request from {code(base)} follows; the commits of this one stay here."
    )


def paused_comment(sha: str, author: str, branch: str) -> str:
    return (
        f"LangSmith GitOps Bridge stopped updating this pull request: commit {code(sha[:12])} "
        f"on {code(branch)} was not made by the bridge (author {code(author, 120)}). It "
        "resumes when the branch holds only the bridge's commits again; a new desired state "
        "closes this pull request and starts a new one."
    )


def held_nothing_comment() -> str:
    return (
        "Closed by LangSmith GitOps Bridge: the mass-delete guard holds none of these "
        "deletions any more (approved, or the deployments are back)."
    )


def _state(data: bytes) -> DeploymentState | None:
    try:
        return DeploymentState.from_bytes(data)
    except ValueError:
        return None
