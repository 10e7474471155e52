"""JSON Schemas for custom resources, made from the CustomResourceDefinitions a user has.

`gitops-bridge schemas import CRD_FILE... --out DIR` reads multi-document YAML
files, takes the `openAPIV3Schema` of every served version of every
CustomResourceDefinition in them, and writes one JSON Schema per kind and
version in the kubeconform layout that `bridge.validation.schemas` reads (and kubeconform
itself can use): `<group>/<kind in lower case>_<version>.json`.

The conversion changes as little as possible, the same way as the schemas in
`../shared/schemas` were made (their README), so that a folder made here and
that one are interchangeable, byte for byte for the same CRD:

* the root gets `"$schema"` (draft 7) and `"x-kubernetes-group-version-kind"`;
* OpenAPI's `nullable: true` becomes `null` added to `type` (and to `enum`);
* OpenAPI 3.0's boolean `exclusiveMinimum`/`exclusiveMaximum` become draft 7's
  numbers;
* `x-kubernetes-int-or-string: true` with neither `type` nor `anyOf` (allowed in
  a structural schema, and then JSON Schema would accept anything) gets
  `anyOf: [{type: integer}, {type: string}]`, which is what controller-gen writes;
* no `additionalProperties: false` is added: `bridge.validation.schemas` makes schemas
  strict in memory, respecting `x-kubernetes-preserve-unknown-fields`.

Output is `json.dumps(sort_keys=True, indent=2, ensure_ascii=False)` plus a
newline: the same CRD gives the same bytes, whatever the order of its YAML keys.
Every input is read and converted before anything is written, so a bad input
writes nothing; every name that becomes part of a path is checked first, and
the resolved path must stay inside the output folder.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import yaml

from bridge.errors import ConfigError

DRAFT7 = "http://json-schema.org/draft-07/schema#"
CRD_API_VERSION = "apiextensions.k8s.io/v1"
# What Kubernetes itself accepts for these names (a CRD's group must contain a
# dot; kinds are CamelCase). They become path components, so they are checked
# strictly: no `/`, no `..`, nothing a filesystem would read specially.
_GROUP = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$"
)
_VERSION = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,62}$")

# Keys whose value is a schema, a map of schemas or a list of schemas. Only these
# are walked: `default`, `example` and `enum` hold data that may look like a schema.
_SCHEMA_VALUES = ("items", "additionalProperties", "not")
_SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


@dataclass(frozen=True)
class SchemaFile:
    """One schema to write: its path under the output folder and its bytes."""

    path: str  # "<group>/<kind lower>_<version>.json"
    data: bytes
    source: str  # "FILE, document N (CustomResourceDefinition NAME)", for messages


_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster


class _Loader(_SafeLoader):  # type: ignore[misc]
    """PyYAML's safe loader (libyaml where present) without YAML 1.1 timestamps: a `default: 2024-01-01`
    is a string to Kubernetes (sigs.k8s.io/yaml goes through JSON) and must not
    become a datetime that JSON cannot hold."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, Any]]]] = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in _SafeLoader.yaml_implicit_resolvers.items()
    }


def schema_files(paths: Sequence[Path], *, ignore_other_kinds: bool = False) -> list[SchemaFile]:
    """The schema of every served version of every CRD in `paths`, sorted by path.

    ConfigError naming the file and document for anything that is not a valid
    CRD (or, with `ignore_other_kinds`, for a malformed CRD only)."""
    out: dict[str, SchemaFile] = {}
    for path in paths:
        for made in _from_file(path, ignore_other_kinds=ignore_other_kinds):
            earlier = out.get(made.path)
            if earlier is not None and earlier.data != made.data:
                raise ConfigError(
                    f"{made.source} and {earlier.source} both define {made.path}, differently",
                    hint="import one of them",
                )
            out.setdefault(made.path, made)
    if not out:
        raise ConfigError(
            f"no served CustomResourceDefinition version in {', '.join(map(str, paths))}"
        )
    return [out[p] for p in sorted(out)]


def _from_file(path: Path, *, ignore_other_kinds: bool) -> Iterable[SchemaFile]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    for index, doc in enumerate(documents, start=1):
        if doc is None:
            continue  # an empty document (a trailing `---`)
        where = f"{path}, document {index}"
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{where}: not a mapping but {type(doc).__name__}")
        if doc.get("kind") != "CustomResourceDefinition":
            if ignore_other_kinds:
                continue
            raise ConfigError(
                f"{where}: {doc.get('apiVersion')} {doc.get('kind')} "
                f"{_name(doc)!r} is not a CustomResourceDefinition",
                hint="pass only CRD files, or --ignore-other-kinds for a bundle",
            )
        yield from _from_crd(doc, f"{where} (CustomResourceDefinition {_name(doc)})")


def _name(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata")
    return str(meta.get("name")) if isinstance(meta, Mapping) else "None"


def _from_crd(doc: Mapping[str, Any], where: str) -> Iterable[SchemaFile]:
    if doc.get("apiVersion") != CRD_API_VERSION:
        # v1beta1 CRDs are not served since Kubernetes 1.22; render.kubernetesVersion
        # starts at 1.25, so such a file cannot describe a cluster the bridge targets.
        raise ConfigError(
            f"{where}: apiVersion {doc.get('apiVersion')!r}; allowed: {CRD_API_VERSION}",
            hint="apiextensions.k8s.io/v1beta1 is not served since Kubernetes 1.22; "
            "use the v1 CRD of a newer release",
        )
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: spec is missing or not a mapping")
    group = spec.get("group")
    if not isinstance(group, str) or not _GROUP.match(group):
        raise ConfigError(
            f"{where}: spec.group {group!r}; allowed: a DNS subdomain with a dot (e.g. keda.sh)"
        )
    names = spec.get("names")
    kind = names.get("kind") if isinstance(names, Mapping) else None
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ConfigError(
            f"{where}: spec.names.kind {kind!r}; allowed: letters and digits, starting with a letter"
        )
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        raise ConfigError(f"{where}: spec.versions is missing or not a non-empty list")
    for position, entry in enumerate(versions):
        at = f"{where}: spec.versions[{position}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{at} is not a mapping")
        version = entry.get("name")
        if not isinstance(version, str) or not _VERSION.match(version):
            raise ConfigError(f"{at}.name {version!r}; allowed: a DNS label (e.g. v1alpha1)")
        served = entry.get("served")
        if not isinstance(served, bool):
            raise ConfigError(f"{at}.served {served!r}; allowed: true or false")
        if not served:
            continue  # a cluster refuses objects of a version it does not serve
        schema = entry.get("schema")
        root = schema.get("openAPIV3Schema") if isinstance(schema, Mapping) else None
        if not isinstance(root, Mapping):
            raise ConfigError(
                f"{at} ({version}) is served but has no schema.openAPIV3Schema mapping"
            )
        converted = json_schema(root, group=group, version=version, kind=kind)
        _check(converted, f"{at} ({version})")
        text = json.dumps(converted, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
        yield SchemaFile(f"{group}/{kind.lower()}_{version}.json", text.encode("utf-8"), where)


def json_schema(root: Mapping[str, Any], *, group: str, version: str, kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 7) for one version's `openAPIV3Schema`."""
    out: dict[str, Any] = _convert(root)
    out["$schema"] = DRAFT7
    out["x-kubernetes-group-version-kind"] = [{"group": group, "kind": kind, "version": version}]
    return out


def _convert(node: Any) -> Any:
    if not isinstance(node, Mapping):
        return node  # not a schema: left for _check to report
    out: dict[str, Any] = {}
    for raw_key, value in node.items():
        key = _key(raw_key)
        if key in _SCHEMA_VALUES and isinstance(value, Mapping):
            out[key] = _convert(value)
        elif key in _SCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {_key(name): _convert(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_convert(sub) for sub in value]
        else:
            out[key] = value
    if out.pop("nullable", False) is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            out["type"] = [*kind, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        flag = out.get(exclusive)
        if isinstance(flag, bool):  # OpenAPI 3.0 / draft 4 form
            del out[exclusive]
            if flag and bound in out:
                out[exclusive] = out.pop(bound)
    if out.get("format") == "int-or-string" or (
        out.get("x-kubernetes-int-or-string") is True and "type" not in out and "anyOf" not in out
    ):
        if out.get("format") == "int-or-string":
            del out["format"]
            out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def _key(key: Any) -> str:
    """A mapping key as Kubernetes reads it: YAML 1.1 makes an unquoted `on` or `yes`
    a boolean, which sigs.k8s.io/yaml writes as `true`; PyYAML's str() would say `True`."""
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _check(schema: dict[str, Any], where: str) -> None:
    """A schema jsonschema could not use would fail every later validation, in the
    middle of a cycle: refuse it here, naming the place. check_schema uses the
    meta-schema's format checker, so every `pattern` must compile too."""
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        at = "/".join(map(str, e.absolute_path)) or "<root>"
        raise ConfigError(f"{where}: openAPIV3Schema at {at}: {e.message}") from None


def write_schema_files(files: Sequence[SchemaFile], out_dir: Path) -> list[tuple[str, bool]]:
    """Write `files` under `out_dir` (made if missing): [(path, changed)].

    A file with the same bytes already there is left alone (its mtime too); others
    are replaced atomically (temporary file, then rename). Refuses, before writing
    anything, any path that resolves outside `out_dir` (a symlinked group folder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir.resolve()
    targets: list[tuple[SchemaFile, Path]] = []
    for item in files:
        target = (base / item.path).resolve()
        if not target.is_relative_to(base) or target.parent.parent != base:
            raise ConfigError(
                f"{item.source}: {item.path} would be written to {target}, outside --out {base}",
                hint="a folder under --out is a symlink to somewhere else; remove it",
            )
        targets.append((item, target))
    result: list[tuple[str, bool]] = []
    for item, target in targets:
        try:
            if target.is_file() and target.read_bytes() == item.data:
                result.append((item.path, False))
                continue
            target.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".import-", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(item.data)
                os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the schema from other users
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise ConfigError(f"cannot write {target}: {e.strerror or e}") from None
        result.append((item.path, True))
    return result
