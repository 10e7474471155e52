"""What `bootstrap` adds so that Argo CD and Flux tell the bridge how its deployments fare.

Owns the consumer-side objects of the health read-back (SPEC §8):

- Flux: the annotations that make a Kustomization's events carry its path
  and say that it waits for health (`event.toolkit.fluxcd.io/gitops-bridge-*`,
  bridge.health.webhooks); one Kustomization per deployment folder with
  `wait: true` (`--layout deployment`: per-deployment health, and one
  deployment's failure no longer holds back the others of its namespace); and,
  with `--webhook-url`, the `generic-hmac` Provider and the Alert that send
  Kustomization events to `POST /hooks/flux`, with the Secret they reference
  by name only;
- Argo CD, with `--webhook-url`: the `argocd-notifications-cm` entries
  (webhook service, template, triggers) for `POST /hooks/argocd`, and the
  annotations that subscribe the bridge's Applications to them.

Never a secret value: the HMAC secret and the bearer token are created by the
operator (README "Health"). Pure, except `deployment_folders_from_git`, which
reads the folders of `--layout deployment` from each target's branch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from bridge.commands.consumernames import (
    ARGOCD_NAMESPACE,
    FLUX_NAMESPACE,
    PART_OF,
    ResolvedTarget,
    flux_deployment_name,
)
from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.health.webhooks import (
    ARGOCD_PATH,
    FLUX_PATH,
    FLUX_PATH_METADATA,
    FLUX_WAIT_METADATA,
    argocd_notifications_config,
    subscription_annotations,
)

# Flux strips this prefix from annotations when it puts them in event metadata.
EVENT_ANNOTATION_PREFIX = "event.toolkit.fluxcd.io/"
WEBHOOK_SECRET = "gitops-bridge-webhook"  # noqa: S105 - a Secret name: `token` = the HMAC key
NOTIFICATIONS_SECRET_KEY = "gitops-bridge-token"  # noqa: S105 - a key name in argocd-notifications-secret
PROVIDER_NAME = ALERT_NAME = "gitops-bridge"
NOTIFICATION_API = "notification.toolkit.fluxcd.io/v1beta3"
DEPLOYMENT_ID_LABEL = "langsmith.com/deployment-id"


def webhook_base(url: str | None) -> str | None:
    """`--webhook-url`: the bridge's `--listen` address as the cluster reaches it
    (`http(s)://host[:port]`, no path, user, query or fragment); None: not asked for."""
    if url is None:
        return None
    parts = urlsplit(url.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.query
        or parts.fragment
        or parts.path.strip("/")
    ):
        raise ConfigError(
            f"--webhook-url has value {url!r}; allowed: the bridge's address as the cluster "
            "reaches it, e.g. http://gitops-bridge.gitops-bridge.svc:9090 (no path: "
            f"{FLUX_PATH} and {ARGOCD_PATH} are added)"
        )
    return f"{parts.scheme}://{parts.netloc}"


def flux_event_annotations(path: str) -> dict[str, str]:
    """A Kustomization's annotations for bridge.health.webhooks: its path (events
    carry none) and that it waits for health (`spec.wait: true`)."""
    return {
        EVENT_ANNOTATION_PREFIX + FLUX_PATH_METADATA: path.removeprefix("./"),
        EVENT_ANNOTATION_PREFIX + FLUX_WAIT_METADATA: "true",
    }


def flux_deployment_kustomizations(
    namespace_kustomization: Mapping[str, Any],
    rt: ResolvedTarget,
    folders: Sequence[tuple[str, str]],
) -> list[dict[str, Any]]:
    """One Kustomization per deployment folder (name, deployment id), each the
    namespace one's spec with the folder's path: `wait: true` makes its Ready
    mean healthy, and one folder's failure no longer blocks the rest."""
    out = []
    for folder, deployment_id in sorted(folders):
        path = f"./{rt.ns_dir}/{folder}"
        meta = namespace_kustomization["metadata"]
        out.append(
            {
                **namespace_kustomization,
                "metadata": {
                    **meta,
                    "annotations": flux_event_annotations(path),
                    "labels": {**meta["labels"], DEPLOYMENT_ID_LABEL: deployment_id},
                    "name": flux_deployment_name(rt.cluster, rt.namespace, folder),
                },
                "spec": {**namespace_kustomization["spec"], "path": path, "wait": True},
            }
        )
    return out


def _notification_metadata(name: str) -> dict[str, Any]:
    return {
        "labels": {"app.kubernetes.io/part-of": PART_OF},
        "name": name,
        "namespace": FLUX_NAMESPACE,
    }


def flux_provider(base: str) -> dict[str, Any]:
    """notification-controller's `generic-hmac` Provider: it signs each event
    with the Secret's `token` (`X-Signature: sha256=...`), which the bridge
    checks before it reads anything (health.flux.webhookSecretEnv)."""
    return {
        "apiVersion": NOTIFICATION_API,
        "kind": "Provider",
        "metadata": _notification_metadata(PROVIDER_NAME),
        "spec": {
            "address": base + FLUX_PATH,
            "secretRef": {"name": WEBHOOK_SECRET},
            "type": "generic-hmac",
        },
    }


def flux_alert() -> dict[str, Any]:
    """Every event (info included: "Reconciliation finished" is how the bridge
    learns a revision was applied) of the bridge's Kustomizations."""
    return {
        "apiVersion": NOTIFICATION_API,
        "kind": "Alert",
        "metadata": _notification_metadata(ALERT_NAME),
        "spec": {
            "eventSeverity": "info",
            "eventSources": [
                {
                    "kind": "Kustomization",
                    "matchLabels": {"app.kubernetes.io/part-of": PART_OF},
                    "name": "*",
                    "namespace": FLUX_NAMESPACE,
                }
            ],
            "providerRef": {"name": PROVIDER_NAME},
        },
    }


def argocd_notifications_configmap(base: str) -> dict[str, Any]:
    """The entries to merge into `argocd-notifications-cm`: the webhook service
    (its bearer token from `argocd-notifications-secret`), the template whose
    every field goes through `toJson`, and the two triggers."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "labels": {"app.kubernetes.io/part-of": "argocd"},
            "name": "argocd-notifications-cm",
            "namespace": ARGOCD_NAMESPACE,
        },
        "data": argocd_notifications_config(base, secret_key=NOTIFICATIONS_SECRET_KEY),
    }


def argocd_subscriptions() -> dict[str, str]:
    """Annotations of each Application: subscribed to both triggers."""
    return subscription_annotations()


def deployment_folders_from_git(
    settings: Settings, targets: Sequence[ResolvedTarget]
) -> dict[int, list[tuple[str, str]]]:
    """Per target (by index): (folder name, deployment id) of every deployment
    folder on its branch, read through the bridge's clone cache (a fetch;
    nothing is written to the remote)."""
    from bridge.commands.healthreading import StateCache, deployment_folders
    from bridge.publishing.lineage import CloneLineage
    from bridge.publishing.repo import TargetRepo

    out: dict[int, list[tuple[str, str]]] = {}
    states = StateCache()
    for rt in targets:
        with TargetRepo(rt.target, settings.git) as repo:
            head = repo.sync()
            found = (
                deployment_folders(rt.target, CloneLineage(repo.clone), head, states)
                if head
                else []
            )
        out[rt.index] = [
            (f.folder.rsplit("/", 1)[-1], f.deployment_id)
            for f, _name in found
            if f.folder.rsplit("/", 1)[0] == rt.ns_dir
        ]
    return out
