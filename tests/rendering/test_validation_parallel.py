"""check_roots: aggregate builds, worker processes and the valid-object memo give
the same answers as building and validating each root on its own.

Real kustomize, real worker processes (forkserver), real schemas.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.config import RenderSettings
from bridge.formats.state import STATE_FILE
from bridge.models import Listener, parse_deployment
from bridge.rendering import RenderContext
from bridge.rendering.naming import folder_names
from bridge.rendering.rendering import render_deployment
from bridge.validation import roots as validation
from bridge.validation.folders import default_schema_dir
from bridge.validation.kustomize import build_roots
from bridge.validation.objects import validate_objects
from bridge.validation.roots import check_roots, shutdown_workers, validate_roots

NS = "agents"
LISTENER = Listener(id="l-1", compute_id="c", namespaces=(NS,))


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One worker process even on a one-core machine, and a cold memo. These
    tests are of the `kubectl kustomize` path (aggregate builds, the memo);
    tests/rendering/test_libkustomize.py compares the two engines."""
    shutdown_workers()
    validation._VALID.clear()
    monkeypatch.setenv("BRIDGE_VALIDATE_WORKERS", "1")
    monkeypatch.setenv("BRIDGE_KUSTOMIZE", "kubectl")
    yield
    shutdown_workers()
    validation._VALID.clear()


def write_roots(base: Path, count: int) -> list[str]:
    ctx = RenderContext(
        listener=LISTENER, cluster="c", settings=RenderSettings(), secrets_provider="none"
    )
    deps = [
        parse_deployment(
            {
                "id": str(uuid.UUID(int=i + 1)),
                "name": f"agent-{i:03d}",
                "source": "external_docker",
                "status": "READY",
                "source_config": {
                    "listener_id": "l-1",
                    "listener_config": {"k8s_namespace": NS},
                    "resource_spec": {"min_scale": 1, "max_scale": 1 + i % 3},
                },
                "source_revision_config": {"image_uri": f"registry.example.com/a/b:{i}"},
                "secrets": [],
                "latest_revision_id": str(uuid.UUID(int=10**6 + i)),
            }
        )
        for i in range(count)
    ]
    names = folder_names(deps)
    folders = []
    for dep in deps:
        rel = f"c/{NS}/{names[dep.id]}"
        folder = base / rel
        folder.mkdir(parents=True)
        for fname, data in render_deployment(dep, ctx, name=names[dep.id]).files.items():
            (folder / fname).write_bytes(data)
        (folder / STATE_FILE).write_text(json.dumps({"deployment": {"id": dep.id}}))
        folders.append(rel)
    return folders


def reference(base: Path, folders: list[str], schema_dir: Path | None) -> dict[str, list[str]]:
    """Each root built alone, its objects validated here: the slow, obvious way."""
    out: dict[str, list[str]] = {}
    for folder in folders:
        built = build_roots(base, [folder])[folder]
        if isinstance(built, str):
            out[folder] = [f"kustomize build failed: {built}"]
        else:
            out[folder] = validate_objects(built, schema_dir=schema_dir)[0]
    return out


@pytest.mark.timeout(120)
def test_parallel_checks_match_one_by_one_and_repeat(tmp_path: Path, workers: None) -> None:
    schema_dir = default_schema_dir()
    folders = write_roots(tmp_path, 40)  # three chunks: builds in parallel, the pool busy
    # One root breaks the schema (unknown field), one breaks the build.
    bad_schema, bad_build = folders[5], folders[23]
    path = tmp_path / bad_schema / "queue-worker.yaml"
    path.write_text(path.read_text().replace("spec:\n", "spec:\n  bogusField: 1\n", 1))
    (tmp_path / bad_build / "kustomization.yaml").write_text(
        "resources:\n- agent-server.yaml\n- missing.yaml\n"
    )

    first = check_roots(tmp_path, folders, schema_dir=schema_dir)
    assert validation._POOL is not None  # the worker process took part
    want = reference(tmp_path, folders, schema_dir)
    assert {f: r.problems for f, r in first.items()} == want
    assert [f for f, errors in want.items() if errors] == [bad_schema, bad_build]
    assert any("bogusField" in e for e in want[bad_schema])
    assert first[bad_build].build_error is not None
    assert all(first[f].objects >= 7 for f in folders if f != bad_build)

    # Again: valid objects come from the memo, the invalid one is checked afresh.
    remembered = len(validation._VALID._seen)
    assert remembered >= 7 * 38
    second = validate_roots(tmp_path, folders, schema_dir=schema_dir)
    assert second == want
    assert len(validation._VALID._seen) == remembered


def test_without_workers_the_answers_are_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutdown_workers()
    validation._VALID.clear()
    monkeypatch.setenv("BRIDGE_VALIDATE_WORKERS", "0")
    folders = write_roots(tmp_path, 20)
    schema_dir = default_schema_dir()
    assert validate_roots(tmp_path, folders, schema_dir=schema_dir) == {f: [] for f in folders}
    assert validation._POOL is None


def test_a_root_that_is_not_ours_is_built_alone(tmp_path: Path, workers: None) -> None:
    folders = write_roots(tmp_path, 17)
    (tmp_path / folders[3] / STATE_FILE).unlink()  # no id: cannot be split out by label
    result = check_roots(tmp_path, folders, schema_dir=default_schema_dir())
    assert {f: r.problems for f, r in result.items()} == {f: [] for f in folders}
    assert result[folders[3]].objects == result[folders[0]].objects


def test_split_documents_keeps_every_document() -> None:
    text = "a: 1\n---\nb: |\n  ---\n  x\n---\nc: 3\n"
    assert validation._split_documents(text) == ["a: 1\n", "b: |\n  ---\n  x\n", "c: 3\n"]
    assert validation._split_documents("---\na: 1\n") == ["a: 1\n"]
    assert validation._split_documents("") == []


def test_available_cpus_is_at_least_one() -> None:
    assert validation.available_cpus() >= 1
