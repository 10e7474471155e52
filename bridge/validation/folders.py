"""Which folder of custom-resource schemas to use (README, "Validating custom
resources"). Apart from bridge.validation.schemas so that finding the folder, which every
`run` does at start, does not import jsonschema (~70 ms), which only a cycle
with something to validate needs.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_schema_dir() -> Path | None:
    """`$K8S_SCHEMA_DIR`, else `../shared/schemas` beside the working directory or checkout."""
    return find_schema_dir()[0]


def find_schema_dir(configured: Path | None = None) -> tuple[Path | None, str]:
    """The folder of CRD schemas to use, and where that choice came from.

    In this order (README, "Validating custom resources"): `configured`
    (`render.schemaDir`, `BRIDGE_RENDER_SCHEMA_DIR`, `validate --schema-dir`);
    `$K8S_SCHEMA_DIR`, then `$BRIDGE_SCHEMAS`; `../shared/schemas` beside the
    working directory, then beside the checkout the bridge runs from (a
    development layout). (None, why) when there is none: custom resources are
    then reported as not schema-checked."""
    if configured is not None:
        return configured, "render.schemaDir"
    for name in ("K8S_SCHEMA_DIR", "BRIDGE_SCHEMAS"):
        value = os.environ.get(name)
        if value:
            return Path(value), f"${name}"
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base.parent / "shared" / "schemas"
        if candidate.is_dir():
            return candidate, "../shared/schemas"
    return None, "no schema folder"
