"""`gitops-bridge render` and `validate` end to end, with real sops and kustomize."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bridge.secrets.sops import sops_binary_path
from tests.leakscan import scan_text
from tests.rendering.support import CASES
from tests.sopstools import new_identity


def bridge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


@pytest.fixture
def sops_config(tmp_path: Path) -> tuple[Path, Path]:
    identity = new_identity()
    key = tmp_path / "age.agekey"
    key.write_text(f"{identity}\n")
    config = tmp_path / "bridge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "controlPlane": {
                    "url": "https://api.host.langchain.com",
                    "listenerId": "11111111-1111-4111-8111-111111111111",
                },
                "targets": [{"namespace": "agents", "repo": "file:///nowhere.git"}],
                "secrets": {
                    "provider": "sops",
                    "sops": {"ageRecipients": [str(identity.to_public())]},
                },
            }
        )
    )
    return config, key


def case_file(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"{case}.json"
    path.write_text(json.dumps(json.loads((CASES / case / "case.json").read_text())["deployment"]))
    return path


def test_render_then_validate_with_sops(tmp_path: Path, sops_config: tuple[Path, Path]) -> None:
    config, key = sops_config
    out = tmp_path / "out"
    done = bridge(
        "render",
        "--deployment",
        str(case_file(tmp_path, "secrets-and-references")),
        "--out",
        str(out),
        "--config",
        str(config),
    )
    assert done.returncode == 0, done.stderr
    folder = out / "local" / "agents" / "support-agent"
    assert (folder / "secret-env.yaml").is_file()
    assert (out / "local" / "agents" / "kustomization.yaml").is_file()
    secret_values = ["sk-test-not-a-real-key-0001", "zd-test-token-0002"]
    for path in folder.iterdir():
        assert scan_text(path.read_text(), secret_values) == [], path
    assert scan_text(done.stdout + done.stderr, secret_values) == []
    plain = subprocess.run(
        [str(sops_binary_path()), "--decrypt", str(folder / "secret-env.yaml")],
        capture_output=True,
        text=True,
        env={"SOPS_AGE_KEY_FILE": str(key), "HOME": str(tmp_path)},
        check=True,
    ).stdout
    assert yaml.safe_load(plain)["stringData"] == {
        "OPENAI_API_KEY": "sk-test-not-a-real-key-0001",
        "ZENDESK_TOKEN": "zd-test-token-0002",
    }
    checked = bridge("validate", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 of 1 roots valid" in checked.stdout


def test_render_refuses_secrets_without_a_provider(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = bridge(
        "render",
        "--deployment",
        str(case_file(tmp_path, "secrets-and-references")),
        "--out",
        str(out),
    )
    assert done.returncode == 1
    assert "no secrets provider is configured" in done.stderr
    assert "support-agent" in done.stderr
    assert not out.exists() or not any(out.rglob("*.yaml"))


def test_render_hostile_name_stays_inside_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = bridge(
        "render", "--deployment", str(case_file(tmp_path, "hostile-strings")), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".json")]
    assert written and all(out in p.parents for p in written)


def test_render_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    done = bridge("render", "--deployment", str(bad), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "not JSON" in done.stderr


def test_validate_reports_a_broken_root(tmp_path: Path) -> None:
    root = tmp_path / "c" / "ns" / "broken"
    root.mkdir(parents=True)
    (root / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    good = tmp_path / "c" / "ns" / "good"
    good.mkdir()
    (good / "kustomization.yaml").write_text("resources: [svc.yaml]\n")
    (good / "svc.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\n"
        "spec: {ports: [{port: 80}], bogusField: 1}\n"
    )
    done = bridge("validate", str(tmp_path))
    assert done.returncode == 1
    assert "FAIL c/ns/broken: kustomize build failed" in done.stdout
    assert "FAIL c/ns/good" in done.stdout and "bogusField" in done.stdout
