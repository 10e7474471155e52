"""A target repo tree exactly as the bridge writes it (SPEC §5), for the example tests.

`build_tree` runs the real reconciler (`bridge.reconcile.cycle.Reconciler`) with
the real git writer (`bridge.publishing.repo.TargetRepo`) against a bare
remote made for the call, with the real secrets provider (the sops binary for
an age recipient, or Sealed Secrets for a controller certificate). Only the
listing is handed in directly instead of coming over HTTP from a control
plane. The committed tree is then exported (without `.git`) under `root`, so
the tests look at the very bytes the bridge pushed: README.md, the namespace
kustomization, each deployment's Kustomize root with its encrypted Secrets and
the `.gitops-bridge.state` metadata file.

What the bridge is *meant* to produce is stated here independently of the
renderer (`intended_objects`), with the Argo CD sync wave each object should
carry, so a test can tell an extra, a missing or a mis-ordered object apart.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml

from bridge.config import Settings, Target, load_settings
from bridge.formats.state import STATE_FILE, DeploymentState
from bridge.models import Deployment, Listener, parse_deployment
from bridge.reconcile.cycle import Reconciler
from bridge.reconcile.plans import Publisher
from bridge.reconcile.sealing import ESCROW_POSTGRES
from bridge.redaction import Redacted
from bridge.secrets.escrow import open_escrow

ObjectId = tuple[str, str, str, str]  # apiVersion, kind, namespace, name
MANAGED_BY = "langsmith-gitops-bridge"
LISTENER_ID = "12345678-0000-0000-0000-000000000000"  # as in support.base_config()
BRIDGE_KEY = "fixture-bridge-key-" + "k" * 32  # test-only
IMAGE = "registry.example.com/agents/support:1.4.2"
# The Argo CD sync waves the renderer emits (examples/argocd/README.md).
WAVE_SECRETS = "-2"
WAVE_DATA = "-1"
WAVE_APP = "0"
WAVE_EDGE = "1"
SYNC_WAVE = "argocd.argoproj.io/sync-wave"


@dataclass(frozen=True)
class FixtureDeployment:
    name: str
    id: str
    autoscaled: bool = True  # min 2 / max 10: KEDA ScaledObjects and PDBs
    secrets: bool = True  # has secrets[] (a `<name>-env` Secret besides Postgres')


@dataclass(frozen=True)
class SecretsProvider:
    """How the tree's Secrets are encrypted: sops for an age recipient, or Sealed Secrets."""

    provider: Literal["sops", "sealed-secrets"]
    age_recipient: str | None = None
    cert_file: Path | None = None

    def config(self) -> dict[str, Any]:
        if self.provider == "sops":
            return {"provider": "sops", "sops": {"ageRecipients": [self.age_recipient]}}
        return {"provider": "sealed-secrets", "sealedSecrets": {"certFile": str(self.cert_file)}}


@dataclass
class Tree:
    root: Path
    ns_dir: str
    namespace: str
    objects: dict[str, set[ObjectId]] = field(default_factory=dict)  # folder -> intended
    waves: dict[ObjectId, str] = field(default_factory=dict)  # intended sync wave
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # Secret name -> plaintext

    def folder(self, name: str) -> Path:
        return self.root / self.ns_dir / name

    @property
    def all_objects(self) -> set[ObjectId]:
        return set().union(*self.objects.values()) if self.objects else set()


def secret_values(dep: FixtureDeployment) -> dict[str, str]:
    """The `secrets[]` of a fixture deployment (test-only values)."""
    if not dep.secrets:
        return {}
    return {"OPENAI_API_KEY": f"sk-fixture-{dep.name}", "WEBHOOK_TOKEN": f"wh-{dep.id[-6:]}"}


def raw_deployment(dep: FixtureDeployment, namespace: str) -> dict[str, Any]:
    """The control plane's JSON for a fixture deployment."""
    spec = {"min_scale": 2, "max_scale": 10} if dep.autoscaled else {"min_scale": 1, "max_scale": 1}
    return {
        "id": dep.id,
        "name": dep.name,
        "source": "external_docker",
        "status": "READY",
        "latest_revision_id": "0f0e0d0c-0000-4000-8000-" + dep.id[-12:],
        "source_config": {
            "listener_id": LISTENER_ID,
            "listener_config": {"k8s_namespace": namespace},
            "resource_spec": spec,
        },
        "source_revision_config": {"image_uri": IMAGE},
        "secrets": [{"name": k, "value": v} for k, v in secret_values(dep).items()],
    }


def intended_objects(
    dep: FixtureDeployment, namespace: str, provider: str, gateway: bool
) -> dict[ObjectId, str]:
    """Every object the bridge means to create for `dep`, with its sync wave."""
    n, ns = dep.name, namespace
    secret = ("v1", "Secret") if provider == "sops" else ("bitnami.com/v1alpha1", "SealedSecret")
    out: dict[ObjectId, str] = {
        (*secret, ns, f"{n}-postgres"): WAVE_SECRETS,
        ("apps/v1", "StatefulSet", ns, f"{n}-postgres"): WAVE_DATA,
        ("v1", "Service", ns, f"{n}-postgres"): WAVE_DATA,
        ("apps/v1", "Deployment", ns, f"{n}-redis"): WAVE_DATA,
        ("v1", "Service", ns, f"{n}-redis"): WAVE_DATA,
        ("apps/v1", "Deployment", ns, n): WAVE_APP,
        ("v1", "Service", ns, n): WAVE_APP,
        ("apps/v1", "Deployment", ns, f"{n}-queue"): WAVE_APP,
    }
    if dep.secrets:
        out[(*secret, ns, f"{n}-env")] = WAVE_SECRETS
    if dep.autoscaled:
        for name in (n, f"{n}-queue"):
            out[("keda.sh/v1alpha1", "ScaledObject", ns, name)] = WAVE_EDGE
            out[("policy/v1", "PodDisruptionBudget", ns, name)] = WAVE_EDGE
    if gateway:
        out[("gateway.networking.k8s.io/v1", "HTTPRoute", ns, n)] = WAVE_EDGE
    return out


def _git(*args: str, cwd: Path | None = None) -> bytes:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        check=True,
        timeout=60,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"},
    ).stdout


def _settings(
    scratch: Path,
    remote: Path,
    *,
    path: str,
    cluster: str,
    namespace: str,
    secrets: SecretsProvider,
    gateway: tuple[str, str] | None,
) -> Settings:
    config: dict[str, Any] = {
        "controlPlane": {"listenerId": LISTENER_ID},
        "targets": [
            {
                "namespace": namespace,
                "repo": remote.as_uri(),
                "branch": "main",
                "path": path,
                "cluster": cluster,
            }
        ],
        "git": {
            "authorName": "Fixture Bridge",
            "authorEmail": "bridge@example.com",
            "workdir": str(scratch / "workdir"),
        },
        "secrets": secrets.config(),
    }
    if gateway is not None:
        config["render"] = {
            "gateway": {
                "name": gateway[0],
                "namespace": gateway[1],
                "hostname": "{name}.agents.example.com",
            }
        }
    file = scratch / "bridge.yaml"
    file.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_settings(file, env={"GITOPS_BRIDGE_KEY": BRIDGE_KEY}, require_api_key=False)


def build_tree(
    root: Path,
    *,
    path: str,
    cluster: str,
    namespace: str,
    deployments: Sequence[FixtureDeployment],
    secrets: SecretsProvider,
    gateway: tuple[str, str] | None = ("public", "gateways"),
) -> Tree:
    """Run the bridge for one target and export what it pushed under `root`.

    Returns the objects each deployment folder is meant to yield, their waves and
    the plaintext of every Secret (the Postgres password read back from the escrow).
    """
    from bridge.publishing.publisher import BranchPublisher
    from bridge.publishing.repo import TargetRepo

    ns_dir = str(PurePosixPath(path or ".", cluster, namespace))
    tree = Tree(root=root, ns_dir=ns_dir, namespace=namespace)
    listener = Listener(id=LISTENER_ID, compute_id=cluster, namespaces=(namespace,))
    parsed: list[Deployment] = [parse_deployment(raw_deployment(d, namespace)) for d in deployments]
    with tempfile.TemporaryDirectory(prefix="repo-tree-") as tmp:
        scratch = Path(tmp)
        remote = scratch / "remote.git"
        _git("init", "-q", "--bare", "-b", "main", str(remote))
        settings = _settings(
            scratch,
            remote,
            path=path,
            cluster=cluster,
            namespace=namespace,
            secrets=secrets,
            gateway=gateway,
        )

        def open_publisher(target: Target) -> Publisher:
            return BranchPublisher(TargetRepo(target, settings.git))

        reconciler = Reconciler(
            settings,
            list_deployments=lambda: (listener, parsed, []),
            open_publisher=open_publisher,
        )
        report = reconciler.run_cycle()
        assert report.exit_code() == 0, [o.error for o in report.outcomes]
        archive = _git("archive", "--format=tar", "main", cwd=remote)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")

    for dep in deployments:
        intended = intended_objects(dep, namespace, secrets.provider, gateway is not None)
        tree.objects[dep.name] = set(intended)
        tree.waves.update(intended)
        state = DeploymentState.from_bytes((tree.folder(dep.name) / STATE_FILE).read_bytes())
        assert state.deployment_id == dep.id
        if dep.secrets:
            tree.secrets[f"{dep.name}-env"] = secret_values(dep)
        token = state.escrow[ESCROW_POSTGRES]
        password = open_escrow(Redacted(BRIDGE_KEY), f"{ESCROW_POSTGRES}:{dep.id}", token).reveal()
        uri = f"postgres://postgres:{password}@{dep.name}-postgres:5432/postgres?sslmode=disable"
        tree.secrets[f"{dep.name}-postgres"] = {
            "DATABASE_URI": uri,
            "POSTGRES_PASSWORD": password,
            "POSTGRES_URI": uri,
        }
    return tree
