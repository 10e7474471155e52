"""The commit message contract (SPEC §6): one change record -> one message.

Subjects:
    deploy(<namespace>/<name>): <image> [revision <8 chars>]
    delete(<namespace>/<name>)
    restore(<namespace>/<name>): undo manual edit
    rekey(<namespace>/<name>)
Trailers, exactly these keys and in this order: Deployment-Id, Deployment-Name,
Revision-Id, Listener-Id, Cluster, Namespace, Bridge-Version; and, only on a
`delete` that the mass-delete guard held and an operator approved (issue #17),
a last `Approved-By: Name <email>` naming the author of the approval commit.

`parse` is the inverse used by `audit`, `status` and drift detection. Nothing
secret ever goes into a message: only names, ids and the image reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ChangeKind = Literal["deploy", "delete", "restore", "rekey"]
TRAILER_KEYS = (
    "Deployment-Id",
    "Deployment-Name",
    "Revision-Id",
    "Listener-Id",
    "Cluster",
    "Namespace",
    "Bridge-Version",
)
# Optional, after the others: only on approved deletions (see bridge.formats.approvals).
APPROVED_BY = "Approved-By"
_SUBJECT = re.compile(
    r"^(?P<kind>deploy|delete|restore|rekey)\((?P<namespace>[a-z0-9-]+)/(?P<name>[a-z0-9-]+)\)"
    r"(?::\s(?P<rest>.*))?$"
)
_DEPLOY_REST = re.compile(r"^(?P<image>\S+) \[revision (?P<short>[^\]]+)\]$")
_SAFE = re.compile(r"^[^\x00-\x1f\x7f]*$")


@dataclass(frozen=True)
class CommitInfo:
    kind: ChangeKind
    namespace: str
    name: str
    deployment_id: str
    revision_id: str | None
    listener_id: str
    cluster: str
    bridge_version: str
    image: str | None = None
    body: str = ""
    approved_by: str | None = None  # "Name <email>" of the approval commit's author

    def subject(self) -> str:
        where = f"{self.namespace}/{self.name}"
        if self.kind == "deploy":
            short = (self.revision_id or "none")[:8]
            return f"deploy({where}): {self.image} [revision {short}]"
        if self.kind == "restore":
            return f"restore({where}): undo manual edit"
        return f"{self.kind}({where})"

    def trailers(self) -> list[tuple[str, str]]:
        out = [
            ("Deployment-Id", self.deployment_id),
            ("Deployment-Name", self.name),
            ("Revision-Id", self.revision_id or "none"),
            ("Listener-Id", self.listener_id),
            ("Cluster", self.cluster),
            ("Namespace", self.namespace),
            ("Bridge-Version", self.bridge_version),
        ]
        if self.approved_by is not None:
            if self.kind != "delete":
                raise ValueError("only a delete commit carries Approved-By")
            out.append((APPROVED_BY, self.approved_by))
        return out

    def message(self) -> str:
        for key, value in self.trailers():
            if not value or not _SAFE.match(value) or "\n" in value:
                raise ValueError(f"commit trailer {key} has an unsafe value")
        if self.image is not None and (not _SAFE.match(self.image) or " " in self.image):
            raise ValueError("image reference is not safe for a commit subject")
        parts = [self.subject(), ""]
        if self.body:
            if not _SAFE.match(self.body.replace("\n", "")):
                raise ValueError("commit body has control characters")
            parts += [self.body.rstrip("\n"), ""]
        parts += [f"{k}: {v}" for k, v in self.trailers()]
        return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class ParsedCommit:
    kind: ChangeKind
    namespace: str
    name: str
    image: str | None
    trailers: dict[str, str]

    @property
    def deployment_id(self) -> str | None:
        return self.trailers.get("Deployment-Id")

    @property
    def revision_id(self) -> str | None:
        rev = self.trailers.get("Revision-Id")
        return None if rev in (None, "none") else rev

    @property
    def approved_by(self) -> str | None:
        return self.trailers.get(APPROVED_BY)


def parse(message: str) -> ParsedCommit | None:
    """The change a bridge commit message describes, or None if it is not one."""
    lines = message.strip("\n").split("\n")
    if not lines:
        return None
    m = _SUBJECT.match(lines[0])
    if not m:
        return None
    image = None
    if m["kind"] == "deploy":
        rest = _DEPLOY_REST.match(m["rest"] or "")
        if not rest:
            return None
        image = rest["image"]
    trailers: dict[str, str] = {}
    # Trailers are the last paragraph.
    paragraph: list[str] = []
    for line in reversed(lines):
        if not line.strip():
            break
        paragraph.append(line)
    for line in reversed(paragraph):
        key, sep, value = line.partition(": ")
        if sep and (key in TRAILER_KEYS or key == APPROVED_BY):
            trailers[key] = value
    if set(trailers) - {APPROVED_BY} != set(TRAILER_KEYS):
        return None
    if APPROVED_BY in trailers and m["kind"] != "delete":
        return None  # the bridge never writes that: not one of its commits
    return ParsedCommit(
        kind=m["kind"],  # type: ignore[arg-type]
        namespace=m["namespace"],
        name=m["name"],
        image=image,
        trailers=trailers,
    )
