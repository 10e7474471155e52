"""`gitops-bridge demo`: the whole product on this machine, with no configuration.

Starts the local control plane on a free loopback port, creates a listener
(cluster `demo-cluster`, namespaces `agents` and `agents-staging`) and three
deployments (one with secrets, one autoscaled), bare git remotes and an age
key under the demo folder, runs a cycle, then changes one deployment's image
and deletes another and runs again. Everything stays in the demo folder for
the user to inspect. Keys live in `<demo>/keys/`, outside every repo.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bridge.commands.run import summarize
from bridge.commands.statusfile import write_status
from bridge.commands.wiring import make_reconciler
from bridge.config import load_settings
from bridge.formats.canonical_yaml import dumps
from bridge.observability.display import escape
from bridge.observability.logs import register_secret
from bridge.privatefiles import write_private

MARKER = ".gitops-bridge-demo"
NAMESPACES = ("agents", "agents-staging")


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout


def _prepare_dir(directory: Path) -> None:
    if directory.exists():
        if not (directory / MARKER).is_file():
            raise click.ClickException(
                f"{directory} exists and was not made by the demo; pick another --dir"
            )
        shutil.rmtree(directory)
    (directory / "keys").mkdir(parents=True, mode=0o700)
    (directory / "remotes").mkdir()
    (directory / MARKER).write_text("made by `gitops-bridge demo`; safe to delete\n")


@dataclass(frozen=True)
class _Keys:
    """What the demo generates: kept in `<dir>/keys`, outside every repo, 0600."""

    age_key: Path
    recipient: str
    api_key: str
    bridge_key: str
    env_file: Path


def run_demo(directory: Path) -> int:
    from bridge.controlplane.admin import AdminClient
    from bridge.localplane.server import start_in_thread

    started = time.monotonic()
    directory = directory.resolve()
    _prepare_dir(directory)
    keys = _make_keys(directory / "keys")
    server = start_in_thread(db=directory / "control-plane.db", api_key=keys.api_key)
    try:
        with AdminClient.connect(server.url, keys.api_key) as admin:
            listener_id = admin.create_listener("demo-cluster", list(NAMESPACES))["id"]
            support, research = _create_deployments(admin, listener_id)
            config_file = _write_config(directory, server.url, listener_id, keys.recipient)
            env = {
                **os.environ,
                "LANGSMITH_API_KEY": keys.api_key,
                "GITOPS_BRIDGE_KEY": keys.bridge_key,
            }
            settings = load_settings(config_file, env=env)
            code = _run_cycles(settings, admin, support["id"], research["id"])
    finally:
        server.stop()
    _show(directory, keys, config_file, port=server.url.rsplit(":", 1)[1])
    click.echo(f"\ndemo finished in {time.monotonic() - started:.1f}s")
    return code


def _make_keys(keys: Path) -> _Keys:
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    age_key = keys / "age.agekey"
    write_private(age_key, f"# public key: {recipient}\n{identity}\n".encode())
    api_key = "lsv2_demo_" + secrets.token_urlsafe(24)
    bridge_key = secrets.token_hex(32)
    for value in (api_key, bridge_key, str(identity)):
        register_secret(value)
    env_file = keys / "demo.env"
    write_private(
        env_file,
        f"export LANGSMITH_API_KEY={api_key}\nexport GITOPS_BRIDGE_KEY={bridge_key}\n"
        f"export SOPS_AGE_KEY_FILE={age_key}\n".encode(),
    )
    return _Keys(age_key, recipient, api_key, bridge_key, env_file)


def _create_deployments(admin: Any, listener_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Three deployments: support-agent with secrets, research-agent autoscaled,
    triage-agent in the other namespace. (support, research)."""
    from bridge.controlplane.admin import deployment_request

    support = admin.create_deployment(
        deployment_request(
            "support-agent",
            listener_id,
            "agents",
            "registry.example.com/acme/support-agent:1.4.2",
            secrets=[
                {"name": "OPENAI_API_KEY", "value": "sk-demo-" + secrets.token_hex(16)},
                {"name": "ZENDESK_TOKEN", "value": "zd-demo-" + secrets.token_hex(16)},
            ],
        )
    )
    research = admin.create_deployment(
        deployment_request(
            "research-agent",
            listener_id,
            "agents",
            "registry.example.com/acme/research-agent:2.0.0",
            resource_spec={"min_scale": 1, "max_scale": 5, "cpu": 2, "memory_mb": 2048},
        )
    )
    admin.create_deployment(
        deployment_request(
            "triage-agent",
            listener_id,
            "agents-staging",
            "registry.example.com/acme/triage-agent:0.9.0",
        )
    )
    return support, research


def _write_config(directory: Path, url: str, listener_id: str, recipient: str) -> Path:
    """Bare remotes per namespace and the bridge.yaml that uses them."""
    for namespace in NAMESPACES:
        _git("init", "-q", "--bare", "-b", "main", str(directory / "remotes" / f"{namespace}.git"))
    config = {
        "controlPlane": {
            "url": url,
            "apiKeyEnv": "LANGSMITH_API_KEY",
            "listenerId": listener_id,
            "pollInterval": 15,
        },
        "targets": [
            {
                "namespace": namespace,
                "repo": (directory / "remotes" / f"{namespace}.git").as_uri(),
                "branch": "main",
            }
            for namespace in NAMESPACES
        ],
        "git": {
            "authorName": "LangSmith GitOps Bridge (demo)",
            "authorEmail": "gitops-bridge@demo.invalid",
            "workdir": str(directory / "workdir"),
        },
        "secrets": {
            "provider": "sops",
            "bridgeKeyEnv": "GITOPS_BRIDGE_KEY",
            "sops": {"ageRecipients": [recipient]},
        },
    }
    config_file = directory / "bridge.yaml"
    config_file.write_text(dumps(config))
    return config_file


def _run_cycles(settings: Any, admin: Any, support_id: str, research_id: str) -> int:
    click.secho("== cycle 1: three new deployments", bold=True)
    code = _cycle(settings)
    click.secho(
        "\n== control plane: new image for support-agent, research-agent deleted", bold=True
    )
    admin.patch_deployment(
        support_id,
        {"source_revision_config": {"image_uri": "registry.example.com/acme/support-agent:1.5.0"}},
    )
    admin.delete_deployment(research_id)
    click.secho("== cycle 2", bold=True)
    code = max(code, _cycle(settings))
    click.secho("== cycle 3 (nothing changed: no commit, no push)", bold=True)
    return max(code, _cycle(settings))


def _show(directory: Path, keys: _Keys, config_file: Path, *, port: str) -> None:
    """git log, the files, and what to look at next."""
    for namespace in NAMESPACES:
        remote = directory / "remotes" / f"{namespace}.git"
        click.secho(f"\n== git log of {remote}", bold=True)
        click.echo(
            _git(
                "log",
                "--format=%h %an%n    %s%n    %(trailers:separator=%x0a    ,unfold)%n",
                cwd=remote,
            ).rstrip()
        )
        click.secho(f"\n== files in {remote} (main)", bold=True)
        click.echo(_git("ls-tree", "-r", "--name-only", "main", cwd=remote).rstrip())
    kubectl = Path(sys.prefix) / "bin" / "kubectl"
    clone = directory / "checkout"
    _git("clone", "-q", (directory / "remotes" / "agents.git").as_uri(), str(clone))
    click.secho("\n== what to look at next", bold=True)
    click.echo(
        f"""  manifests of one deployment:   {kubectl} kustomize {clone}/demo-cluster/agents/support-agent
  the whole namespace:           {kubectl} kustomize {clone}/demo-cluster/agents
  decrypt its secrets:           SOPS_AGE_KEY_FILE={keys.age_key} sops --decrypt {clone}/demo-cluster/agents/support-agent/secret-env.yaml
  run the bridge yourself:       . {keys.env_file} && gitops-bridge run --config {config_file}
  (the control plane is stopped; restart it with
   gitops-bridge control-plane serve --db {directory / "control-plane.db"} --port {port} --api-key $LANGSMITH_API_KEY)
  everything is in {directory} (keys in {keys.age_key.parent}, outside every repo)"""
    )


def _cycle(settings: Any) -> int:
    reconciler, close = make_reconciler(settings)
    try:
        report = reconciler.run_cycle()
    finally:
        close()
    write_status(settings, report, time.time())
    for o in sorted(report.outcomes, key=lambda o: (o.namespace, o.name)):
        line = f"  {o.namespace}/{o.name}: {o.action}"
        if o.commit:
            line += f" ({o.commit[:12]})"
        if o.error:
            line += f" - {o.error}"
        click.echo(escape(line))
    click.echo("  " + summarize(report))
    return report.exit_code()
