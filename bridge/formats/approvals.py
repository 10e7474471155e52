"""Approvals of held deletions: a file an operator commits to the target's branch.

When the mass-delete guard holds a target's deletions, an operator approves
some or all of them by committing `APPROVAL_FILE` inside that target's
namespace folder (`<path>/<cluster>/<namespace>/.gitops-bridge/approve-delete`):

    deploymentIds:
      - 7d1c2a4e-0000-4000-8000-000000000001

The next cycle deletes exactly the listed ids that are held and still
confirmed gone, and removes the file in the same commit. This module only
knows the path and the format; deciding is the guard's (bridge.reconcile.guard).

The name has no manifest extension on purpose (SPEC §5): Argo CD's directory
apps read `*.yaml, *.yml, *.json, *.jsonnet` and Flux generates a
kustomization from `*.yaml, *.yml`, so neither ever applies it, even where no
`kustomization.yaml` would stop them. The `.gitops-bridge` folder starts with a
dot, so it is never a deployment folder either (not a DNS label, skipped by
Argo CD's directory generator, and holding no state file).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bridge.untrusted import UntrustedInput, parse_yaml

APPROVAL_FOLDER = ".gitops-bridge"
APPROVAL_FILE = f"{APPROVAL_FOLDER}/approve-delete"
# The bridge's own record of deletions still held after an approval consumed
# part of them: without it, the deletions left over could fall below the
# guard's floor and go without approval on the next cycle.
HELD_FILE = f"{APPROVAL_FOLDER}/held-delete"
APPROVAL_KEY = "deploymentIds"
MAX_APPROVAL_BYTES = 64 * 1024  # an approval of 1,000 ids is ~40 KB
MAX_APPROVED_IDS = 10_000
# The held record lists every deletion still held, one id per line (~40 bytes):
# room for 100,000, ten times the largest target measured (Scale and sizing).
MAX_HELD_BYTES = 4 * 1024 * 1024
MAX_HELD_IDS = 100_000
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ApprovalFileError(ValueError):
    """The approval file is not what the format allows; nothing it lists is deleted."""


def approval_path(ns_dir: str) -> str:
    """The one approval file of a target: inside its namespace folder, nowhere else."""
    return f"{ns_dir}/{APPROVAL_FILE}"


def held_record(ids: Iterable[str]) -> bytes:
    """The bytes of HELD_FILE: byte-stable (sorted), in the approval file's format."""
    lines = [
        "# Written by langsmith-gitops-bridge: deletions the mass-delete guard still holds.",
        "# Approve some or all: commit approve-delete in this folder, listing their ids.",
        f"{APPROVAL_KEY}:",
        *(f"- {dep_id}" for dep_id in sorted(set(ids))),
    ]
    return ("\n".join(lines) + "\n").encode()


def parse_approval(
    data: bytes, *, max_bytes: int = MAX_APPROVAL_BYTES, max_ids: int = MAX_APPROVED_IDS
) -> tuple[str, ...]:
    """The deployment ids an approval file lists, sorted and without duplicates.

    Strict, so a typo never approves anything: a mapping with exactly the key
    `deploymentIds`, whose value is a non-empty list of deployment ids. Parsed
    through bridge.untrusted: too large or nested too deep is an ApprovalFileError
    (callers check the blob's size before they read it, too)."""
    try:
        doc = parse_yaml(data, source="approval", max_bytes=max_bytes)
    except UntrustedInput as e:
        # "approval: 70000 bytes; at most 65536 are read" -> "is 70000 bytes; ..."
        raise ApprovalFileError(f"is {str(e).partition(': ')[2]}") from None
    if not isinstance(doc, dict) or set(doc) != {APPROVAL_KEY}:
        found = sorted(str(k) for k in doc) if isinstance(doc, dict) else type(doc).__name__
        raise ApprovalFileError(
            f"must be a mapping with exactly the key {APPROVAL_KEY!r} (found: {found})"
        )
    ids = doc[APPROVAL_KEY]
    if not isinstance(ids, list) or not ids:
        raise ApprovalFileError(f"{APPROVAL_KEY!r} must be a non-empty list of deployment ids")
    if len(ids) > max_ids:
        raise ApprovalFileError(f"{APPROVAL_KEY!r} lists more than {max_ids} ids")
    for index, item in enumerate(ids):
        if not isinstance(item, str) or not _ID.match(item):
            shown = item if isinstance(item, str | int | float | bool) else type(item).__name__
            raise ApprovalFileError(
                f"{APPROVAL_KEY}[{index}] is {safe_text(repr(shown))[:80]}; "
                "allowed: a deployment id (e.g. 7d1c2a4e-0000-4000-8000-000000000001)"
            )
    return tuple(sorted(set(ids)))


def safe_text(text: str) -> str:
    """Text from git (an author's name) made safe for one log line or trailer."""
    return _CONTROL.sub("?", text.strip())
