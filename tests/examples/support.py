"""Shared helpers for the examples/ and `gitops-bridge bootstrap` tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bridge.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
# The CRD schemas live beside the checkout (SPEC: ../shared/schemas).
SCHEMA_DIR = REPO.parent / "shared" / "schemas"
# A bridge key for configs whose secrets provider needs one (test-only value).
BRIDGE_KEY_ENV = {"GITOPS_BRIDGE_KEY": "t" * 48}
PLACEHOLDER_AGE = "age1" + ("example" * 9)[:58]


def settings_from(path: Path) -> Settings:
    return load_settings(path, env=BRIDGE_KEY_ENV, require_api_key=False)


def write_config(tmp_path: Path, config: Mapping[str, Any], name: str = "bridge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def base_config(**overrides: Any) -> dict[str, Any]:
    """A valid bridge.yaml as a dict: one target, SOPS, no signing, no gateway."""
    config: dict[str, Any] = {
        "controlPlane": {"listenerId": "12345678-0000-0000-0000-000000000000"},
        "targets": [
            {
                "namespace": "agents",
                "repo": "ssh://git@git.example.com/platform/agents.git",
                "branch": "main",
                "path": "clusters",
                "cluster": "edge-1",
            }
        ],
        "secrets": {"provider": "sops", "sops": {"ageRecipients": [PLACEHOLDER_AGE]}},
    }
    config.update(overrides)
    return config


def run_cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BRIDGE_") and k not in ("LANGSMITH_API_KEY", "GITOPS_BRIDGE_KEY")
    }
    env.update(BRIDGE_KEY_ENV)
    # Tests run from a temporary folder; the package comes from this checkout.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


CLI = [sys.executable, "-m", "bridge"]
