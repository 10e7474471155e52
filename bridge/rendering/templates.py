"""The Kustomize bases and overlay defaults, loaded once as templates.

In a checkout they are `base/` and `overlays/` at the top level; an installed
wheel carries them as `bridge/_kustomize/{base,overlays}` (see pyproject.toml).
Their bytes are part of every deployment's input digest, so changing a template
re-renders what it shapes.
"""

from __future__ import annotations

import copy
import functools
import hashlib
from pathlib import Path
from typing import Any

import yaml

_PACKAGE = Path(__file__).resolve().parents[1]


def kustomize_root() -> Path:
    for candidate in (_PACKAGE / "_kustomize", _PACKAGE.parent):
        if (candidate / "base" / "agent-server").is_dir() and (candidate / "overlays").is_dir():
            return candidate
    raise FileNotFoundError(
        f"cannot find the Kustomize bases (looked in {_PACKAGE / '_kustomize'} and {_PACKAGE.parent})"
    )


# libyaml's safe loader where PyYAML has it: loading the templates is paid once
# per process, and the pure-Python loader made it ~70 ms of a `run --once`.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _load() -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any], str]:
    root = kustomize_root()
    docs: dict[str, list[dict[str, Any]]] = {}
    digest = hashlib.sha256()
    files = sorted(
        p
        for sub in ("base", "overlays")
        for p in (root / sub).rglob("*.yaml")
        if p.name != "kustomization.yaml"
    )
    for path in files:
        data = path.read_bytes()
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0" + data + b"\0")
        if rel == "overlays/defaults.yaml":
            continue
        docs[rel] = [d for d in yaml.load_all(data, Loader=_SafeLoader) if d]
    defaults_file = (root / "overlays" / "defaults.yaml").read_bytes()
    defaults = yaml.load(defaults_file, Loader=_SafeLoader)  # noqa: S506 - a safe loader
    return docs, defaults, digest.hexdigest()


def template(rel: str, kind: str) -> dict[str, Any]:
    """A deep copy of the object of `kind` in template file `rel` (e.g. base/redis/service.yaml)."""
    for doc in _load()[0][rel]:
        if doc.get("kind") == kind:
            return copy.deepcopy(doc)
    raise KeyError(f"{rel} has no {kind}")


def defaults() -> dict[str, Any]:
    return copy.deepcopy(_load()[1])


def templates_digest() -> str:
    return _load()[2]
