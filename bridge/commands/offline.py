"""`gitops-bridge render`: one deployment from a JSON file to a folder, no network, no git."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bridge.config import RenderSettings, Settings
from bridge.errors import ConfigError, InvalidDeployment, SecretsError
from bridge.models import Listener, parse_deployment
from bridge.rendering import RenderContext
from bridge.rendering.naming import folder_name
from bridge.rendering.rendering import render_deployment, render_namespace_kustomization


def render_offline(
    text: str, out_dir: Path, *, settings: Settings | None, cluster: str | None
) -> Path:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--deployment is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError("--deployment must hold one Deployment object (a JSON object)")
    dep = parse_deployment(raw)
    namespace = dep.namespace or ""
    target = settings.target_for(namespace) if settings is not None else None
    cluster = cluster or (target.cluster if target is not None else None) or "local"
    listener = Listener(
        id=dep.listener_id or "00000000-0000-0000-0000-000000000000",
        compute_id=cluster,
        namespaces=(namespace,),
    )
    provider = settings.secrets.provider if settings is not None else "none"
    ctx = RenderContext(
        listener=listener,
        cluster=cluster,
        settings=settings.render if settings is not None else RenderSettings(),
        secrets_provider=provider,
    )
    name = folder_name(dep.name, dep.id)
    sealer = None
    password = None
    if settings is not None and provider != "none":
        from bridge.secrets.escrow import generate_password
        from bridge.secrets.providers import make_sealer

        sealer = make_sealer(settings.secrets)
        password = generate_password()
    if sealer is None and dep.secrets:
        raise SecretsError(
            f"has {len(dep.secrets)} secret(s) and no secrets provider is configured",
            deployment_id=dep.id,
            deployment_name=dep.name,
            hint="pass --config with secrets.provider sops or sealed-secrets; "
            "plaintext is never written",
        )
    rendered = render_deployment(dep, ctx, name=name, postgres_password=password)
    files = dict(rendered.files)
    for plan in rendered.secrets:
        assert sealer is not None
        files[plan.file] = sealer.seal(plan)
    ns_dir = out_dir / cluster / namespace
    folder = ns_dir / name
    if not str(folder.resolve()).startswith(str(out_dir.resolve()) + os.sep):
        raise InvalidDeployment(
            "would write outside --out", deployment_id=dep.id, deployment_name=dep.name
        )
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file() and old.name not in files:
            old.unlink()
    for fname, data in files.items():
        _write_atomic(folder / fname, data)
    siblings = sorted(
        p.name for p in ns_dir.iterdir() if p.is_dir() and (p / "kustomization.yaml").is_file()
    )
    _write_atomic(ns_dir / "kustomization.yaml", render_namespace_kustomization(siblings))
    return folder


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
