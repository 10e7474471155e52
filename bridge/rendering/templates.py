"""The Kustomize bases and overlay defaults, loaded once as templates.

In a checkout they are `base/` and `overlays/` at the top level; an installed
wheel carries them as `bridge/_kustomize/{base,overlays}` (see pyproject.toml).
Their bytes are part of every deployment's input digest, so changing a template
re-renders what it shapes. Also the sync-wave annotation every object carries.
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


@functools.cache
def _pristine(rel: str, kind: str) -> dict[str, Any]:
    """The object of `kind` in template file `rel` (e.g. base/redis/service.yaml)."""
    for doc in _load()[0][rel]:
        if doc.get("kind") == kind:
            return copy.deepcopy(doc)
    raise KeyError(f"{rel} has no {kind}")


@functools.cache
def _pristine_defaults() -> dict[str, Any]:
    return copy.deepcopy(_load()[1])


# Templates are plain YAML data (dicts, lists, immutable scalars), copied for
# every object of every render: a copy that knows that is ~4x cheaper than
# copy.deepcopy, which was half of the render time left after canonical_yaml.
def _copy(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {k: _copy(v) for k, v in value.items()}
    if kind is list:
        return [_copy(v) for v in value]
    return value


def template(rel: str, kind: str) -> dict[str, Any]:
    """A private copy of the object of `kind` in template file `rel`."""
    copied: dict[str, Any] = _copy(_pristine(rel, kind))
    return copied


def defaults() -> dict[str, Any]:
    """A private copy of overlays/defaults.yaml."""
    copied: dict[str, Any] = _copy(_pristine_defaults())
    return copied


def templates_digest() -> str:
    return _load()[2]


SYNC_WAVE = "argocd.argoproj.io/sync-wave"
# Argo CD applies lower waves first: Secrets, then the data stores, then the
# app, then what points at the app. Flux ignores the annotation.
WAVE_SECRETS, WAVE_DATA, WAVE_APP, WAVE_EDGE = "-2", "-1", "0", "1"
