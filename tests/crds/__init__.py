"""Hand-made CRDs (see README.md) and the schema folder the tests make of them."""

from __future__ import annotations

from pathlib import Path

from bridge.validation.crds import schema_files, write_schema_files

CRDS = Path(__file__).parent


def crd_files() -> list[Path]:
    return sorted(CRDS.glob("*.yaml"))


def build_schema_dir(out: Path) -> Path:
    """`gitops-bridge schemas import tests/crds/*.yaml --out out`, in process."""
    write_schema_files(schema_files(crd_files()), out)
    return out
