"""Typed values out of the merged raw config, naming the key in every error."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.config.schema import SCHEMA, _lookup, env_name
from bridge.config.settings import ENV_NAME
from bridge.errors import ConfigError
from bridge.redaction import Redacted


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Reader:
    """Reads typed values out of the merged raw config, naming keys in errors."""

    def __init__(self, raw: Mapping[str, Any], source: str, env: Mapping[str, str]) -> None:
        self.raw = raw
        self.source = source
        self.env = env

    def error(self, path: str, value: Any, allowed: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: key `{path}` has value {_describe(value)}; allowed: {allowed}",
            hint=f"set it in the file or with {env_name(path)}",
        )

    def convert(self, path: str, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "str":
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise self.error(path, value, "a string")
            return str(value)
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(path, value, "an integer")
            return value
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.error(path, value, "a number")
            return float(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.error(path, value, "true or false")
            return value
        if kind == "path":
            if not isinstance(value, str) or not value:
                raise self.error(path, value, "a file path")
            return Path(value).expanduser()
        if kind == "strlist":
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise self.error(path, value, "a list of non-empty strings")
            return tuple(value)
        raise AssertionError(kind)


def _get(raw: Mapping[str, Any], path: str) -> Any:
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _value(reader: _Reader, path: str) -> Any:
    kind, default = _lookup(SCHEMA, path)
    value = reader.convert(path, kind, _get(reader.raw, path))
    if value is not None:
        return value
    if kind == "path" and default:
        return Path(default).expanduser()
    return default


def _env_secret(reader: _Reader, key_path: str, env_var: str, *, required: bool) -> Redacted | None:
    if not ENV_NAME.match(env_var):
        raise reader.error(key_path, env_var, "an environment variable name")
    value = reader.env.get(env_var)
    if not value:
        if required:
            raise ConfigError(
                f"{reader.source}: the environment variable {env_var} named by `{key_path}` "
                "is not set or empty",
                hint=f"export {env_var}=<value> before starting the bridge",
            )
        return None
    return Redacted(value)


def _check_unknown(raw: Any, schema: Mapping[str, Any], prefix: str, source: str) -> None:
    if not isinstance(raw, Mapping):
        return
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if key not in schema:
            allowed = ", ".join(f"`{prefix}{k}`" for k in schema)
            raise ConfigError(f"{source}: unknown key `{path}`; allowed here: {allowed}")
        sub = schema[key]
        if isinstance(sub, Mapping):
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(
                    f"{source}: key `{path}` has value {_describe(value)}; allowed: a mapping"
                )
            _check_unknown(value, sub, path + ".", source)
