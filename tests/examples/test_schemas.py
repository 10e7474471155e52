"""Every example file and every bootstrap output validates strictly (unknown fields rejected).

Custom resources are checked against ../shared/schemas (Argo CD, Flux source
and kustomize toolkits), core kinds with kubernetes-validate, both through
`bridge.validation.schemas.validate_document(strict=True)`. A document no schema could
check (`unchecked`) is a failure, not a pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.commands.bootstrap import bootstrap_manifests
from bridge.validation.schemas import validate_document
from tests.examples.support import EXAMPLES, base_config, settings_from, write_config

CONFIG_NAME = "bridge.yaml"  # example bridge configurations, not Kubernetes objects


def _example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))


def assert_valid(doc: dict[str, Any], schema_dir: Path, where: str) -> None:
    finding = validate_document(doc, schema_dir=schema_dir, strict=True)
    assert finding.unchecked is None, f"{where}: {finding.ref} unchecked: {finding.unchecked}"
    assert finding.errors == (), f"{where}: {finding.ref}: {finding.errors}"


def test_examples_contain_manifests_and_configs() -> None:
    files = _example_files()
    assert {p.name for p in files if p.name == CONFIG_NAME}
    assert len([p for p in files if p.name != CONFIG_NAME]) >= 10


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_file_validates(path: Path, schema_dir: Path) -> None:
    if path.name == CONFIG_NAME:
        settings = settings_from(path)  # a bridge config must load cleanly
        assert settings.targets
        return
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents, f"{path} holds no object"
    for doc in documents:
        assert_valid(doc, schema_dir, str(path.relative_to(EXAMPLES)))


SAMPLE_VARIANTS: dict[str, dict[str, Any]] = {
    "sops-unsigned": {},
    "sealed-openpgp-gateway": {
        "secrets": {"provider": "sealed-secrets", "sealedSecrets": {"certFile": "/c.pem"}},
        "git": {"signing": {"format": "openpgp", "key": "0x0123456789ABCDEF"}},
        "render": {"gateway": {"name": "gw", "namespace": "gw", "hostname": "a.example.com"}},
    },
    "none-ssh-two-targets": {
        "secrets": {"provider": "none"},
        "git": {"signing": {"format": "ssh", "keyFile": "/k/id"}},
        "targets": [
            {"namespace": "agents", "repo": "https://git.example.com/a.git", "cluster": "c1"},
            {"namespace": "jobs", "repo": "ssh://git@h:2222/b.git", "path": "x/y", "cluster": "c2"},
        ],
    },
}


@pytest.mark.parametrize("variant", sorted(SAMPLE_VARIANTS))
@pytest.mark.parametrize(
    ("flavour", "layout"),
    [("argocd", "applicationset"), ("argocd", "namespace"), ("flux", "namespace")],
)
def test_every_bootstrap_output_validates(
    tmp_path: Path, schema_dir: Path, variant: str, flavour: Any, layout: Any
) -> None:
    settings = settings_from(write_config(tmp_path, base_config(**SAMPLE_VARIANTS[variant])))
    manifests = bootstrap_manifests(settings, flavour, layout=layout)
    assert manifests
    for name, data in manifests.items():
        documents = list(yaml.safe_load_all(data))
        assert len(documents) == 1, name
        assert_valid(documents[0], schema_dir, name)


def test_strict_validation_really_rejects_unknown_fields(schema_dir: Path) -> None:
    """The checks above would be worthless if the schemas accepted anything."""
    data = (EXAMPLES / "argocd" / "manifests" / "appproject.yaml").read_text()
    project = yaml.safe_load(data)
    project["spec"]["sourceRepo"] = project["spec"].pop("sourceRepos")
    finding = validate_document(project, schema_dir=schema_dir, strict=True)
    assert any("sourceRepo" in e for e in finding.errors)
    kustomization = yaml.safe_load(
        next((EXAMPLES / "flux" / "manifests").glob("kustomization-*.yaml")).read_text()
    )
    kustomization["spec"]["interval"] = "5 minutes"
    assert validate_document(kustomization, schema_dir=schema_dir, strict=True).errors
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validate_document(unknown, schema_dir=schema_dir, strict=True).unchecked
