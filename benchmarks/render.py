"""Render benchmark: prints JSON figures for rendering N deployments in-process
(no validation, no secrets sealing) and for validating them with aggregate
`kubectl kustomize` builds + schema checks, in parallel across cores.

    python benchmarks/render.py --n 1000
    python benchmarks/render.py --n 200 --no-validate

Targets (issue 3): render <= 2 ms per deployment; validation of 1,000 roots
<= 15 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from bridge import canonical_yaml
    from bridge.config import RenderSettings
    from bridge.models import Listener, parse_deployment
    from bridge.redaction import Redacted
    from bridge.rendering import RenderContext
    from bridge.rendering.naming import folder_names
    from bridge.rendering.rendering import render_deployment
    from bridge.rendering.validation import validate_roots
    from bridge.schemas import default_schema_dir
    from bridge.state import STATE_FILE

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args()

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
            started = time.perf_counter()
            result = validate_roots(root, folders, schema_dir=default_schema_dir())
            validate_s = time.perf_counter() - started
        figures["validate_total_s"] = round(validate_s, 3)
        figures["validate_ms_per_deployment"] = round(validate_s * 1000 / args.n, 3)
        figures["invalid_roots"] = sum(1 for e in result.values() if e)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
