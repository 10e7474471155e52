"""`gitops-bridge schemas import`: JSON schemas from CRD YAML, in the layout
`bridge.validation.schemas` reads, that really reject wrong custom resources.

The CRDs are hand-made (tests/crds), so all of this runs in a fresh clone with
no ../shared beside it; one test compares with ../shared/schemas where present.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.errors import ConfigError
from bridge.validation.crds import schema_files, write_schema_files
from bridge.validation.schemas import validate_document
from tests.crds import crd_files

pytestmark = pytest.mark.quick

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "schemas"
GOLDEN = REPO / "tests" / "rendering" / "cases"


def bridge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("K8S_SCHEMA_DIR", "BRIDGE_SCHEMAS")}
    env.pop("BRIDGE_RENDER_SCHEMA_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=cwd,
        timeout=120,
        check=False,
    )


def crd(group: str = "example.com", kind: str = "Widget", **version: Any) -> dict[str, Any]:
    entry = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                },
            }
        },
        **version,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.lower()}s.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": f"{kind.lower()}s"},
            "scope": "Namespaced",
            "versions": [entry],
        },
    }


def write_docs(path: Path, *docs: Any) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


# --- layout ----------------------------------------------------------------


def test_one_file_per_served_version_in_the_kubeconform_layout(crd_schema_dir: Path) -> None:
    made = sorted(p.relative_to(crd_schema_dir).as_posix() for p in crd_schema_dir.rglob("*"))
    assert made == [
        "bitnami.com",
        "bitnami.com/sealedsecret_v1alpha1.json",
        "gateway.networking.k8s.io",
        "gateway.networking.k8s.io/httproute_v1.json",  # v1alpha2 is not served: no file
        "gateway.networking.k8s.io/httproute_v1beta1.json",
        "keda.sh",
        "keda.sh/scaledobject_v1alpha1.json",
        "monitoring.coreos.com",
        "monitoring.coreos.com/servicemonitor_v1.json",
    ]
    schema = json.loads((crd_schema_dir / "keda.sh/scaledobject_v1alpha1.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "keda.sh", "kind": "ScaledObject", "version": "v1alpha1"}
    ]


def test_openapi_forms_become_json_schema(crd_schema_dir: Path) -> None:
    sealed = json.loads((crd_schema_dir / "bitnami.com/sealedsecret_v1alpha1.json").read_text())
    template = sealed["properties"]["spec"]["properties"]["template"]["properties"]
    assert template["metadata"]["type"] == ["object", "null"]
    assert "nullable" not in template["metadata"]
    monitor = json.loads(
        (crd_schema_dir / "monitoring.coreos.com/servicemonitor_v1.json").read_text()
    )
    port = monitor["properties"]["spec"]["properties"]["endpoints"]["items"]["properties"]
    assert port["targetPort"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]


# --- the schemas check what they should ------------------------------------


def _golden(name: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(GOLDEN.glob(f"*/expected/{name}")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    assert docs, name
    return docs


SCALED = _golden("autoscaling.yaml")[0]
ROUTE = _golden("httproute.yaml")[0]
MONITOR = yaml.safe_load(
    (REPO / "deploy/components/servicemonitor/servicemonitor.yaml").read_text()
)
SEALED = {
    "apiVersion": "bitnami.com/v1alpha1",
    "kind": "SealedSecret",
    "metadata": {"name": "s", "namespace": "agents"},
    "spec": {
        "encryptedData": {"API_KEY": "AgB..."},
        "template": {"metadata": None, "type": "Opaque"},
    },
}


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node: Any = out
    steps = [int(p) if p.isdigit() else p for p in path.split(".")]
    for step in steps[:-1]:
        node = node[step]
    node[steps[-1]] = value
    return out


def _drop(doc: dict[str, Any], path: str) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node: Any = out
    steps = path.split(".")
    for step in steps[:-1]:
        node = node[int(step) if step.isdigit() else step]
    del node[steps[-1]]
    return out


RIGHT = {
    "ScaledObject": SCALED,
    "HTTPRoute v1": ROUTE,
    "HTTPRoute v1beta1": {**ROUTE, "apiVersion": "gateway.networking.k8s.io/v1beta1"},
    "ServiceMonitor": MONITOR,
    "SealedSecret, template.metadata null": SEALED,
    "ServiceMonitor, targetPort as a number": _set(MONITOR, "spec.endpoints.0.targetPort", 9090),
    "ServiceMonitor, targetPort as a name": _set(MONITOR, "spec.endpoints.0.targetPort", "http"),
}
WRONG = {
    "ScaledObject, unknown field": (_set(SCALED, "spec.minReplicas", 1), "minReplicas"),
    "ScaledObject, string for an integer": (_set(SCALED, "spec.maxReplicaCount", "5"), "'5'"),
    "ScaledObject, metricType not in enum": (
        _set(SCALED, "spec.triggers.0.metricType", "Percent"),
        "Percent",
    ),
    "ScaledObject, required field missing": (
        _drop(SCALED, "spec.scaleTargetRef"),
        "scaleTargetRef",
    ),
    "HTTPRoute, port out of range": (
        _set(ROUTE, "spec.rules.0.backendRefs.0.port", 70000),
        "70000",
    ),
    "HTTPRoute, hostname against its pattern": (_set(ROUTE, "spec.hostnames", ["A_B"]), "A_B"),
    "HTTPRoute v1alpha2, not served": (
        {**ROUTE, "apiVersion": "gateway.networking.k8s.io/v1alpha2"},
        None,  # no schema: unchecked, never valid
    ),
    "ServiceMonitor, interval not a duration": (
        _set(MONITOR, "spec.endpoints.0.interval", "30 seconds"),
        "30 seconds",
    ),
    "ServiceMonitor, targetPort a boolean": (
        _set(MONITOR, "spec.endpoints.0.targetPort", True),
        "True",
    ),
    "SealedSecret, encryptedData missing": (_drop(SEALED, "spec.encryptedData"), "encryptedData"),
}


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_a_right_custom_resource_is_accepted(crd_schema_dir: Path, name: str) -> None:
    finding = validate_document(RIGHT[name], schema_dir=crd_schema_dir)
    assert finding.unchecked is None, finding
    assert finding.errors == (), finding


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_custom_resource_is_rejected(crd_schema_dir: Path, name: str) -> None:
    doc, shown = WRONG[name]
    finding = validate_document(doc, schema_dir=crd_schema_dir)
    if shown is None:
        assert finding.errors == () and finding.unchecked, finding
        assert "v1alpha2 HTTPRoute" in finding.unchecked
        return
    assert finding.unchecked is None, finding
    assert finding.errors, f"{name} was accepted"
    assert any(shown in e for e in finding.errors), finding.errors


def test_without_a_schema_folder_custom_resources_are_unchecked_not_valid() -> None:
    finding = validate_document(SCALED, schema_dir=None)
    assert finding.errors == ()
    assert finding.unchecked == "no schema folder given for keda.sh/v1alpha1 ScaledObject"


# --- stable output -----------------------------------------------------------


def test_output_is_byte_stable_whatever_the_yaml_key_order(tmp_path: Path) -> None:
    source = crd_files()
    first = {f.path: f.data for f in schema_files(source)}
    again = {f.path: f.data for f in schema_files(source)}
    assert first == again

    def reversed_keys(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: reversed_keys(node[k]) for k in reversed(list(node))}
        if isinstance(node, list):
            return [reversed_keys(v) for v in node]
        return node

    shuffled = []
    for index, path in enumerate(source):
        docs = [reversed_keys(d) for d in yaml.safe_load_all(path.read_text())]
        shuffled.append(tmp_path / f"{index}.yaml")
        shuffled[-1].write_text(yaml.safe_dump_all(docs, sort_keys=False, width=60))
    assert {f.path: f.data for f in schema_files(shuffled)} == first
    for data in first.values():
        assert data.endswith(b"}\n")
        assert data == (json.dumps(json.loads(data), sort_keys=True, indent=2) + "\n").encode()


def _as_crd(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD a ../shared schema file was made from (its README's conversion, undone)."""
    (gvk,) = schema["x-kubernetes-group-version-kind"]

    def undo(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key in ("properties", "patternProperties") and isinstance(value, dict):
                out[key] = {name: undo(sub) for name, sub in value.items()}
            elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
                out[key] = undo(value)
            elif key in ("allOf", "anyOf", "oneOf"):
                out[key] = [undo(sub) for sub in value]
            else:
                out[key] = value
        if isinstance(out.get("type"), list) and "null" in out["type"]:
            (out["type"],) = [t for t in out["type"] if t != "null"]
            out["nullable"] = True
            if isinstance(out.get("enum"), list):
                out["enum"] = [v for v in out["enum"] if v is not None]
        return out

    body = undo({k: v for k, v in schema.items() if not k.startswith(("$", "x-kubernetes-g"))})
    made = crd(gvk["group"], gvk["kind"], name=gvk["version"], schema={"openAPIV3Schema": body})
    return made


# Every file of ../shared/schemas where it is present (~4 s in all), else one skip.
SHARED_FILES = sorted(p.relative_to(SHARED).as_posix() for p in SHARED.glob("*/*.json")) or [
    "keda.sh/scaledobject_v1alpha1.json"
]


@pytest.mark.parametrize("name", SHARED_FILES)
def test_the_same_bytes_as_shared_schemas(tmp_path: Path, name: str) -> None:
    """A folder made here and ../shared/schemas are interchangeable: same paths, same bytes."""
    if not (SHARED / name).is_file():
        pytest.skip(f"{SHARED / name} is absent (../shared/schemas beside the checkout)")
    want = (SHARED / name).read_bytes()
    source = write_docs(tmp_path / "crd.yaml", _as_crd(json.loads(want)))
    (made,) = schema_files([source])
    assert made.path == name
    assert made.data == want


# --- refusals ------------------------------------------------------------------

NOT_A_CRD = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}
BAD: dict[str, tuple[list[Any], str]] = {
    "a Deployment": (
        [crd(), NOT_A_CRD],
        "document 2: apps/v1 Deployment 'web' is not a CustomResourceDefinition",
    ),
    "a list": ([["a"]], "document 1: not a mapping but list"),
    "v1beta1 CRD": (
        [{**crd(), "apiVersion": "apiextensions.k8s.io/v1beta1"}],
        "allowed: apiextensions.k8s.io/v1",
    ),
    "group with ..": ([crd(group="../evil")], "spec.group '../evil'"),
    "group without a dot": ([crd(group="example")], "spec.group 'example'"),
    "kind with a slash": ([crd(kind="a/b")], "spec.names.kind 'a/b'"),
    "version with a slash": ([crd(name="../v1")], "spec.versions[0].name '../v1'"),
    "served without schema": (
        [crd(schema=None)],
        "(v1) is served but has no schema.openAPIV3Schema",
    ),
    "served not a boolean": ([crd(served="yes")], "spec.versions[0].served 'yes'"),
    "schema not a JSON schema": (
        [crd(schema={"openAPIV3Schema": {"type": "object", "properties": {"a": {"type": 7}}}})],
        "openAPIV3Schema at properties/a/type",
    ),
    "pattern that does not compile": (
        [
            crd(
                schema={
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {"a": {"type": "string", "pattern": "(unclosed"}},
                    }
                }
            )
        ],
        "openAPIV3Schema at properties/a/pattern: '(unclosed' is not a 'regex'",
    ),
    "nothing served": ([crd(served=False)], "no served CustomResourceDefinition version"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_refused_naming_file_and_document(tmp_path: Path, name: str) -> None:
    docs, message = BAD[name]
    source = write_docs(tmp_path / "input.yaml", *docs)
    with pytest.raises(ConfigError) as info:
        schema_files([source])
    assert message in str(info.value)
    assert str(source) in str(info.value)


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "broken.yaml"
    source.write_text("apiVersion: apiextensions.k8s.io/v1\nkind: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML at line 3"):
        schema_files([source])


def test_two_files_defining_one_schema_differently_are_refused(tmp_path: Path) -> None:
    one = write_docs(tmp_path / "one.yaml", crd())
    other = crd()
    other["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["required"] = ["spec"]
    two = write_docs(tmp_path / "two.yaml", other)
    with pytest.raises(ConfigError, match=r"both define example.com/widget_v1.json, differently"):
        schema_files([one, two])
    assert len(schema_files([one, one])) == 1  # the same CRD twice is fine


def test_other_kinds_can_be_skipped_in_a_bundle(tmp_path: Path) -> None:
    bundle = write_docs(tmp_path / "release.yaml", NOT_A_CRD, crd(), None)
    (made,) = schema_files([bundle], ignore_other_kinds=True)
    assert made.path == "example.com/widget_v1.json"


def test_nothing_is_written_outside_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "example.com").symlink_to(outside, target_is_directory=True)
    files = schema_files([write_docs(tmp_path / "crd.yaml", crd())])
    with pytest.raises(ConfigError, match="outside --out"):
        write_schema_files(files, out)
    assert list(outside.iterdir()) == []


def test_rewriting_leaves_equal_files_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = schema_files([write_docs(tmp_path / "crd.yaml", crd())])
    assert write_schema_files(files, out) == [("example.com/widget_v1.json", True)]
    target = out / "example.com/widget_v1.json"
    os.utime(target, (1, 1))
    assert write_schema_files(files, out) == [("example.com/widget_v1.json", False)]
    assert target.stat().st_mtime == 1
    changed = crd(schema={"openAPIV3Schema": {"type": "object"}})
    files = schema_files([write_docs(tmp_path / "crd.yaml", changed)])
    assert write_schema_files(files, out) == [("example.com/widget_v1.json", True)]
    assert json.loads(target.read_text())["type"] == "object"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in target.parent.iterdir()] == ["widget_v1.json"]  # no temp file left


# --- the command -----------------------------------------------------------------


def test_the_command_imports_and_validate_uses_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    done = bridge("schemas", "import", *map(str, crd_files()), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"wrote {out / 'keda.sh/scaledobject_v1alpha1.json'}" in done.stdout
    assert "5 schemas in" in done.stderr

    tree = tmp_path / "tree"
    root = tree / "agents" / "research-agent"
    root.mkdir(parents=True)
    (root / "kustomization.yaml").write_text("resources: [autoscaling.yaml]\n")
    (root / "autoscaling.yaml").write_bytes(
        (GOLDEN / "autoscaled" / "expected" / "autoscaling.yaml").read_bytes()
    )
    checked = bridge("validate", str(tree), "--schema-dir", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok   agents/research-agent (2 objects)" in checked.stdout
    assert "not schema-checked" not in checked.stdout
    assert f"schemas from {out} (--schema-dir)" in checked.stderr

    (root / "autoscaling.yaml").write_text(
        (root / "autoscaling.yaml")
        .read_text()
        .replace("pollingInterval: 30", "pollingInterval: soon")
    )
    failed = bridge("validate", str(tree), "--schema-dir", str(out))
    assert failed.returncode == 1
    assert "spec/pollingInterval: 'soon' is not of type 'integer'" in failed.stdout


def test_validate_reports_each_unchecked_kind_once(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    tree = tmp_path / "tree"
    for name in ("a", "b"):
        root = tree / name
        root.mkdir(parents=True)
        (root / "kustomization.yaml").write_text("resources: [autoscaling.yaml]\n")
        text = (GOLDEN / "autoscaled" / "expected" / "autoscaling.yaml").read_text()
        (root / "autoscaling.yaml").write_text(text.replace("research-agent", f"agent-{name}"))
    done = bridge("validate", str(tree), "--schema-dir", str(empty))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if "not schema-checked" in line]
    assert lines == [
        f"not schema-checked: no schema for keda.sh/v1alpha1 ScaledObject in {empty} "
        "(4 objects in 2 roots)"
    ]
    assert "schemas import" in done.stderr
    strict = bridge("validate", str(tree), "--schema-dir", str(empty), "--require-schemas")
    assert strict.returncode == 1


def test_the_command_exits_2_naming_the_bad_input(tmp_path: Path) -> None:
    source = write_docs(tmp_path / "mixed.yaml", crd(), NOT_A_CRD)
    done = bridge("schemas", "import", str(source), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert f"{source}, document 2: apps/v1 Deployment 'web'" in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    missing = bridge("validate", str(tmp_path), "--schema-dir", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "--schema-dir" in missing.stderr
