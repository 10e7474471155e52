"""Shared helpers for the renderer tests: cases, contexts and real kustomize builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bridge.config import GatewaySettings, RenderSettings
from bridge.formats import canonical_yaml
from bridge.models import Deployment, Listener, parse_deployment
from bridge.rendering import RenderContext
from bridge.rendering.naming import folder_name
from bridge.rendering.rendering import Rendered, render_deployment

CASES = Path(__file__).parent / "cases"
LISTENER = Listener(
    id="11111111-1111-4111-8111-111111111111",
    compute_id="prod-eu-1",
    namespaces=("agents", "agents-staging"),
)


def context(render: dict[str, Any] | None = None, provider: str = "sops") -> RenderContext:
    render = render or {}
    gateway = None
    if "gateway" in render:
        g = render["gateway"]
        gateway = GatewaySettings(
            name=g["name"],
            namespace=g["namespace"],
            hostname=g["hostname"],
            section_name=g.get("sectionName"),
            path_prefix=g.get("pathPrefix", "/"),
        )
    settings = RenderSettings(
        gateway=gateway, n_jobs_per_worker=int(render.get("nJobsPerWorker", 10))
    )
    return RenderContext(
        listener=LISTENER, cluster=LISTENER.compute_id, settings=settings, secrets_provider=provider
    )


def load_case(name: str) -> tuple[Deployment, RenderContext, dict[str, Any]]:
    doc = json.loads((CASES / name / "case.json").read_text())
    return parse_deployment(doc["deployment"]), context(doc.get("render")), doc


def render_case(name: str, password: str | None = "p" * 40) -> tuple[Deployment, Rendered, str]:
    from bridge.redaction import Redacted

    dep, ctx, _ = load_case(name)
    folder = folder_name(dep.name, dep.id)
    rendered = render_deployment(
        dep, ctx, name=folder, postgres_password=Redacted(password) if password else None
    )
    return dep, rendered, folder


def write_plain(rendered: Rendered, folder: Path) -> None:
    """The files as they would be written, with Secrets in plaintext (tests only, tmp dirs)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in rendered.files.items():
        (folder / name).write_bytes(data)
    for plan in rendered.secrets:
        (folder / plan.file).write_bytes(canonical_yaml.dump_bytes(plan.manifest()))
