"""Parsed control-plane objects: immutable, typed, with raw JSON kept apart.

Parsing is strict about shape (a wrong type is an error naming the field) and
lenient about unknown fields (the real API grows). Semantic checks that depend
on rendering (image syntax, env names, sizes) belong to `bridge.rendering`.
What becomes a path, a trailer or a file name is checked here, at the edge:
ids are UUID-shaped, the listener's `compute_id` is one safe folder name, and
no string holds what UTF-8 cannot encode. Free-form objects nest at most
`untrusted.MAX_DEPTH` levels. Errors name the field and show a bad value
escaped (repr), never raw, and never a secret's.
This module imports nothing of the bridge but `display`, `errors`, `redaction` and `untrusted`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from bridge.errors import InvalidDeployment
from bridge.observability.display import escape
from bridge.redaction import Redacted
from bridge.untrusted import MAX_DEPTH

Json = Any

# The shape of the control plane's ids (8-4-4-4-12 hex digits), matched whole:
# an id names a folder's state, a commit trailer and a URL path.
UUID_SHAPE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
MAX_COMPUTE_ID = 253  # bytes; a file name may have 255, and 253 is a DNS name's limit
_SHOWN = 80  # characters of a bad value quoted in an error


def shown(value: str, limit: int = _SHOWN) -> str:
    """A value from outside as an error may quote it: repr-escaped (control
    characters, lone surrogates), quoted, and cut to `limit` characters."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


def _label(value: str, limit: int = 200) -> str:
    """A value from outside as a label in messages (an id, a key in a path):
    control characters escaped (bridge.display, the one place that does it),
    cut to `limit` characters."""
    text = escape(value)
    return text if len(text) <= limit else text[:limit] + "..."


class NestedTooDeep(ValueError):
    """A free-form object nests deeper than MAX_DEPTH levels."""


class FrozenDict(Mapping[str, Any]):
    """A read-only mapping for free-form JSON objects inside frozen models."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = dict(data or {})
        self._hash: int | None = None

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(sorted((k, _hashable(v)) for k, v in self._data.items())))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenDict({self._data!r})"


def _hashable(value: Any) -> Any:
    if isinstance(value, FrozenDict):
        return hash(value)
    if isinstance(value, tuple):
        return tuple(_hashable(v) for v in value)
    return value


def freeze(value: Json, *, depth: int = MAX_DEPTH) -> Any:
    """Deep copy of parsed JSON with dicts as FrozenDict and lists as tuples.
    NestedTooDeep past `depth` levels of objects and arrays: the count rides
    along the copy, so the check costs nothing extra and the recursion (two
    frames a level) stays far from Python's limit."""
    if isinstance(value, Mapping):
        if depth <= 0:
            raise NestedTooDeep(f"nested deeper than {MAX_DEPTH} levels")
        return FrozenDict({str(k): freeze(v, depth=depth - 1) for k, v in value.items()})
    if isinstance(value, list | tuple):
        if depth <= 0:
            raise NestedTooDeep(f"nested deeper than {MAX_DEPTH} levels")
        return tuple(freeze(v, depth=depth - 1) for v in value)
    return value


def unencodable_field(raw: Json) -> str | None:
    """The path (`secrets[0].value`) of the first string, key or value, that UTF-8
    cannot encode (a lone surrogate such as "\\ud800" is valid JSON), else None.
    Iterative: a record nested deep cannot overflow the stack here."""
    if _plainly_encodable(raw):
        return None  # every record but a hostile one: no paths built
    stack: list[tuple[Any, str]] = [(raw, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if not _encodable(node):
                return path or "(the value itself)"
        elif isinstance(node, Mapping):
            for key, child in node.items():
                name = _label(str(key))
                child_path = f"{path}.{name}" if path else name
                if isinstance(key, str) and not _encodable(key):
                    return child_path
                stack.append((child, child_path))
        elif isinstance(node, list | tuple):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node))
    return None


def _plainly_encodable(raw: Json) -> bool:
    """True when every string, key or value, encodes as UTF-8, for a value made
    of the types json.loads makes; False when one does not, or for any other
    kind of container (the caller then looks closer). The check of every
    listed record on every cycle: ~15 us a record, where building each key's
    path as unencodable_field does cost ~130 us."""
    stack: list[Any] = [raw]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is str:
            if not node.isascii() and not _encodable(node):
                return False
        elif kind is dict:
            for key, child in node.items():
                if type(key) is not str or (not key.isascii() and not _encodable(key)):
                    return False
                stack.append(child)
        elif kind is list:
            stack.extend(node)
        elif node is not None and kind not in (int, float, bool):
            return False
    return True


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def thaw(value: Any) -> Json:
    """Plain JSON (dicts, lists) from a frozen value."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Listener:
    id: str
    compute_id: str
    namespaces: tuple[str, ...]
    version: str | None = None


@dataclass(frozen=True, slots=True)
class SecretEnv:
    """One `secrets[]` entry: an env var whose value is always treated as secret."""

    name: str
    value: Redacted


@dataclass(frozen=True, slots=True)
class SecretReference:
    """One `secret_references[]` entry: env var from an existing Kubernetes Secret."""

    name: str
    secret_name: str
    secret_key: str


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """`source_config.resource_spec`; None means "use the default in overlays/"."""

    min_scale: int | None = None
    max_scale: int | None = None
    cpu: float | None = None
    cpu_limit: float | None = None
    memory_mb: int | None = None
    memory_limit_mb: int | None = None
    queue_min_scale: int | None = None
    queue_max_scale: int | None = None
    queue_cpu: float | None = None
    queue_cpu_limit: float | None = None
    queue_memory_mb: int | None = None
    queue_memory_limit_mb: int | None = None
    db_cpu: float | None = None
    db_cpu_limit: float | None = None
    db_memory_mb: int | None = None
    db_memory_limit_mb: int | None = None
    db_storage_gi: int | None = None
    db_max_connections: int | None = None
    redis_cpu: float | None = None
    redis_cpu_limit: float | None = None
    redis_memory_mb: int | None = None
    redis_memory_limit_mb: int | None = None
    labels: FrozenDict = field(default_factory=FrozenDict)
    annotations: FrozenDict = field(default_factory=FrozenDict)
    service_account_name: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    volumes: tuple[FrozenDict, ...] = ()
    volume_mounts: tuple[FrozenDict, ...] = ()
    init_containers: tuple[FrozenDict, ...] = ()
    sidecars: tuple[FrozenDict, ...] = ()


_INT_FIELDS = {
    f.name for f in fields(ResourceSpec) if f.type in ("int | None",) or f.type == (int | None)
}
_FLOAT_FIELDS = {
    f.name for f in fields(ResourceSpec) if f.type in ("float | None",) or f.type == (float | None)
}


@dataclass(frozen=True, slots=True)
class Deployment:
    """An Agent Server deployment as the bridge needs it.

    `namespace`, `image_uri` and `revision_id` may be None in what the control
    plane sends; the renderer rejects such a deployment by name and id.
    """

    id: str
    name: str
    source: str
    status: str
    listener_id: str | None
    namespace: str | None
    image_uri: str | None
    revision_id: str | None
    secrets: tuple[SecretEnv, ...] = ()
    secret_references: tuple[SecretReference, ...] = ()
    resource_spec: ResourceSpec = field(default_factory=ResourceSpec)
    custom_url: str | None = None

    @property
    def awaiting_delete(self) -> bool:
        return self.status == "AWAITING_DELETE"

    def label(self) -> str:
        """How logs and errors name a deployment: name and id."""
        return f"{self.name!r} ({self.id})"


# --- parsing ---------------------------------------------------------------


# Most deployments have no labels and no annotations: one empty map for all of
# them (it is read-only), not two objects and a dict each (~2 MB at 10,000).
_NO_STRINGS = FrozenDict()


class _Fields:
    """Typed accessors over one JSON object that name the bad field in errors."""

    def __init__(self, raw: Mapping[str, Any], where: str, dep_id: str, dep_name: str) -> None:
        self.raw = raw
        self.where = where
        self.dep_id = dep_id
        self.dep_name = dep_name

    def fail(self, key: str, what: str) -> InvalidDeployment:
        return InvalidDeployment(
            f"field {self.where}{key} {what}",
            deployment_id=self.dep_id,
            deployment_name=self.dep_name,
            hint="the control plane sent a malformed deployment; it is skipped until fixed",
        )

    def str_(self, key: str, *, required: bool = False) -> str | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.fail(key, "is missing")
            return None
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {type(value).__name__}")
        return value

    def uuid_(self, key: str, *, required: bool = False) -> str | None:
        value = self.str_(key, required=required)
        if value is not None and not UUID_SHAPE.fullmatch(value):
            raise self.fail(key, f"{shown(value)} is not a UUID (8-4-4-4-12 hex digits)")
        return value

    def obj(self, key: str) -> Mapping[str, Any]:
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be an object, got {type(value).__name__}")
        return value

    def list_(self, key: str) -> list[Any]:
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, f"must be an array, got {type(value).__name__}")
        return value

    def number(self, key: str, *, integer: bool) -> float | int | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {type(value).__name__}")
        if integer:
            if isinstance(value, float) and not value.is_integer():
                raise self.fail(key, f"must be an integer, got {value}")
            return int(value)
        return float(value)

    def str_map(self, key: str) -> FrozenDict:
        value = self.obj(key)
        if not value:
            return _NO_STRINGS
        for k, v in value.items():
            if not isinstance(v, str):
                raise self.fail(f"{key}.{k}", f"must be a string, got {type(v).__name__}")
        return FrozenDict(value)

    def objects(self, key: str) -> tuple[FrozenDict, ...]:
        items = self.list_(key)
        frozen = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise self.fail(f"{key}[{i}]", "must be an object")
            try:
                frozen.append(freeze(item))
            except NestedTooDeep as e:
                raise self.fail(f"{key}[{i}]", f"is {e}") from None
        return tuple(frozen)


class InvalidListener(ValueError):
    """The listener's answer has the right shape but a field the bridge must not
    use (its message names the field and why)."""


def parse_listener(raw: Json) -> Listener:
    """A Listener from the control plane's JSON: ValueError when it is not one,
    InvalidListener (a ValueError) when a field is unsafe to use."""
    if not isinstance(raw, Mapping):
        raise ValueError("listener must be a JSON object")
    listener_id = raw.get("id")
    compute_id = raw.get("compute_id")
    if not isinstance(listener_id, str) or not isinstance(compute_id, str):
        raise ValueError("listener needs string fields `id` and `compute_id`")
    bad = unencodable_field(raw)
    if bad is not None:
        raise InvalidListener(f"field `{bad}` is not valid Unicode text (a lone surrogate)")
    if not UUID_SHAPE.fullmatch(listener_id):
        raise InvalidListener(f"field `id` {shown(listener_id)} is not a UUID")
    problem = path_component_problem(compute_id)
    if problem is not None:
        raise InvalidListener(
            f"field `compute_id` {shown(compute_id)} cannot name the cluster folder: {problem}"
        )
    config = raw.get("compute_config") or {}
    if not isinstance(config, Mapping):
        raise ValueError("listener field `compute_config` must be an object")
    namespaces = config.get("k8s_namespaces") or []
    if not isinstance(namespaces, list) or not all(isinstance(n, str) for n in namespaces):
        raise ValueError("listener field `compute_config.k8s_namespaces` must be a list of strings")
    version = raw.get("version")
    return Listener(
        id=listener_id,
        compute_id=compute_id,
        namespaces=tuple(namespaces),
        version=version if isinstance(version, str) else None,
    )


def path_component_problem(name: str) -> str | None:
    """Why `name` cannot be one folder name in a git tree, or None. The listener's
    compute_id becomes `<path>/<compute_id>/<namespace>/`: it must stay one
    component, inside the target, and never be (or alias, on Windows or macOS
    checkouts) the `.git` directory."""
    if name in ("", ".", ".."):
        return "it is empty, '.' or '..'"
    if "/" in name or "\\" in name:
        return "it holds '/' or '\\'"
    if not name.isprintable():
        # Control characters, and lone surrogates, which UTF-8 cannot encode.
        return "it holds a control or unprintable character"
    if name.rstrip(". ").lower() in (".git", "git~1"):
        return (
            "it is git's own directory in some spelling (.git, any case, trailing dots or spaces)"
        )
    if len(name.encode("utf-8")) > MAX_COMPUTE_ID:
        return f"it is longer than {MAX_COMPUTE_ID} bytes"
    return None


def deployment_identity(raw: Json) -> tuple[str, str]:
    """(id, name) of a raw deployment for messages, as well as can be told. The
    id is shown bare, so its unprintable characters are escaped here; the name
    is shown as repr (DeploymentError), so only what UTF-8 cannot encode is
    escaped, or no log line or status file could hold it."""
    if not isinstance(raw, Mapping):
        return ("<unknown>", "<unknown>")
    dep_id = raw.get("id")
    name = raw.get("name")
    return (
        _label(dep_id) if isinstance(dep_id, str) else "<unknown>",
        name.encode("utf-8", "backslashreplace").decode() if isinstance(name, str) else "<unknown>",
    )


def parse_deployment(raw: Json, *, check_text: bool = True) -> Deployment:
    """A Deployment from the control plane's JSON; InvalidDeployment names what is wrong.

    `check_text=False` skips the walk over every string for ones UTF-8 cannot
    encode: for a caller that knows the JSON text had no surrogate escape in it
    (the client scans each page's bytes once, in C, instead of every record in Python).
    """
    dep_id, dep_name = deployment_identity(raw)
    if not isinstance(raw, Mapping):
        raise InvalidDeployment(
            "is not a JSON object", deployment_id=dep_id, deployment_name=dep_name
        )
    top = _Fields(raw, "", dep_id, dep_name)
    if check_text:
        bad = unencodable_field(raw)
        if bad is not None:
            # Never the value: the field may be a secret's.
            raise top.fail(
                bad,
                "is not valid Unicode text (it holds a lone surrogate, \\ud800-\\udfff), "
                "so it cannot be written to git",
            )
    real_id = top.uuid_("id", required=True) or ""
    real_name = top.str_("name", required=True) or ""
    # Values most deployments share are kept once (the listing is held between
    # cycles: ~3 MB at 10,000 for these and the two below).
    source = sys.intern(top.str_("source", required=True) or "")
    status = sys.intern(top.str_("status") or "UNKNOWN")
    source_config = _Fields(top.obj("source_config"), "source_config.", dep_id, dep_name)
    listener_config = _Fields(
        source_config.obj("listener_config"), "source_config.listener_config.", dep_id, dep_name
    )
    revision_config = _Fields(
        top.obj("source_revision_config"), "source_revision_config.", dep_id, dep_name
    )
    spec = _Fields(
        source_config.obj("resource_spec"), "source_config.resource_spec.", dep_id, dep_name
    )

    numbers: dict[str, Any] = {}
    for name in _INT_FIELDS:
        numbers[name] = spec.number(name, integer=True)
    for name in _FLOAT_FIELDS:
        numbers[name] = spec.number(name, integer=False)
    pull_secrets = []
    for i, item in enumerate(spec.list_("image_pull_secrets")):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise spec.fail(f"image_pull_secrets[{i}]", "must be an object with a string `name`")
        pull_secrets.append(item["name"])

    resource_spec = ResourceSpec(
        **numbers,
        labels=spec.str_map("labels"),
        annotations=spec.str_map("annotations"),
        service_account_name=spec.str_("service_account_name"),
        image_pull_secrets=tuple(pull_secrets),
        volumes=spec.objects("volumes"),
        volume_mounts=spec.objects("volume_mounts"),
        init_containers=spec.objects("init_containers"),
        sidecars=spec.objects("sidecars"),
    )
    return Deployment(
        id=real_id,
        name=real_name,
        source=source,
        status=status,
        listener_id=_shared(source_config.str_("listener_id")),
        namespace=_shared(listener_config.str_("k8s_namespace")),
        image_uri=revision_config.str_("image_uri"),
        revision_id=top.uuid_("latest_revision_id"),
        secrets=_secrets(top),
        secret_references=_references(top),
        resource_spec=resource_spec,
        custom_url=source_config.str_("custom_url"),
    )


def _shared(value: str | None) -> str | None:
    return sys.intern(value) if value is not None else None


def _secrets(top: _Fields) -> tuple[SecretEnv, ...]:
    secrets = []
    for i, item in enumerate(top.list_("secrets")):
        if not isinstance(item, Mapping):
            raise top.fail(f"secrets[{i}]", "must be an object")
        entry = _Fields(item, f"secrets[{i}].", top.dep_id, top.dep_name)
        name = entry.str_("name", required=True) or ""
        value = item.get("value")
        if not isinstance(value, str):
            raise entry.fail("value", "must be a string")
        secrets.append(SecretEnv(name=name, value=Redacted(value)))
    return tuple(secrets)


def _references(top: _Fields) -> tuple[SecretReference, ...]:
    references = []
    for i, item in enumerate(top.list_("secret_references")):
        if not isinstance(item, Mapping):
            raise top.fail(f"secret_references[{i}]", "must be an object")
        entry = _Fields(item, f"secret_references[{i}].", top.dep_id, top.dep_name)
        references.append(
            SecretReference(
                name=entry.str_("name", required=True) or "",
                secret_name=entry.str_("secret_name", required=True) or "",
                secret_key=entry.str_("secret_key", required=True) or "",
            )
        )
    return tuple(references)


@dataclass(frozen=True)
class SecretPlan:
    """A Kubernetes Secret the renderer wants, before a provider encrypts it.

    The renderer (pure) decides names, labels and keys; a provider in
    `bridge.secrets` turns the plan into the bytes that go into git. Values stay
    `Redacted` until the provider reveals them to its encryption step.
    """

    file: str  # file name inside the deployment folder, e.g. "secret-env.yaml"
    name: str  # metadata.name of the Secret
    namespace: str
    labels: FrozenDict
    annotations: FrozenDict
    data: tuple[tuple[str, Redacted], ...]  # key -> value, sorted by key

    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.data)

    def manifest(self) -> dict[str, Any]:
        """The plaintext Secret as a dict. Reveals every value: only for encryption."""
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        if self.labels:
            metadata["labels"] = dict(self.labels)
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "Opaque",
            "stringData": {k: v.reveal() for k, v in self.data},
        }
