"""Offline schema validation of Kubernetes objects.

Core kinds are checked against the JSON Schemas shipped in
`kubernetes-validate` (strict: unknown fields rejected), through validators
cached per (version, kind) because the library re-reads a 1.4 MB definitions
file on every call. Custom resources (Argo CD, Flux, KEDA, Gateway API,
Sealed Secrets, ...) are checked against a kubeconform-layout schema folder
(`<group>/<kind>_<version>.json`, e.g. `../shared/schemas`), made strict in
memory. A custom resource with no schema available is reported as
`unchecked`, never as valid.

Each kind is first checked by a `fastjsonschema` compilation of the same
schema (~8x faster for a Deployment: 1.4 -> 0.18 ms); only an object it
rejects goes through `jsonschema`, whose messages are the findings. So the
answer is always jsonschema's as long as the fast check never accepts what
jsonschema rejects: the fast copy is compiled only from schemas whose every
keyword means the same in both (see `_fast_form`), else that kind is checked
by jsonschema alone. tests/rendering/test_schema_fast_path.py runs both over
the golden files and broken variants of them.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import CodeType
from typing import TYPE_CHECKING, Any

from bridge.validation import checkcache

if TYPE_CHECKING:
    import referencing

log = logging.getLogger(__name__)

DEFAULT_KUBERNETES_VERSION = "1.33"
# Provider metadata that schema validation ignores (SPEC §7): SOPS adds a
# top-level `sops` key to the Secret it encrypts; nothing else is ignored.
IGNORED_TOP_LEVEL_KEYS = frozenset({"sops"})


@dataclass(frozen=True)
class Finding:
    ref: str  # "Kind/namespace/name"
    errors: tuple[str, ...]
    unchecked: str | None = None  # why no schema could check it


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
def _crd_kind(schema_dir: str, group: str, version: str, kind: str) -> _KindSchema | None:
    path = Path(schema_dir) / group / f"{kind.lower()}_{version}.json"
    if not path.is_file():
        return None
    schema = _strict(json.loads(path.read_text(encoding="utf-8")))

    def slow() -> Any:
        import jsonschema  # ~0.16 s to import: only where a message is needed

        return jsonschema.validators.validator_for(schema)(schema)

    def fast() -> Any:
        # A CRD schema has no $ref; one that had could not be resolved here.
        return {**_outlined(_fast_form(schema, _no_refs, root=True)), "$schema": _DRAFT7}

    def cache_key() -> str:
        return _check_cache_key(path)

    return _KindSchema(slow, fast, cache_key)


def _check_cache_key(*schema_files: Path) -> str:
    """The check cache's name for a kind's compiled check: the schema files'
    bytes and this module's source, which shapes the fast schema made of them
    (checkcache adds fastjsonschema's and Python's versions)."""
    return checkcache.key(
        *(checkcache.file_digest(str(f)) for f in (Path(__file__), *schema_files))
    )


@functools.cache
def _core_schema_folder(version: str, strict: bool) -> Path:
    # Where the package is, without importing it: its import pulls in
    # jsonschema (~0.16 s), which a check answered by the fast path never needs.
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or spec.origin is None:
        raise ValueError("kubernetes-validate is not installed")
    root = Path(spec.origin).parent / "kubernetes-json-schema"
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
    import referencing.jsonschema

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
def _core_kind(folder: str, kind: str, api_version: str) -> _KindSchema | None:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = Path(folder) / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))

    def slow() -> Any:
        import jsonschema
        import referencing.jsonschema

        schema = _inline(raw, _core_definitions(folder))
        resource = referencing.Resource.from_contents(
            schema, default_specification=referencing.jsonschema.DRAFT202012
        )
        registry = resource @ _core_registry(folder)
        return jsonschema.Draft202012Validator(schema, registry=registry)

    def fast() -> Any:
        return _core_fast_schema(raw, _core_definitions(folder))

    def cache_key() -> str:
        return _check_cache_key(path, Path(folder) / "_definitions.json")

    return _KindSchema(slow, fast, cache_key)


# --- the fast path -----------------------------------------------------------

_DRAFT7 = "http://json-schema.org/draft-07/schema#"
# Keywords that mean the same in fastjsonschema (draft 7) as in jsonschema
# (draft 7 for the CRD files, 2020-12 for the core ones), for every instance
# a YAML parser can produce. `format` is an annotation for both (jsonschema
# gets no format checker, fastjsonschema `use_formats=False`); `pattern` is
# rewritten by `_python_dollar`. Left out on purpose: exclusiveMinimum/Maximum
# (boolean in draft 4), multipleOf (float arithmetic differs), uniqueItems
# (1 vs true), const, contains, dependencies, if/then/else, propertyNames,
# and everything newer than draft 7.
_SAME_ASSERTIONS = frozenset(
    {
        "type",
        "enum",
        "required",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
    }
)
# Keywords that validate nothing in either library (`default` too: compiled
# with `use_default=False`, fastjsonschema does not fill it in).
_INERT = frozenset(
    {
        "description",
        "title",
        "default",
        "examples",
        "example",
        "$comment",
        "nullable",
        "externalDocs",
        "readOnly",
        "writeOnly",
        "deprecated",
    }
)
_SCHEMA_MAPS = ("properties", "patternProperties")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_OR_BOOL = ("additionalProperties", "items", "not")


class _NoFastPath(Exception):
    """The schema uses something whose meaning could differ between the two libraries."""


def _no_refs(ref: str) -> str:
    raise _NoFastPath(f"$ref {ref}")


def _fast_form(node: Any, local_ref: Callable[[str], str], *, root: bool = False) -> Any:
    """A copy of the schema `node` for fastjsonschema with jsonschema's meaning:
    patterns rewritten, each `$ref` made local by `local_ref` (with validating
    siblings moved under `allOf`: 2020-12 applies them, draft 7 would not),
    annotations and the root's `$id` dropped (refs are local now).
    _NoFastPath for anything else, and for a draft 3 or 4 schema (there
    jsonschema does not take 1.0 as an integer; draft 7 does)."""
    if isinstance(node, bool):
        return node
    if not isinstance(node, dict):
        raise _NoFastPath(f"schema {node!r}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if root and key == "$schema" and re.search(r"draft-0[34]", str(value)):
            raise _NoFastPath(f"$schema {value}")
        if key in _INERT or key.startswith("x-") or (root and key in ("$schema", "$id")):
            continue
        if key == "$ref":
            continue  # below
        if key in _SCHEMA_MAPS:
            if not isinstance(value, dict):
                raise _NoFastPath(f"{key} {value!r}")
            out[key] = {name: _fast_form(sub, local_ref) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS:
            if not isinstance(value, list):
                raise _NoFastPath(f"{key} {value!r}")
            out[key] = [_fast_form(sub, local_ref) for sub in value]
        elif key in _SCHEMA_OR_BOOL:
            out[key] = _fast_form(value, local_ref)  # a list under `items` raises
        elif key == "pattern":
            if not isinstance(value, str):
                raise _NoFastPath(f"pattern {value!r}")
            out[key] = _python_dollar(value)
        elif key in _SAME_ASSERTIONS:
            out[key] = value
        else:
            raise _NoFastPath(f"keyword {key}")
    ref = node.get("$ref")
    if ref is None:
        return out
    if not isinstance(ref, str):
        raise _NoFastPath(f"$ref {ref!r}")
    target = {"$ref": local_ref(ref)}
    if not out:
        return target
    return {**out, "allOf": [*out.get("allOf", []), target]}


def _outlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A fast form with every nested object schema moved under `$defs` and
    referenced from where it was: the same checks, but fastjsonschema makes a
    function of each instead of one for a whole CRD (HTTPRoute: ~10 MB of
    syntax tree to compile in one piece, and slow error paths: they call
    `locals()` over every variable of the function)."""
    defs: dict[str, Any] = {}

    def visit(node: Any, top: bool = False) -> Any:
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _SCHEMA_MAPS:
                out[key] = {name: visit(sub) for name, sub in value.items()}
            elif key in _SCHEMA_LISTS:
                out[key] = [visit(sub) for sub in value]
            elif key in _SCHEMA_OR_BOOL:
                out[key] = visit(value)
            else:
                out[key] = value
        if top or "properties" not in out:
            return out
        name = f"outlined-{len(defs)}"
        defs[name] = out
        return {"$ref": "#/$defs/" + name}

    root: dict[str, Any] = visit(schema, top=True)  # has no $defs: _fast_form refuses them
    return {**root, "$defs": defs} if defs else root


def _python_dollar(pattern: str) -> str:
    """`pattern` spelled so that fastjsonschema searches with the meaning that
    Python's `re.search` (jsonschema) gives it.

    fastjsonschema turns every `$` not preceded by a backslash into `\\Z`, which
    matches only at the very end (Python's `$` also matches before a final
    newline) and which does not compile inside a character class (Gateway
    API's HTTPRoute has one). So a `$` outside a class becomes `(?=\\n?\\Z)`,
    Python's `$` written without a `$`; inside a class, `\\$`."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        i += 1
        if in_class:
            if char == "]":
                in_class = False
            elif char == "$":
                char = "\\$"
        elif char == "[":
            in_class = True
            # A `^` first negates; a `]` first (after it) is a literal, not the end.
            if pattern.startswith("^", i):
                char += "^"
                i += 1
            if pattern.startswith("]", i):
                char += "]"
                i += 1
        elif char == "$":
            char = "(?=\\n?\\Z)"
        out.append(char)
    return "".join(out)


def _core_fast_schema(schema: Any, definitions: dict[str, Any]) -> Any:
    """A kind schema of kubernetes-validate with the definitions it reaches as
    local `$defs`: fastjsonschema compiles each definition into a function of
    its own (one function of the fully inlined schema is slower than jsonschema:
    its error paths call `locals()` over thousands of variables)."""
    wanted: list[str] = []

    def local(ref: str) -> str:
        name = ref.rpartition(_REF_MARKER)[2]
        if _REF_MARKER not in ref or name not in definitions:
            raise _NoFastPath(f"$ref {ref}")
        if name not in seen:
            seen.add(name)
            wanted.append(name)
        return "#/$defs/" + name

    seen: set[str] = set()
    out = _fast_form(schema, local, root=True)
    defs: dict[str, Any] = {}
    while wanted:
        name = wanted.pop()
        defs[name] = _fast_form(definitions[name], local)
    return {**out, "$schema": _DRAFT7, "$defs": defs}


def _generate_fast(schema: Any) -> tuple[str, list[CodeType]]:
    """fastjsonschema's check for `schema` as compiled code: the root function's
    name and one code object per generated function. As `fastjsonschema.compile`
    makes it, but compiled one function at a time: a Deployment's ~280 KB of
    code compiled in one piece builds ~19 MB of syntax tree at once (kept as RSS
    by the allocator), one function at a time ~2.5 MB; and it is no slower."""
    import fastjsonschema  # only where a kind is checked often enough to compile it

    code = fastjsonschema.compile_to_code(
        schema, use_default=False, use_formats=False, detailed_exceptions=False
    )
    root = re.search(r"(?m)^def (\w+)\(", code)
    if root is None:
        raise ValueError("fastjsonschema generated no function")
    # Functions sit at column 0, their bodies indented, and every generated
    # string is on one line: a part that did not compile would raise here.
    parts = [compile(part, "<fastjsonschema>", "exec") for part in re.split(r"(?m)^(?=def )", code)]
    return root.group(1), parts


def _load_fast(root: str, parts: list[CodeType]) -> Callable[[Any], Any]:
    namespace: dict[str, Any] = {}
    for part in parts:
        exec(part, namespace)  # noqa: S102 - generated from our schema files, as fastjsonschema.compile does
    check: Callable[[Any], Any] = namespace[root]
    return check


# Objects of one kind checked by jsonschema alone before the fast copy is
# compiled: compiling a Deployment's ~280 KB of generated code costs ~70 ms,
# checking one with jsonschema ~1.4 ms, so a cycle that changes one deployment
# (8 objects) pays no compile at all, and a cold one pays it after 32 objects.
# Where an earlier process left the compiled copy in the check cache
# (checkcache), it is used from the first object.
FAST_AFTER = 32


class _KindSchema:
    """One kind's schema, as a fast yes/no and as jsonschema's messages.

    Both are built on first use; the fast copy from the check cache at once if
    it is there, else compiled once FAST_AFTER objects of the kind were checked
    (jsonschema, the reference, answers until then). Built twice at worst
    under a race between threads: harmless."""

    def __init__(
        self,
        slow: Callable[[], Any],
        fast_schema: Callable[[], Any],
        cache_key: Callable[[], str] | None = None,
    ) -> None:
        self._make_slow = slow
        self._make_fast = fast_schema
        self._cache_key = cache_key
        self._slow: Any = None
        self._fast: Callable[[Any], Any] | None = None
        self._fast_tried = False
        self._cache_asked = False
        self._checked = 0

    def slow(self) -> Any:
        if self._slow is None:
            self._slow = self._make_slow()
        return self._slow

    def cached(self) -> Callable[[Any], Any] | None:
        """The fast check an earlier process compiled, if the cache holds it (asked once)."""
        if not self._cache_asked:
            self._cache_asked = True
            if not self._fast_tried and self._cache_key is not None and checkcache.folder():
                try:
                    entry = checkcache.load(self._cache_key())
                    if entry is not None:
                        self._fast, self._fast_tried = _load_fast(*entry), True
                except Exception as e:  # a stale or foreign entry: compile as if absent
                    log.debug("compiled schema check not loaded: %s", e)
        return self._fast

    def fast(self) -> Callable[[Any], Any] | None:
        """fastjsonschema's check (raises when invalid), None where it cannot be trusted."""
        if not self._fast_tried and self.cached() is None:
            try:
                root, parts = _generate_fast(self._make_fast())
                self._fast = _load_fast(root, parts)
                if self._cache_key is not None and checkcache.folder():
                    checkcache.store(self._cache_key(), root, parts)
            except Exception:
                # _NoFastPath, a schema or regex fastjsonschema rejects, generated
                # code too deep for Python: this kind is checked by jsonschema alone.
                self._fast = None
            self._fast_tried = True
        return self._fast

    def errors(self, body: Any) -> tuple[str, ...]:
        """jsonschema's messages for `body`, sorted; () when valid."""
        self._checked += 1
        fast = self.fast() if self._checked > FAST_AFTER else self.cached()
        if fast is not None:
            try:
                fast(body)
            except Exception:  # invalid, or an instance it cannot handle: ask jsonschema
                fast = None
            if fast is not None:
                return ()
        return tuple(
            sorted(
                f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in self.slow().iter_errors(body)
            )
        )


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
    schema = _core_kind(str(folder), kind, api_version)
    if schema is None:
        if "." not in group:
            return Finding(
                ref, (f"unknown kind {kind} in {api_version} for Kubernetes {kubernetes_version}",)
            )
        if schema_dir is None:
            return Finding(ref, (), unchecked=f"no schema folder given for {api_version} {kind}")
        schema = _crd_kind(str(schema_dir), group, version, kind)
        if schema is None:
            return Finding(ref, (), unchecked=f"no schema for {api_version} {kind} in {schema_dir}")
    return Finding(ref, schema.errors(body))


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
