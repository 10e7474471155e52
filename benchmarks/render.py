"""Render benchmark: prints JSON figures for rendering N deployments in-process
(no validation, no secrets sealing) and for validating them with aggregate
`kubectl kustomize` builds + schema checks, in parallel across cores.

    python benchmarks/render.py --n 1000
    python benchmarks/render.py --n 200 --no-validate
    python benchmarks/render.py --n 1000 --split      # + CPU per root: kustomize/parse/schema
    python benchmarks/render.py --n 1000 --chunk 32   # roots per aggregate kustomize build

CPU figures: `kustomize_cpu_ms_per_root` is the kustomize processes (finished
children), `bridge_cpu_ms_per_root` this process, `workers_cpu_ms_per_root`
the validation worker processes (counted when they are shut down at the end).
`--split` then measures, one thread in this process, the three steps one
after the other on the same roots: kustomize builds (chunks of CHUNK, child
CPU), parsing the output (PyYAML) and schema validation; and, where
Kustomize's library is installed, in one validation worker: the library's
builds (one root each, JSON read included), then the schema checks.

Targets (issue 3): render <= 2 ms per deployment; validation of 1,000 roots
<= 15 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from bridge.config import RenderSettings
    from bridge.formats import canonical_yaml
    from bridge.formats.state import STATE_FILE
    from bridge.models import Listener, parse_deployment
    from bridge.redaction import Redacted
    from bridge.rendering import RenderContext
    from bridge.rendering.naming import folder_names
    from bridge.rendering.rendering import render_deployment
    from bridge.validation import kustomize
    from bridge.validation import roots as validation
    from bridge.validation.folders import default_schema_dir
    from bridge.validation.roots import shutdown_workers, validate_roots

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--no-validate", action="store_true")
    parser.add_argument("--split", action="store_true", help="also time each step alone")
    parser.add_argument("--chunk", type=int, default=None, help="roots per kustomize build")
    args = parser.parse_args()
    if args.chunk:
        kustomize.CHUNK = args.chunk

    listener = Listener(id="l-1", compute_id="bench", namespaces=("agents",))
    ctx = RenderContext(listener=listener, cluster="bench", settings=RenderSettings())
    deps = [
        parse_deployment(
            {
                "id": str(uuid.UUID(int=i + 1)),
                "name": f"agent-{i:05d}",
                "source": "external_docker",
                "status": "READY",
                "source_config": {
                    "listener_id": "l-1",
                    "listener_config": {"k8s_namespace": "agents"},
                    "resource_spec": {"min_scale": 1, "max_scale": 1 + i % 3, "cpu": 1},
                },
                "source_revision_config": {"image_uri": f"registry.example.com/a/b:{i}"},
                "secrets": [],
                "latest_revision_id": str(uuid.UUID(int=10**9 + i)),
            }
        )
        for i in range(args.n)
    ]
    names = folder_names(deps)
    password = Redacted("p" * 40)
    render_deployment(deps[0], ctx, name=names[deps[0].id], postgres_password=password)  # warm
    started = time.perf_counter()
    rendered = [
        render_deployment(d, ctx, name=names[d.id], postgres_password=password) for d in deps
    ]
    render_s = time.perf_counter() - started
    figures: dict[str, object] = {
        "deployments": args.n,
        "render_total_s": round(render_s, 3),
        "render_ms_per_deployment": round(render_s * 1000 / args.n, 3),
        "cores": os.cpu_count(),
    }
    if not args.no_validate:
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            root = Path(tmp)
            folders = []
            for d, r in zip(deps, rendered, strict=True):
                folder = root / "agents" / names[d.id]
                folder.mkdir(parents=True)
                for fname, data in r.files.items():
                    (folder / fname).write_bytes(data)
                for plan in r.secrets:
                    (folder / plan.file).write_bytes(canonical_yaml.dump_bytes(plan.manifest()))
                # The reconciler writes the state file too; validation splits by its id.
                (folder / STATE_FILE).write_text(json.dumps({"deployment": {"id": d.id}}))
                folders.append(f"agents/{names[d.id]}")
            children, me = _cpu(resource.RUSAGE_CHILDREN), _cpu(resource.RUSAGE_SELF)
            started = time.perf_counter()
            result = validate_roots(root, folders, schema_dir=default_schema_dir())
            validate_s = time.perf_counter() - started
            kustomize_cpu = _cpu(resource.RUSAGE_CHILDREN) - children
            bridge_cpu = _cpu(resource.RUSAGE_SELF) - me
            workers_rss = _workers_peak_rss_mb(validation)
            shutdown_workers()
            workers_cpu = _cpu(resource.RUSAGE_CHILDREN) - children - kustomize_cpu
            figures["validate_total_s"] = round(validate_s, 3)
            figures["validate_ms_per_deployment"] = round(validate_s * 1000 / args.n, 3)
            figures["invalid_roots"] = sum(1 for e in result.values() if e)
            figures["chunk"] = kustomize.CHUNK
            for name, cpu in (
                ("kustomize", kustomize_cpu),
                ("bridge", bridge_cpu),
                ("workers", workers_cpu),
            ):
                figures[f"{name}_cpu_ms_per_root"] = round(cpu * 1000 / args.n, 2)
            figures["bridge_peak_rss_mb"] = round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
            )
            figures["workers_peak_rss_mb"] = workers_rss
            if args.split:
                figures.update(_split(root, folders, validation, default_schema_dir()))
    print(json.dumps(figures, indent=2))


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _workers_peak_rss_mb(validation: Any) -> float:
    """Sum of VmHWM of the live validation worker processes."""
    pool = validation._POOL
    total = 0.0
    for pid in list(getattr(pool, "_processes", None) or {}):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return round(total, 1)


def _split(root: Path, folders: list[str], validation: Any, schema_dir: Any) -> dict[str, float]:
    """CPU per root of each step alone, one thread, in this process (cold schema caches
    are warmed first, as a long-running bridge has them)."""
    import yaml

    from bridge.validation import kustomize
    from bridge.validation.schemas import validate_document

    n = len(folders)
    chunks = [folders[i : i + kustomize.CHUNK] for i in range(0, n, kustomize.CHUNK)]
    children = _cpu(resource.RUSAGE_CHILDREN)
    texts = []
    for chunk in chunks:
        with tempfile.TemporaryDirectory(prefix=".validate-", dir=root) as tmp:
            parent = validation._write_parent(root, Path(tmp), chunk)
            texts.append(validation.kustomize_text(parent))
    kustomize = _cpu(resource.RUSAGE_CHILDREN) - children
    parts = [part for text in texts for part in validation._split_documents(text)]
    started = time.process_time()
    docs = [yaml.load(part, Loader=validation._Loader) for part in parts]  # noqa: S506
    parse = time.process_time() - started
    for doc in docs[:50]:
        validate_document(doc, schema_dir=schema_dir)  # compile / load the schemas
    started = time.process_time()
    for doc in docs:
        validate_document(doc, schema_dir=schema_dir)
    schema = time.process_time() - started
    figures = {
        "split_objects_per_root": round(len(docs) / n, 2),
        "split_kustomize_cpu_ms_per_root": round(kustomize * 1000 / n, 2),
        "split_parse_cpu_ms_per_root": round(parse * 1000 / n, 2),
        "split_schema_cpu_ms_per_root": round(schema * 1000 / n, 2),
    }
    if validation.kustomize_engine() == "library":
        pool = validation._pool()
        assert pool is not None
        build_s, schema_s = pool.submit(
            _library_split, [str(root / f) for f in folders], str(schema_dir)
        ).result()
        figures["split_library_build_cpu_ms_per_root"] = round(build_s * 1000 / n, 2)
        figures["split_library_schema_cpu_ms_per_root"] = round(schema_s * 1000 / n, 2)
    return figures


def _library_split(paths: list[str], schema_dir: str) -> tuple[float, float]:
    """In a validation worker: CPU of Kustomize's library (build + reading its JSON),
    then of the schema checks, one root after another (the library warmed first).
    process_time counts every thread of the worker, the Go runtime's included."""
    from bridge.validation import libkustomize
    from bridge.validation.schemas import validate_document

    for doc in libkustomize.build(Path(paths[0])):
        validate_document(doc, schema_dir=Path(schema_dir))
    started = time.process_time()
    built = [libkustomize.build(Path(p)) for p in paths]
    build = time.process_time() - started
    started = time.process_time()
    for docs in built:
        for doc in docs:
            validate_document(doc, schema_dir=Path(schema_dir))
    return build, time.process_time() - started


if __name__ == "__main__":
    main()
