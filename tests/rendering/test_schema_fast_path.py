"""The fastjsonschema fast path and jsonschema agree on valid/invalid.

`bridge.validation.schemas` asks jsonschema only about objects the fast check rejects,
so a fast check that accepted an invalid object would weaken validation, and
one that rejected a valid object would cost time. Both are checked here over
every golden file under tests/rendering/cases and every example manifest
(real schemas: kubernetes-validate's strict core schemas and the CRD schemas
of ../shared/schemas), and over variants of them broken on purpose: wrong
types, unknown fields, missing keys, values a pattern or enum refuses, and
strings ending in a newline (where `$` differs between the two libraries).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import pytest
import yaml

from bridge.validation import schemas
from bridge.validation.folders import default_schema_dir
from bridge.validation.schemas import DEFAULT_KUBERNETES_VERSION, validate_document

CASES = Path(__file__).parent / "cases"
EXAMPLES = Path(__file__).parents[2] / "examples"

Path_ = tuple[str | int, ...]


def _documents() -> list[tuple[str, dict[str, Any]]]:
    files = sorted(p for p in CASES.glob("*/expected/*.yaml") if p.name != "kustomization.yaml")
    files += sorted(
        p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml") and p.name != "bridge.yaml"
    )
    out, seen = [], set()
    for path in files:
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"):
                text = json.dumps(doc, sort_keys=True, default=str)
                if text not in seen:  # the cases share objects (Redis, Postgres)
                    seen.add(text)
                    out.append((f"{path.relative_to(path.parents[2])}#{index}", doc))
    return out


DOCUMENTS = _documents()


def _kind(
    doc: dict[str, Any], strict: bool = True, fallback: Path | None = None
) -> schemas._KindSchema:
    """The kind's schema: core, else ../shared/schemas, else the schemas made of
    the hand-made CRDs (`fallback`), else a skip saying why."""
    api_version, kind = doc["apiVersion"], doc["kind"]
    folder = schemas._core_schema_folder(DEFAULT_KUBERNETES_VERSION, strict)
    found = schemas._core_kind(str(folder), kind, api_version)
    if found is None:
        group, _, version = api_version.rpartition("/")
        schema_dir = default_schema_dir()
        if schema_dir is None and fallback is not None:
            schema_dir = fallback
            found = schemas._crd_kind(str(schema_dir), group, version, kind)
            if found is None:
                pytest.skip(f"../shared/schemas is absent and tests/crds has no {kind}")
        if schema_dir is None:
            pytest.skip("../shared/schemas is absent: custom resources cannot be checked")
        found = schemas._crd_kind(str(schema_dir), group, version, kind)
    assert found is not None, f"no schema for {api_version} {kind}"
    return found


def _fast_says_valid(kind: schemas._KindSchema, body: Any) -> bool:
    fast = kind.fast()
    assert fast is not None
    try:
        fast(body)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def _walk(node: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, index))


_DELETE = object()


def _changed(node: Any, path: Path_, value: Any) -> Any:
    """`node` with the value at `path` replaced (or deleted): the containers along
    the path are copied, the rest is shared (validators do not modify objects)."""
    if not path:
        return value
    out = copy.copy(node)
    step = path[0]
    if len(path) == 1 and value is _DELETE:
        del out[step]
    else:
        out[step] = _changed(node[step], path[1:], value)
    return out


def _replaced(doc: dict[str, Any], path: Path_, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = _changed(doc, path, value)
    return out


def _without(doc: dict[str, Any], path: Path_) -> dict[str, Any]:
    return _replaced(doc, path, _DELETE)


def _wrong_values(value: Any) -> list[Any]:
    """Values of the wrong type, and right-typed values likely to break a rule."""
    if isinstance(value, bool):
        return ["true", 1]
    if isinstance(value, int):
        return [str(value), -1, 1.5, True]
    if isinstance(value, str):
        return [7, value + "\n", value.upper() + " $", "x" * 300]
    if isinstance(value, dict):
        return [["a"]]
    if isinstance(value, list):
        return [{"a": 1}, [None]]
    return ["text"]


def _variants(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, value in _walk(doc):
        if not path:
            continue
        for wrong in _wrong_values(value):
            yield f"{path} = {wrong!r}", _replaced(doc, path, wrong)
        if isinstance(path[-1], str):
            yield f"without {path}", _without(doc, path)
        if isinstance(value, dict):
            yield f"{path} + bogusField", _replaced(doc, path, {**value, "bogusField": 1})


@pytest.mark.parametrize("where,doc", DOCUMENTS, ids=[w for w, _ in DOCUMENTS])
def test_fast_path_agrees_with_jsonschema(
    where: str, doc: dict[str, Any], crd_schema_dir: Path
) -> None:
    kind = _kind(doc, fallback=crd_schema_dir)
    assert kind.fast() is not None, f"{where}: {doc['kind']} has no fast path"
    slow = kind.slow()
    assert _fast_says_valid(kind, doc) and slow.is_valid(doc), f"{where} is not valid"
    disagreements = []
    count = 0
    for what, variant in _variants(doc):
        count += 1
        if _fast_says_valid(kind, variant) != slow.is_valid(variant):
            disagreements.append(what)
    assert count > 10
    assert disagreements == [], f"{where}: the two validators disagree on {disagreements[:5]}"


def test_non_strict_schemas_agree_too() -> None:
    """strict=False: unknown fields are accepted by both."""
    for where, doc in DOCUMENTS:
        if "." in doc["apiVersion"].split("/")[0]:
            continue  # custom resources are always made strict
        kind = _kind(doc, strict=False)
        for path, value in _walk(doc):
            if isinstance(value, dict):
                variant = _replaced(doc, path, {**value, "bogusField": 1}) if path else doc
                assert _fast_says_valid(kind, variant) == kind.slow().is_valid(variant), where


def test_findings_are_jsonschemas_messages() -> None:
    """An invalid object is reported with jsonschema's messages, as before the fast path."""
    doc = next(d for _, d in DOCUMENTS if d["kind"] == "Deployment")
    broken = copy.deepcopy(doc)
    broken["spec"]["replicas"] = "three"
    broken["spec"]["template"]["spec"]["bogusField"] = 1
    finding = validate_document(broken, schema_dir=default_schema_dir())
    want = sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in _kind(doc).slow().iter_errors(broken)
    )
    assert list(finding.errors) == want
    assert any("spec/replicas: 'three' is not of type" in e for e in finding.errors)
    assert any("bogusField" in e for e in finding.errors)
    assert validate_document(doc, schema_dir=default_schema_dir()).errors == ()


def _patterns(schema_dir: Path | None) -> set[str]:
    """Every `pattern` of kubernetes-validate's core schemas and of `schema_dir`."""
    found: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.add(node["pattern"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    folder = schemas._core_schema_folder(DEFAULT_KUBERNETES_VERSION, True)
    collect(schemas._core_definitions(str(folder)))
    if schema_dir is not None:
        for path in schema_dir.rglob("*.json"):
            collect(json.loads(path.read_text()))
    return found


SAMPLES = [
    "abc",
    "abc\n",
    "abc\n\n",
    "\nabc",
    "a$b",
    "$",
    "10s",
    "10s\n",
    "1h30m",
    "example.com/path",
    "example.com/a$b",
    "https://a.example.com",
    "https://a.example.com\n",
    "*",
    "@daily",
    "0 * * * *",
    "x@p.iam.gserviceaccount.com",
    "",
    "-a",
    "A_b,c:d",
]


TRICKY = {r"^a$", r"[$]", r"[]$]", r"[^]$]x", r"\\$", r"\$", r"^(a|b$)"}


@pytest.mark.quick
def test_patterns_mean_the_same(crd_schema_dir: Path) -> None:
    """Tricky patterns, the core schemas' and those of the hand-made CRDs (there in
    every checkout), over strings at the edges of `$`."""
    patterns = _patterns(crd_schema_dir)
    assert len(patterns - TRICKY) >= 2  # HTTPRoute's hostname, ServiceMonitor's duration
    _assert_same_meaning(patterns | TRICKY)


@pytest.mark.quick
def test_shared_schema_patterns_mean_the_same() -> None:
    """The same for every pattern of the real CRD schemas in ../shared/schemas."""
    schema_dir = default_schema_dir()
    if schema_dir is None:
        pytest.skip("../shared/schemas is absent: no upstream CRD patterns to compare")
    patterns = _patterns(schema_dir)
    assert len(patterns) > 15  # upstream CRDs have ~21 (its README)
    _assert_same_meaning(patterns)


def _assert_same_meaning(patterns: set[str]) -> None:
    for pattern in sorted(patterns):
        fast = fastjsonschema.compile(
            {"type": "string", "pattern": schemas._python_dollar(pattern)},
            use_default=False,
            use_formats=False,
        )
        slow = jsonschema.Draft202012Validator({"type": "string", "pattern": pattern})
        for sample in SAMPLES:
            try:
                fast(sample)
                fast_ok = True
            except fastjsonschema.JsonSchemaValueException:
                fast_ok = False
            assert fast_ok == slow.is_valid(sample), (pattern, sample)
            assert fast_ok == bool(re.search(pattern, sample)), (pattern, sample)


@pytest.mark.quick
def test_kinds_the_fast_path_cannot_trust_fall_back_to_jsonschema() -> None:
    """A keyword whose meaning could differ (here `uniqueItems`) means no fast path;
    the object is still checked, by jsonschema."""
    schema = {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}
    kind = schemas._KindSchema(
        lambda: jsonschema.Draft7Validator(schema),
        lambda: schemas._fast_form(schema, schemas._no_refs, root=True),
    )
    assert kind.fast() is None
    assert kind.errors({"a": [1, 1]}) == ("a: [1, 1] has non-unique elements",)
    assert kind.errors({"a": [1, 2]}) == ()


@pytest.mark.quick
def test_a_draft_4_schema_has_no_fast_path() -> None:
    """Draft 4 (jsonschema) refuses 1.0 as an integer; draft 7 (fastjsonschema) takes it."""
    schema = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {"replicas": {"type": "integer"}},
    }
    kind = schemas._KindSchema(
        lambda: jsonschema.validators.validator_for(schema)(schema),
        lambda: schemas._fast_form(schema, schemas._no_refs, root=True),
    )
    assert kind.fast() is None
    assert kind.errors({"replicas": 1.0}) == ("replicas: 1.0 is not of type 'integer'",)


def test_the_fast_copy_is_compiled_only_for_a_kind_checked_often(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cycle that changes one deployment checks 8 objects: compiling fast copies
    of their kinds (~70 ms for a Deployment) would cost more than checking them
    with jsonschema. The answers are jsonschema's either way."""
    compiled: list[object] = []
    original = schemas._generate_fast
    monkeypatch.setattr(
        schemas, "_generate_fast", lambda schema: compiled.append(schema) or original(schema)
    )
    monkeypatch.setattr(schemas, "FAST_AFTER", 3)
    kind = schemas._KindSchema(
        lambda: jsonschema.Draft7Validator({"type": "object", "required": ["a"]}),
        lambda: {"type": "object", "required": ["a"]},
    )
    answers = [kind.errors({"a": 1}), kind.errors({}), kind.errors({"a": 2})]
    assert compiled == []
    answers += [kind.errors({"a": 3}), kind.errors({})]
    assert len(compiled) == 1
    assert answers == [(), ("<root>: 'a' is a required property",), (), (), answers[1]]
