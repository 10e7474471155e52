"""The command line (SPEC §3): a thin click layer.

Exit codes and user-facing errors are decided here and only here: commands
raise `BridgeError`s and `main` maps them (0 ok, 1 some deployments failed,
2 usage/config, 3 control plane, 4 git). Every option also reads `BRIDGE_*`
from the environment (`auto_envvar_prefix`).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

import click

from bridge import __version__, logs
from bridge.config import Settings, load_settings
from bridge.errors import BridgeError

log = logging.getLogger("bridge.cli")

CONFIG_OPTION = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Configuration file (default: $BRIDGE_CONFIG or ./bridge.yaml).",
)


class ExitCode(Exception):
    """Raised by a command to end with a given exit code after printing its result."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def load(config_file: Path | None, *, require_api_key: bool = True) -> Settings:
    settings = load_settings(config_file, require_api_key=require_api_key)
    logs.register_secret(settings.control_plane.api_key)
    logs.register_secret(settings.secrets.bridge_key)
    for target in settings.targets:
        logs.register_secret(target.https.password)
    logs.register_secret(settings.git.https.password)
    return settings


@click.group(
    context_settings={"auto_envvar_prefix": "BRIDGE", "help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="gitops-bridge")
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, log_format: str, log_level: str, quiet: bool) -> None:
    """langsmith-gitops-bridge: a LangSmith listener that commits to git instead of applying."""
    logs.setup(log_format, "warning" if quiet and log_level == "info" else log_level)
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    ctx.obj["log_format"] = log_format


@cli.command()
@CONFIG_OPTION
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def deployments(config_file: Path | None, output: str) -> None:
    """What the listener would manage: name, id, namespace, image, revision."""
    from bridge.controlplane.client import ControlPlaneClient

    settings = load(config_file)
    with ControlPlaneClient.from_settings(settings.control_plane) as client:
        listing = client.list_listener_deployments()
    rows = [
        {
            "name": d.name,
            "id": d.id,
            "namespace": d.namespace,
            "image": d.image_uri,
            "revision": d.revision_id,
            "status": d.status,
        }
        for d in sorted(listing.deployments, key=lambda d: (d.namespace or "", d.name, d.id))
    ]
    for error in listing.invalid:
        log.error(
            "%s", error, extra=logs.deployment_extra(error.deployment_name, error.deployment_id)
        )
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "listener": {
                        "id": listing.listener.id,
                        "computeId": listing.listener.compute_id,
                        "namespaces": list(listing.listener.namespaces),
                    },
                    "deployments": rows,
                    "invalid": [
                        {"id": e.deployment_id, "name": e.deployment_name, "error": e.message}
                        for e in listing.invalid
                    ],
                },
                indent=2,
                sort_keys=True,
            )
        )
    else:
        headers = ["NAME", "ID", "NAMESPACE", "IMAGE", "REVISION"]
        table = [headers] + [
            [r["name"], r["id"], r["namespace"] or "-", r["image"] or "-", r["revision"] or "-"]
            for r in rows
        ]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(headers))]
        for row in table:
            click.echo(
                "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )
        click.echo(
            f"\nlistener {listing.listener.id} (cluster {listing.listener.compute_id}): "
            f"{len(rows)} deployment(s)"
            + (f", {len(listing.invalid)} malformed and skipped" if listing.invalid else "")
        )
    if listing.invalid:
        raise ExitCode(1)


@cli.group("control-plane")
def control_plane() -> None:
    """The local control plane (the documented /v2 subset, SQLite-backed)."""


@control_plane.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8124, show_default=True)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("control-plane.db"),
    show_default=True,
)
@click.option(
    "--api-key",
    envvar="BRIDGE_CONTROL_PLANE_API_KEY",
    default=None,
    help="Key clients must send as X-Api-Key (default: $BRIDGE_CONTROL_PLANE_API_KEY; "
    "without one, a random key is printed at start).",
)
def control_plane_serve(host: str, port: int, db: Path, api_key: str | None) -> None:
    """Serve the local control plane until interrupted."""
    from bridge.controlplane.server import serve

    serve(host=host, port=port, db=db, api_key=api_key)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: run the CLI and map every BridgeError to its exit code."""
    code = 0
    try:
        cli.main(args=argv, prog_name="gitops-bridge", standalone_mode=False)
    except ExitCode as e:
        code = e.code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        code = 130
    except click.ClickException as e:
        e.show()
        code = 2
    except click.exceptions.Exit as e:
        code = e.exit_code
    except BridgeError as e:
        click.echo(f"error: {e}", err=True)
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
