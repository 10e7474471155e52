"""The on-disk cache of compiled fast schema checks (bridge/validation/checkcache.py).

A cache keyed on the wrong thing is a correctness bug, and its entries are
code: every input of the compiled code must change the key, and an entry
anyone but this user could have written must never be loaded."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.validation import checkcache, schemas

SCHEMA = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "checks"
    checkcache.configure(folder)
    try:
        yield folder
    finally:
        checkcache.configure(None)


def _kind(name: str, compiled: list[object]) -> schemas._KindSchema:
    import jsonschema

    def fast_schema() -> Any:
        compiled.append(name)
        return SCHEMA

    return schemas._KindSchema(
        lambda: jsonschema.Draft7Validator(SCHEMA),
        fast_schema,
        lambda: checkcache.key(name.encode()),
    )


def test_a_later_process_uses_the_compiled_check_from_the_first_object(cache: Path) -> None:
    compiled: list[object] = []
    first = _kind("k", compiled)
    assert first.fast() is not None and compiled == ["k"]
    (entry,) = cache.iterdir()
    assert entry.stat().st_mode & 0o777 == 0o600 and cache.stat().st_mode & 0o777 == 0o700
    # A fresh _KindSchema is what a new process has: it loads, compiles nothing.
    later = _kind("k", compiled)
    assert later.cached() is not None and compiled == ["k"]
    assert later.errors({"a": 1}) == ()
    assert later.errors({"a": "x"}) == ("a: 'x' is not of type 'integer'",)  # jsonschema's words


def test_without_a_cache_the_first_objects_are_checked_by_jsonschema_alone() -> None:
    compiled: list[object] = []
    kind = _kind("k", compiled)
    assert kind.cached() is None
    assert kind.errors({"a": 1}) == () and compiled == []


@pytest.mark.parametrize("change", ["schema file", "schemas source", "fastjsonschema", "python"])
def test_each_input_of_the_compiled_code_changes_the_key(
    change: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema_file = tmp_path / "kind.json"
    schema_file.write_text('{"type": "object"}')

    def key() -> str:
        checkcache._environment.cache_clear()
        checkcache.file_digest.cache_clear()
        return schemas._check_cache_key(schema_file)

    before = key()
    assert key() == before  # stable
    if change == "schema file":
        schema_file.write_text('{"type": "array"}')
    elif change == "schemas source":
        copy = tmp_path / "schemas.py"
        copy.write_bytes(Path(schemas.__file__).read_bytes() + b"\n# changed\n")
        monkeypatch.setattr(schemas, "__file__", str(copy))
    elif change == "fastjsonschema":
        import fastjsonschema

        monkeypatch.setattr(fastjsonschema, "VERSION", "0.0.0-other")
    else:
        monkeypatch.setattr(sys, "version", sys.version + " other")
    try:
        assert key() != before
    finally:
        monkeypatch.undo()
        checkcache._environment.cache_clear()
        checkcache.file_digest.cache_clear()


def test_core_kinds_are_keyed_on_their_file_and_the_definitions(cache: Path) -> None:
    folder = schemas._core_schema_folder(schemas.DEFAULT_KUBERNETES_VERSION, True)
    deployment = schemas._core_kind(str(folder), "Deployment", "apps/v1")
    service = schemas._core_kind(str(folder), "Service", "v1")
    assert deployment is not None and service is not None
    assert deployment._cache_key is not None and service._cache_key is not None
    assert deployment._cache_key() != service._cache_key()


def _stored(cache: Path) -> Path:
    compiled: list[object] = []
    _kind("k", compiled).fast()
    (entry,) = cache.iterdir()
    return entry


@pytest.mark.parametrize("tamper", ["group-writable", "symlink", "garbage", "not code", "folder"])
def test_an_entry_that_is_not_private_or_not_ours_is_never_loaded(
    cache: Path, tamper: str, tmp_path: Path
) -> None:
    entry = _stored(cache)
    if tamper == "group-writable":
        entry.chmod(0o620)
    elif tamper == "symlink":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.write_bytes(entry.read_bytes())
        entry.unlink()
        entry.symlink_to(elsewhere)
    elif tamper == "garbage":
        entry.write_bytes(b"\x00not marshal")
    elif tamper == "not code":
        import marshal

        entry.write_bytes(marshal.dumps(("validate", ["print('hi')"])))
    else:
        cache.chmod(0o777)
    compiled: list[object] = []
    kind = _kind("k", compiled)
    assert kind.cached() is None
    # The check still answers (compiled afresh), the same as ever.
    assert kind.fast() is not None and compiled == ["k"]
    assert kind.errors({}) == ("<root>: 'a' is a required property",)


def test_the_folder_is_bounded(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkcache, "MAX_FOLDER_BYTES", 1)
    compiled: list[object] = []
    for name in ("a", "b", "c"):
        _kind(name, compiled).fast()
    # Each store drops the oldest entries beyond the bound: at most the newest stays.
    assert len(list(cache.iterdir())) <= 1
    assert compiled == ["a", "b", "c"]


def test_a_cache_that_cannot_be_written_fails_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    checkcache.configure(blocker / "checks")  # a folder under a file: mkdir fails
    try:
        compiled: list[object] = []
        kind = _kind("k", compiled)
        assert kind.fast() is not None
        assert kind.errors({"a": 1}) == ()
    finally:
        checkcache.configure(None)
    assert os.listdir(tmp_path) == ["file"]
