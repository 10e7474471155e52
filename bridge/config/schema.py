"""The key tree of `bridge.yaml`: each leaf's kind and default, and the name of
its environment override (`controlPlane.pollInterval` ->
`BRIDGE_CONTROL_PLANE_POLL_INTERVAL`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bridge.health.settings import SCHEMA as HEALTH_SCHEMA

DEFAULT_CONFIG_FILE = "bridge.yaml"


ENV_PREFIX = "BRIDGE_"


_SSH_KEYS = {"keyFile": ("path", None), "knownHostsFile": ("path", None)}


_HTTPS_KEYS = {"usernameEnv": ("str", None), "passwordEnv": ("str", None)}


# `targets[].publish` (SPEC §6a); read by bridge.config.publishing.
_PUBLISH_KEYS: dict[str, Any] = {
    "mode": ("str", "push"),
    "pullRequest": {
        "forge": ("str", None),
        "apiUrl": ("str", None),
        "auth": {
            "tokenEnv": ("str", None),
            "tokenFile": ("path", None),
            "appId": ("str", None),
            "installationId": ("str", None),
            "privateKeyFile": ("path", None),
        },
        "headBranch": ("str", None),
        "granularity": ("str", "target"),
        "labels": ("strlist", None),
        "reviewers": ("strlist", None),
        "assignees": ("strlist", None),
        "draft": ("bool", False),
        "autoMerge": {"method": ("str", None)},
    },
}


_TARGET_KEYS: dict[str, Any] = {
    "namespace": ("str", None),
    "repo": ("str", None),
    "branch": ("str", "main"),
    "path": ("str", ""),
    "cluster": ("str", None),
    "ssh": _SSH_KEYS,
    "https": _HTTPS_KEYS,
    "publish": _PUBLISH_KEYS,
}


SCHEMA: dict[str, Any] = {
    "controlPlane": {
        "url": ("str", "https://api.host.langchain.com"),
        "apiKeyEnv": ("str", "LANGSMITH_API_KEY"),
        "tenantId": ("str", None),
        "listenerId": ("str", None),
        "pollInterval": ("float", 15.0),
        "timeout": ("float", 10.0),
        "cycleTimeout": ("float", 300.0),
        "maxResponseMb": ("int", 8),
        "maxDeployments": ("int", 50_000),
    },
    "targets": ("targets", None),
    "git": {
        "authorName": ("str", "LangSmith GitOps Bridge"),
        "authorEmail": ("str", "gitops-bridge@example.com"),
        "workdir": ("path", "~/.cache/gitops-bridge"),
        "pushRetries": ("int", 5),
        "signing": {
            "format": ("str", None),
            "keyFile": ("path", None),
            "key": ("str", None),
            "gnupgHome": ("path", None),
        },
        "ssh": _SSH_KEYS,
        "https": _HTTPS_KEYS,
    },
    "policy": {
        "allowedRegistries": ("strlist", None),
        "requireDigest": ("bool", False),
        "maxReplicas": ("int", None),
        "maxCpu": ("float", None),
        "maxMemoryMb": ("int", None),
        "massDelete": {"fraction": ("float", 0.5), "min": ("int", 3)},
    },
    # Health read-back (SPEC §4, §8): its keys live beside their checks in
    # bridge/health/settings.py, which bridge/config/sections.py:_health calls.
    "health": HEALTH_SCHEMA,
    "secrets": {
        "provider": ("str", "none"),
        "bridgeKeyEnv": ("str", "GITOPS_BRIDGE_KEY"),
        "sops": {"ageRecipients": ("strlist", None)},
        "sealedSecrets": {"certFile": ("path", None), "scope": ("str", "strict")},
    },
    "render": {
        "apiKeySecret": {"name": ("str", "langsmith-api-key"), "key": ("str", "api_key")},
        "licenseKeySecret": {
            "name": ("str", "langsmith-license-key"),
            "key": ("str", "license_key"),
        },
        "postgresSecretName": ("str", "{name}-postgres"),
        "nJobsPerWorker": ("int", 10),
        "kubernetesVersion": ("str", "1.33"),
        "schemaDir": ("path", None),
        "gateway": {
            "name": ("str", None),
            "namespace": ("str", None),
            "hostname": ("str", None),
            "sectionName": ("str", None),
            "pathPrefix": ("str", "/"),
        },
    },
}


def env_name(path: str) -> str:
    """`controlPlane.pollInterval` -> `BRIDGE_CONTROL_PLANE_POLL_INTERVAL`."""
    parts = [re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", p).upper() for p in path.split(".")]
    return ENV_PREFIX + "_".join(parts)


def _leaf_paths(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, sub in tree.items():
        path = f"{prefix}{key}"
        if isinstance(sub, Mapping):
            out.extend(_leaf_paths(sub, path + "."))
        else:
            out.append(path)
    return out


def _lookup(schema: Mapping[str, Any], path: str) -> Any:
    node: Any = schema
    for part in path.split("."):
        node = node[part]
    return node
