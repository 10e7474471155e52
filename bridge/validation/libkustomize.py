"""Kustomize's own Go library, loaded in the validation worker processes.

Why: `kubectl kustomize` costs ~15.5 ms of CPU per root (aggregate builds of
16), and parsing its YAML output with PyYAML another ~5.6 ms. The same
Kustomize code built as a shared library (PyPI `pykustomize`, kustomize/api
v0.21) builds one root in ~9 ms and hands back JSON, which Python reads in well
under a millisecond: validation CPU per root drops by more than half
(benchmarks/README.md). Its objects equal kubectl's parsed output for every
root the tests render (tests/rendering/test_libkustomize.py); one known
difference: an integer beyond 2**53 loses precision in the library's JSON
(Go's float64), which changes no schema verdict (types and ranges are checked,
and such a number is still an integer above any limit).

Where: only in the validation worker processes (spawned, never forked), never
in the bridge process. A Go runtime that dies (a fatal error, or a panic the
library does not recover) then ends one worker, not the bridge; the caller
sees the pool broken and goes on with `kubectl kustomize`
(bridge/validation/roots.py). Each worker builds one root at a time:
Kustomize's build mutates package-global state and two builds at once in one
process can die with "concurrent map read and map write"
(kubernetes-sigs/kustomize#3659; Flux serializes its builds with a mutex for
the same reason), and the library keeps its last error in one global. More
parallelism means more worker processes (BRIDGE_VALIDATE_WORKERS).

Options match what `kubectl kustomize` does by default: files only from
within the root (`LoadRestrictionsRootOnly`), no plugins, no Helm, the default
resource order.

`pykustomize` is optional: its wheel declares Python >= 3.14 although it runs
on 3.11 (a pure-Python cffi wrapper around the .so), and it carries a library
for linux/amd64 only, so `scripts/setup` installs it with
`--ignore-requires-python` from a pinned hash where it can, and the bridge
uses `kubectl kustomize` wherever it is absent or fails to load.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError

# The release whose output was compared with kubectl's (tests); another
# version still works, and the worker's first load logs which one runs.
PINNED_VERSION = "0.1.4"
ENGINE_ENV = "BRIDGE_KUSTOMIZE"  # auto (default): the library where it loads; kubectl: never
_KUBECTL_PREFIX = "error: "  # what kubectl prints before Kustomize's message
_LIBRARY_PREFIX = "kustomize build failed: "  # what pykustomize puts before it


class Unavailable(Exception):
    """The library cannot be loaded here: the bridge uses `kubectl kustomize`."""


class BuildFailed(Exception):
    """Kustomize rejected the root; the message is the one kubectl would print."""


def wanted() -> bool:
    """Whether to try the library: installed, and not turned off by BRIDGE_KUSTOMIZE
    (ConfigError for a value other than auto or kubectl).

    Looks the package up without importing it: the bridge process never loads
    the Go runtime."""
    choice = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if choice == "kubectl":
        return False
    if choice != "auto":
        raise ConfigError(f"{ENGINE_ENV}={choice!r}: expected auto or kubectl")
    return importlib.util.find_spec("pykustomize") is not None


_LOADED: Any = None
_LOCK = threading.Lock()


def _library() -> Any:
    """The loaded library and the cffi handle (in a worker process)."""
    global _LOADED
    with _LOCK:
        if _LOADED is None:
            try:
                # By name: the package has no type hints, and need not be installed.
                _ffi = importlib.import_module("pykustomize._ffi")
                lib = _ffi.get_library()
            except Exception as e:  # ImportError, KustomizeLibraryNotFound, OSError
                raise Unavailable(f"{type(e).__name__}: {e}") from None
            _LOADED = (_ffi, lib)
        return _LOADED


def version() -> str:
    """The installed pykustomize release and what its library says of itself."""
    ffi_module, _lib = _library()
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        release = package_version("pykustomize")
    except PackageNotFoundError:
        release = "unknown"
    native = str(ffi_module.get_version())
    # The library names its own build ("pykustomize-v0.1.4"): shown only if it differs.
    return release if native.endswith(f"v{release}") else f"{release} (library {native})"


# kubectl kustomize's defaults (LoadRestrictionsRootOnly = 0 in pykustomize).
_OPTIONS = json.dumps(
    {
        "load_restrictions": 0,
        "reorder": "unspecified",
        "add_managedby_label": False,
        "enable_plugins": False,
        "enable_helm": False,
        "helm_command": "",
    }
).encode()


def build(root: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize root` would print, as parsed JSON.

    BuildFailed carries Kustomize's message worded as kubectl prints it, so a
    report reads the same whichever engine built the root."""
    ffi_module, lib = _library()
    ffi = ffi_module.ffi
    result = ffi.new("char**")
    with _LOCK:  # one build at a time: Kustomize's globals, and the library's last error
        code = lib.pykustomize_build_to_json(
            ffi.new("char[]", os.fsencode(root)), ffi.new("char[]", _OPTIONS), result
        )
        if code != 0:
            pointer = lib.pykustomize_last_error()
            message = ffi.string(pointer).decode("utf-8", "replace") if pointer else "failed"
            raise BuildFailed(_as_kubectl(message))
    try:
        text = ffi.string(result[0]) if result[0] != ffi.NULL else b"{}"
    finally:
        if result[0] != ffi.NULL:
            lib.pykustomize_free(result[0])
    doc = json.loads(text)
    resources = doc.get("resources") if isinstance(doc, dict) else None
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        raise BuildFailed(_KUBECTL_PREFIX + "the Kustomize library returned no list of objects")
    return [r for r in resources if r]


def _as_kubectl(message: str) -> str:
    message = message.strip()
    if message.startswith(_LIBRARY_PREFIX):
        message = message[len(_LIBRARY_PREFIX) :]
    return _KUBECTL_PREFIX + message
