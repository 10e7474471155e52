"""Offline schema validation of Kubernetes objects.

Core kinds are checked against the JSON Schemas shipped in
`kubernetes-validate` (strict: unknown fields rejected), through validators
cached per (version, kind) because the library re-reads a 1.4 MB definitions
file on every call. Custom resources (Argo CD, Flux, KEDA, Gateway API,
Sealed Secrets, ...) are checked against a kubeconform-layout schema folder
(`<group>/<kind>_<version>.json`, e.g. `../shared/schemas`), made strict in
memory. A custom resource with no schema available is reported as
`unchecked`, never as valid.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema

DEFAULT_KUBERNETES_VERSION = "1.33"
# Provider metadata that schema validation ignores (SPEC §7): SOPS adds a
# top-level `sops` key to the Secret it encrypts; nothing else is ignored.
IGNORED_TOP_LEVEL_KEYS = frozenset({"sops"})


@dataclass(frozen=True)
class Finding:
    ref: str  # "Kind/namespace/name"
    errors: tuple[str, ...]
    unchecked: str | None = None  # why no schema could check it


def default_schema_dir() -> Path | None:
    """`$K8S_SCHEMA_DIR`, else `../shared/schemas` beside the working directory or checkout."""
    env = os.environ.get("K8S_SCHEMA_DIR") or os.environ.get("BRIDGE_SCHEMAS")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base.parent / "shared" / "schemas"
        if candidate.is_dir():
            return candidate
    return None


def _strict(schema: Any) -> Any:
    """Copy of a CRD schema that rejects unknown fields, as `kubectl --validate=strict`."""
    if not isinstance(schema, dict):
        return schema
    s = dict(schema)
    if (
        "properties" in s
        and "additionalProperties" not in s
        and not s.get("x-kubernetes-preserve-unknown-fields")
    ):
        s["additionalProperties"] = False
    for key in ("properties", "patternProperties"):
        if key in s:
            s[key] = {name: _strict(sub) for name, sub in s[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(s.get(key), dict):
            s[key] = _strict(s[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in s:
            s[key] = [_strict(sub) for sub in s[key]]
    return s


@functools.cache
def _crd_validator(schema_dir: str, group: str, version: str, kind: str) -> Any:
    path = Path(schema_dir) / group / f"{kind.lower()}_{version}.json"
    if not path.is_file():
        return None
    schema = _strict(json.loads(path.read_text(encoding="utf-8")))
    return jsonschema.validators.validator_for(schema)(schema)


@functools.cache
def _core_schema_folder(version: str, strict: bool) -> Path:
    import kubernetes_validate

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    wanted = tuple(int(p) for p in version.split(".")[:2])
    candidates = []
    for folder in root.iterdir():
        m = re.match(r"^v(\d+)\.(\d+)\.\d+-local(-strict)?$", folder.name)
        if m and bool(m.group(3)) == strict:
            have = (int(m.group(1)), int(m.group(2)))
            if have <= wanted:
                candidates.append((have, folder))
    if not candidates:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}")
    return max(candidates)[1]


@functools.cache
def _core_registry(folder: str) -> referencing.Registry[Any]:
    definitions = json.loads((Path(folder) / "_definitions.json").read_text(encoding="utf-8"))
    resource = referencing.Resource.from_contents(
        definitions, default_specification=referencing.jsonschema.DRAFT202012
    )
    return resource @ referencing.Registry()


# Kind schemas point into `_definitions.json` ("/api/_definitions.json#/$defs/X");
# definitions point at each other ("#/$defs/X").
_REF_MARKER = "#/$defs/"
_ANNOTATIONS = frozenset({"description", "title", "default", "examples", "$comment"})


@functools.cache
def _core_definitions(folder: str) -> dict[str, Any]:
    doc = json.loads((Path(folder) / "_definitions.json").read_text(encoding="utf-8"))
    definitions: dict[str, Any] = doc.get("$defs", {})
    return definitions


def _inline(node: Any, definitions: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """The schema with `_definitions.json` references replaced by their content.

    jsonschema resolves a `$ref` through the registry on every visit; a Deployment
    has hundreds of them, so inlining once makes validation ~3x faster (measured
    3.5 -> 1.1 ms per object). A recursive definition keeps its `$ref` (the
    registry still resolves it).
    """
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and _REF_MARKER in ref:
            name = ref.rpartition(_REF_MARKER)[2]
            if name in stack or name not in definitions:
                return node
            target = _inline(definitions[name], definitions, (*stack, name))
            rest = {k: _inline(v, definitions, stack) for k, v in node.items() if k != "$ref"}
            if set(rest) <= _ANNOTATIONS:
                return target  # annotations beside a $ref do not validate anything
            return {**rest, "allOf": [*rest.get("allOf", []), target]}
        return {k: _inline(v, definitions, stack) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, definitions, stack) for v in node]
    return node


@functools.cache
def _core_validator(folder: str, kind: str, api_version: str) -> Any:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = Path(folder) / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        return None
    schema = _inline(json.loads(path.read_text(encoding="utf-8")), _core_definitions(folder))
    resource = referencing.Resource.from_contents(
        schema, default_specification=referencing.jsonschema.DRAFT202012
    )
    registry = resource @ _core_registry(folder)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _ref(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    namespace = meta.get("namespace")
    name = meta.get("name")
    return f"{doc.get('kind')}/{namespace + '/' if namespace else ''}{name}"


def validate_document(
    doc: Mapping[str, Any],
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    schema_dir: Path | None = None,
    strict: bool = True,
) -> Finding:
    """Check one object; `errors` empty means valid, `unchecked` says no schema was found."""
    ref = _ref(doc)
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        return Finding(ref, ("apiVersion and kind are required",))
    body = {k: v for k, v in doc.items() if k not in IGNORED_TOP_LEVEL_KEYS}
    group, _, version = api_version.rpartition("/")
    # Core kinds first: kubernetes-validate knows every built-in group/version.
    folder = _core_schema_folder(kubernetes_version, strict)
    validator = _core_validator(str(folder), kind, api_version)
    if validator is None:
        if "." not in group:
            return Finding(
                ref, (f"unknown kind {kind} in {api_version} for Kubernetes {kubernetes_version}",)
            )
        if schema_dir is None:
            return Finding(ref, (), unchecked=f"no schema folder given for {api_version} {kind}")
        validator = _crd_validator(str(schema_dir), group, version, kind)
        if validator is None:
            return Finding(ref, (), unchecked=f"no schema for {api_version} {kind} in {schema_dir}")
    errors = sorted(
        (
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(body)
        ),
    )
    return Finding(ref, tuple(errors))


def validate_documents(
    docs: Iterable[Mapping[str, Any]],
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    schema_dir: Path | None = None,
    strict: bool = True,
) -> list[Finding]:
    return [
        validate_document(
            d, kubernetes_version=kubernetes_version, schema_dir=schema_dir, strict=strict
        )
        for d in docs
        if d
    ]
