"""Loading settings: `bridge.yaml` (or $BRIDGE_CONFIG) plus `BRIDGE_*`
environment overrides (SPEC §4). Values of overrides are parsed as YAML, so
lists and numbers work (`[a, b]`, `15`); a list may also be comma-separated.
`BRIDGE_TARGETS` takes the whole target list as YAML/JSON. Unknown keys are
refused by name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bridge.config.reader import _check_unknown, _Reader
from bridge.config.schema import DEFAULT_CONFIG_FILE, SCHEMA, _leaf_paths, _lookup, env_name
from bridge.config.sections import build
from bridge.config.settings import Settings
from bridge.errors import ConfigError


def _parse_env_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _merge_env(raw: dict[str, Any], env: Mapping[str, str], schema: Mapping[str, Any]) -> None:
    for path in _leaf_paths(schema):
        name = env_name(path)
        if name not in env:
            continue
        kind = _lookup(schema, path)[0]
        value: Any = env[name]
        if kind in ("str", "path"):
            value = value  # keep strings as typed: "0123" must stay "0123"
        else:
            value = _parse_env_value(value)
        node = raw
        parts = path.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    require_api_key: bool = True,
    require_bridge_key: bool = True,
    require_health_secrets: bool | None = None,
) -> Settings:
    """Settings from a YAML file (optional) and the environment; ConfigError on anything wrong.
    `require_health_secrets` (default: as `require_api_key`): commands that start
    no health source (`status` asks Argo CD only if its token is there) pass False."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    source = "<environment>"
    if path is None and env.get("BRIDGE_CONFIG"):
        path = env["BRIDGE_CONFIG"]
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"cannot read config file {source}: {e.strerror or e}",
                hint="pass an existing file with --config or BRIDGE_CONFIG",
            ) from e
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{source}: not valid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of keys")
        raw = loaded
    _check_unknown(raw, SCHEMA, "", source)
    _merge_env(raw, env, SCHEMA)
    if "BRIDGE_TARGETS" in env:
        raw["targets"] = _parse_env_value(env["BRIDGE_TARGETS"])
    return build(
        _Reader(raw, source, env),
        require_api_key=require_api_key,
        require_bridge_key=require_bridge_key,
        require_health_secrets=require_health_secrets,
    )
