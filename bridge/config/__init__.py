"""Typed settings: `bridge.yaml` plus `BRIDGE_*` environment overrides (SPEC §4),
loaded and validated once. This package's face: the settings types and
`load_settings`; the key tree is bridge.config.schema, the checks
bridge.config.sections.
"""

from bridge.config.loading import load_settings
from bridge.config.schema import DEFAULT_CONFIG_FILE, ENV_PREFIX, SCHEMA, env_name
from bridge.config.settings import (
    DNS_LABEL,
    ENV_NAME,
    UUID,
    ControlPlaneSettings,
    ForgeAuthSettings,
    GatewaySettings,
    GitSettings,
    HttpsSettings,
    PolicySettings,
    PublishSettings,
    PullRequestSettings,
    RenderSettings,
    SecretKeyRef,
    SecretsSettings,
    Settings,
    SigningSettings,
    SshSettings,
    Target,
)

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "DNS_LABEL",
    "ENV_NAME",
    "ENV_PREFIX",
    "SCHEMA",
    "UUID",
    "ControlPlaneSettings",
    "ForgeAuthSettings",
    "GatewaySettings",
    "GitSettings",
    "HttpsSettings",
    "PolicySettings",
    "PublishSettings",
    "PullRequestSettings",
    "RenderSettings",
    "SecretKeyRef",
    "SecretsSettings",
    "Settings",
    "SigningSettings",
    "SshSettings",
    "Target",
    "env_name",
    "load_settings",
]
