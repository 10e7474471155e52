"""Checking the objects a build yields against their schemas, one object at a
time, in this process or a worker process (`_check_texts` is what the workers
run). Knows nothing of building, pools or caching (bridge.validation.roots).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.validation.kustomize import DEPLOYMENT_ID_LABEL, _Loader
from bridge.validation.schemas import DEFAULT_KUBERNETES_VERSION, validate_document


def validate_objects(
    docs: Iterable[dict[str, Any]],
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    schema_dir: Path | None = None,
) -> tuple[list[str], list[str]]:
    """(errors, unchecked) for built objects."""
    errors: list[str] = []
    unchecked: list[str] = []
    for doc in docs:
        finding = validate_document(
            doc, kubernetes_version=kubernetes_version, schema_dir=schema_dir
        )
        errors.extend(f"{finding.ref}: {e}" for e in finding.errors)
        if finding.unchecked:
            unchecked.append(f"{finding.ref}: {finding.unchecked}")
    return errors, unchecked


@dataclass
class RootCheck:
    """What building and validating one root found."""

    objects: int = 0
    errors: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # "Kind/ns/name: why", per object
    # why -> how many objects: the reason names the apiVersion and kind (and the
    # schema folder), so this is per kind, for reporting each kind once.
    unchecked_kinds: dict[str, int] = field(default_factory=dict)
    build_error: str | None = None  # kustomize's message; then nothing else is known

    def count(self, errors: Sequence[str], unchecked: tuple[str, str] | None) -> None:
        """One more object of the root, with what checking it found."""
        self.objects += 1
        self.errors.extend(errors)
        if unchecked:
            ref, why = unchecked
            self.unchecked.append(f"{ref}: {why}")
            self.unchecked_kinds[why] = self.unchecked_kinds.get(why, 0) + 1

    @property
    def problems(self) -> list[str]:
        """Everything that makes the root unfit to commit."""
        if self.build_error is not None:
            return [f"kustomize build failed: {self.build_error}"]
        return list(self.errors)


# One object as the workers see it: (owner deployment id, errors prefixed with
# the object's "Kind/namespace/name", (that ref, why no schema checked it) or
# None); None for an empty document.
_Unchecked = tuple[str, str] | None


_Result = tuple[str | None, tuple[str, ...], _Unchecked]


_Checked = _Result | None


def _check_texts(
    texts: Sequence[str], kubernetes_version: str, schema_dir: str | None
) -> list[_Checked]:
    """Parse and validate documents (in a worker process or in this one).

    Raises yaml.YAMLError when a text is not exactly one document, so that the
    caller can fall back to reading the whole build output as a stream."""
    directory = Path(schema_dir) if schema_dir is not None else None
    out: list[_Checked] = []
    for text in texts:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader (C or Python)
        if not doc:
            out.append(None)
            continue
        if not isinstance(doc, dict):
            raise yaml.YAMLError("a document of the build output is not a mapping")
        out.append(_check_document(doc, kubernetes_version, directory))
    return out


def _check_document(
    doc: dict[str, Any], kubernetes_version: str, schema_dir: Path | None
) -> _Result:
    finding = validate_document(doc, kubernetes_version=kubernetes_version, schema_dir=schema_dir)
    metadata = doc.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    owner = labels.get(DEPLOYMENT_ID_LABEL) if isinstance(labels, dict) else None
    return (
        str(owner) if owner is not None else None,
        tuple(f"{finding.ref}: {e}" for e in finding.errors),
        (finding.ref, finding.unchecked) if finding.unchecked else None,
    )
