"""Golden renders: every case's files byte for byte, built by real Kustomize and validated.

Regenerate after an intended change with `UPDATE_GOLDEN=1 ./scripts/test tests/rendering`;
review the diff of tests/rendering/cases/*/expected like any other code change.
Secrets are not golden (their ciphertext is randomised); their plans are checked
instead, and tests/secrets decrypts real ones.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from bridge.validation.folders import default_schema_dir
from bridge.validation.roots import check_roots, validate_roots
from tests.rendering.support import CASES, load_case, render_case, write_plain

pytestmark = pytest.mark.quick  # needs nothing beside the checkout: run in a fresh clone

CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "case.json").is_file())
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("case", CASE_NAMES)
def test_golden(case: str) -> None:
    _dep, rendered, _folder = render_case(case)
    expected = CASES / case / "expected"
    if UPDATE:
        shutil.rmtree(expected, ignore_errors=True)
        expected.mkdir()
        for name, data in rendered.files.items():
            (expected / name).write_bytes(data)
    want = {p.name: p.read_bytes() for p in expected.iterdir()}
    assert sorted(rendered.files) == sorted(want)
    for name, data in rendered.files.items():
        assert data == want[name], f"{case}/{name} differs from the golden file"


@pytest.mark.parametrize("case", CASE_NAMES)
def test_render_is_byte_stable(case: str) -> None:
    assert render_case(case)[1] == render_case(case)[1]


def test_every_case_builds_and_validates(tmp_path: Path, crd_schema_dir: Path) -> None:
    # The upstream schemas where they are beside the checkout, else those made of
    # the hand-made CRDs (tests/crds): KEDA and Gateway objects are checked either way.
    schema_dir = default_schema_dir() or crd_schema_dir
    folders = []
    for case in CASE_NAMES:
        dep, rendered, folder = render_case(case)
        rel = f"prod-eu-1/{dep.namespace}/{folder}"
        write_plain(rendered, tmp_path / rel)
        folders.append(rel)
    result = validate_roots(tmp_path, folders, schema_dir=schema_dir)
    assert result == {f: [] for f in folders}
    checked = check_roots(tmp_path, folders, schema_dir=schema_dir)
    assert [u for f in folders for u in checked[f].unchecked] == []  # none passed unchecked


def test_hostile_strings_survive_kustomize(tmp_path: Path) -> None:
    from bridge.validation.kustomize import kustomize_build

    _dep, rendered, folder = render_case("hostile-strings")
    write_plain(rendered, tmp_path / folder)
    _, _, doc = load_case("hostile-strings")
    spec = doc["deployment"]["source_config"]["resource_spec"]
    objects = kustomize_build(tmp_path / folder)
    assert objects
    for obj in objects:
        meta = obj["metadata"]
        for k, v in spec["labels"].items():
            assert meta["labels"][k] == v and isinstance(meta["labels"][k], str)
        for k, v in spec["annotations"].items():
            assert meta["annotations"][k] == v, (obj["kind"], k)
    # The kustomize output, re-read by a YAML 1.1 reader, still has strings.
    text = yaml.safe_dump_all(objects)
    for obj in yaml.safe_load_all(text):
        assert obj["metadata"]["labels"]["flag-yes"] == "yes"
    assert folder.startswith("weird-agent-u-") or folder.startswith("weird-agent")
    assert "/" not in folder and ".." not in folder


def test_secrets_plans() -> None:
    _dep, rendered, folder = render_case("secrets-and-references")
    plans = {p.file: p for p in rendered.secrets}
    assert sorted(plans) == ["secret-env.yaml", "secret-postgres.yaml"]
    env = plans["secret-env.yaml"]
    assert env.name == f"{folder}-env"
    assert env.keys() == ("OPENAI_API_KEY", "ZENDESK_TOKEN")
    pg = plans["secret-postgres.yaml"]
    assert pg.keys() == ("DATABASE_URI", "POSTGRES_PASSWORD", "POSTGRES_URI")
    assert dict(pg.data)["POSTGRES_URI"].reveal().startswith(f"postgres://postgres:{'p' * 40}@")
    for data in rendered.files.values():
        assert b"sk-test-not-a-real-key" not in data and b"p" * 40 not in data
    kustomization = yaml.safe_load(rendered.files["kustomization.yaml"])
    assert "secret-env.yaml" in kustomization["resources"]
    agent = next(iter(yaml.safe_load_all(rendered.files["agent-server.yaml"])))
    container = agent["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": f"{folder}-env"}}]
    refs = {e["name"]: e for e in container["env"]}
    assert refs["ANTHROPIC_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "shared-llm-keys",
        "key": "anthropic",
    }
    assert refs["POSTGRES_URI"]["valueFrom"]["secretKeyRef"]["name"] == f"{folder}-postgres"


def test_no_password_means_operator_secret() -> None:
    """Provider none: no Postgres secret rendered, only references to the documented name."""
    _dep, rendered, folder = render_case("minimal", password=None)
    assert rendered.secrets == ()
    pg = next(iter(yaml.safe_load_all(rendered.files["postgres.yaml"])))
    env = pg["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == f"{folder}-postgres"
