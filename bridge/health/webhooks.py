"""The two pushed sources: Flux's `generic-hmac` events and Argo CD notifications.

Owns authentication and parsing of `POST /hooks/flux` and `POST /hooks/argocd`
as pure functions, request in, `HookResult` out (an HTTP status, a one-line
message, and the observations the request makes), so the `--listen` server
calls them without this module knowing any server:

- the body size is checked first (> 1 MiB: 413; the server refuses a larger
  Content-Length before reading, this is the second line);
- then who sent it: Flux's `X-Signature: sha256=<hex HMAC-SHA256(secret, raw
  body)>`, or Argo CD's `Authorization: Bearer <token>`, both compared in
  constant time; missing or wrong: 401. Nothing is parsed before this;
- then the JSON, bounded in depth (bridge.untrusted): malformed: 400;
- anything accepted is 202 and changes at most the ObservationStore, through
  `deliver`, which drops duplicates and replays (200, so no sender retries).

Must not log or echo a body, a signature or a token: messages say what was
wrong, never with what.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from bridge.health.applications import Application, parse_application
from bridge.health.fluxevents import FluxEvent, parse_flux_event
from bridge.health.observations import ObservationStore
from bridge.health.rules import Observation, argocd_observations, flux_event_observation
from bridge.redaction import Redacted
from bridge.untrusted import UntrustedInput, parse_json

MAX_BODY = 1024 * 1024  # SPEC §8: larger requests get 413
FLUX_PATH = "/hooks/flux"
ARGOCD_PATH = "/hooks/argocd"
# The Kustomization annotation `event.toolkit.fluxcd.io/gitops-bridge-path`
# reaches us as this metadata key (Flux strips the prefix): the path of the
# Kustomization, which events do not otherwise carry.
FLUX_PATH_METADATA = "gitops-bridge-path"
# Likewise `event.toolkit.fluxcd.io/gitops-bridge-wait: "true"` on a
# Kustomization with `spec.wait: true`: its "Reconciliation finished" then
# means healthy. Without it the bridge learns that only from a health event,
# which Flux sends on a change, not after a restart of the bridge.
FLUX_WAIT_METADATA = "gitops-bridge-wait"


@dataclass(frozen=True)
class HookResult:
    status: int
    message: str
    observations: tuple[Observation, ...] = ()
    event: FluxEvent | Application | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    recorded: str = ""  # set by `deliver`: duplicate or stale

    @property
    def outcome(self) -> str:
        """A bounded label for /metrics: accepted, duplicate, stale, ignored,
        unauthorized, too_large, malformed."""
        if self.recorded:
            return self.recorded
        if self.status == 202:
            return "accepted" if self.observations else "ignored"
        return _OUTCOMES.get(self.status, "malformed")


_OUTCOMES = {200: "duplicate", 401: "unauthorized", 413: "too_large", 400: "malformed"}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _too_large(body: bytes) -> HookResult | None:
    if len(body) > MAX_BODY:
        return HookResult(413, f"request body over {MAX_BODY} bytes")
    return None


def _same_secret(given: bytes, expected: bytes) -> bool:
    # Digests first: compare_digest's time still depends on the lengths it is given.
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())


class FluxWebhook:
    """`POST /hooks/flux` from a notification-controller Provider of type
    `generic-hmac` whose secret holds `token: <the webhook secret>`."""

    def __init__(
        self,
        secret: Redacted,
        *,
        health_checked: Callable[[FluxEvent], bool] | None = None,
    ) -> None:
        if not secret:
            raise ValueError("the Flux webhook secret is empty")
        self._secret = secret
        self._health_checked = health_checked or (
            lambda event: event.metadata.get(FLUX_WAIT_METADATA) == "true"
        )

    def verify(self, headers: Mapping[str, str], body: bytes) -> HookResult | None:
        """None when the body is signed with our secret; else the 401 to send."""
        header = _header(headers, "X-Signature")
        if header is None:
            return HookResult(401, "unsigned request: X-Signature is missing")
        algorithm, _, given = header.strip().partition("=")
        # Only sha256: it is what generic-hmac sends, and accepting a weaker
        # algorithm because the sender named it would let a forger choose.
        if algorithm.lower() != "sha256" or len(given) != 64:
            return HookResult(401, "X-Signature is not `sha256=<64 hex digits>`")
        expected = hmac.new(self._secret.reveal().encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), given.lower().encode()):
            return HookResult(401, "bad signature")
        return None

    def handle(self, headers: Mapping[str, str], body: bytes) -> HookResult:
        refused = _too_large(body) or self.verify(headers, body)
        if refused is not None:
            return refused
        try:
            event = parse_flux_event(parse_json(body, source="Flux event", max_bytes=MAX_BODY))
        except UntrustedInput as e:
            return HookResult(400, str(e))
        path = event.metadata.get(FLUX_PATH_METADATA)
        observation = flux_event_observation(
            event, path=path, health_checked=self._health_checked(event)
        )
        if observation is None:
            what = f"{event.kind} {event.key} {event.reason or event.severity}"
            return HookResult(202, f"accepted; {what} says nothing about health", event=event)
        return HookResult(202, f"accepted: {event.kind} {event.key}", (observation,), event)


class ArgoCDNotificationsWebhook:
    """`POST /hooks/argocd` from the Argo CD notifications webhook service the
    README configures, with the body of ARGOCD_NOTIFICATIONS_BODY."""

    def __init__(self, token: Redacted, *, clock: Callable[[], datetime] | None = None) -> None:
        if not token:
            raise ValueError("the Argo CD notifications token is empty")
        self._token = token
        self._clock = clock or (lambda: datetime.now(UTC))

    def verify(self, headers: Mapping[str, str]) -> HookResult | None:
        header = _header(headers, "Authorization")
        challenge = {"WWW-Authenticate": 'Bearer realm="gitops-bridge"'}
        if header is None:
            return HookResult(401, "no Authorization header", headers=challenge)
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not _same_secret(
            given.strip().encode(), self._token.reveal().encode()
        ):
            return HookResult(401, "bad bearer token", headers=challenge)
        return None

    def handle(self, headers: Mapping[str, str], body: bytes) -> HookResult:
        refused = _too_large(body) or self.verify(headers)
        if refused is not None:
            return refused
        try:
            doc = parse_json(body, source="Argo CD notification", max_bytes=MAX_BODY)
            app = parse_application(doc, source="Argo CD notification")
        except UntrustedInput as e:
            return HookResult(400, str(e))
        observations = argocd_observations(app, source="argocd-notifications", now=self._clock())
        if not observations:
            return HookResult(
                202, f"accepted; Application {app.key} names no git folder and branch", event=app
            )
        return HookResult(202, f"accepted: Application {app.key}", tuple(observations), app)


def deliver(result: HookResult, store: ObservationStore) -> HookResult:
    """Record an accepted result's observations; a request that adds nothing
    new (a repeat, a replay of something older) becomes a 200 that says so."""
    if result.status != 202 or not result.observations:
        return result
    outcomes = [store.record(o) for o in result.observations]
    if "new" in outcomes:
        return result
    stale = "stale" in outcomes
    kind = "stale (older than what is known)" if stale else "duplicate"
    return replace(
        result,
        status=200,
        message=f"{kind}; nothing changed",
        recorded="stale" if stale else "duplicate",
    )


# --- Argo CD notifications: what the README tells users to configure ---------------

SERVICE = "gitops-bridge"
TRIGGER_SYNC = "on-gitops-bridge-sync"
TRIGGER_HEALTH = "on-gitops-bridge-health"
# Every value goes through `toJson`: a quote or newline in a message would
# otherwise break the JSON (argo-cd notifications' own advice). Only whole
# objects are taken, never a field of something that may be absent: in a Go
# template that is an error, and the notification would not be sent.
ARGOCD_NOTIFICATIONS_BODY = """{
  "metadata": {"name": {{toJson .app.metadata.name}}, "namespace": {{toJson .app.metadata.namespace}}},
  "spec": {"source": {{toJson .app.spec.source}}, "sources": {{toJson .app.spec.sources}}},
  "status": {
    "sync": {{toJson .app.status.sync}},
    "health": {{toJson .app.status.health}},
    "operationState": {{toJson .app.status.operationState}},
    "reconciledAt": {{toJson .app.status.reconciledAt}},
    "conditions": {{toJson .app.status.conditions}}
  }
}
"""


def argocd_notifications_config(
    url: str,
    *,
    secret_key: str = "gitops-bridge-token",  # noqa: S107 - a key name
) -> dict[str, str]:
    """The `argocd-notifications-cm` entries: the webhook service (bearer token
    from `argocd-notifications-secret` key `secret_key`), the template, and two
    triggers, each once per revision (and health state). Applications subscribe
    with the annotations of `subscription_annotations`."""
    import json

    service = (
        f"url: {json.dumps(url.rstrip('/'))}\n"
        "headers:\n"
        "- name: Authorization\n"
        f"  value: Bearer ${secret_key}\n"
        "- name: Content-Type\n"
        "  value: application/json\n"
    )
    body = "".join(f"      {line}\n" for line in ARGOCD_NOTIFICATIONS_BODY.splitlines())
    template = (
        f"webhook:\n  {SERVICE}:\n    method: POST\n    path: {ARGOCD_PATH}\n    body: |\n{body}"
    )
    sync = (
        "- description: a sync of a revision finished, well or not\n"
        "  when: app.status.operationState != nil and app.status.operationState.phase in "
        "['Succeeded', 'Failed', 'Error']\n"
        "  oncePer: app.status.operationState?.syncResult?.revision\n"
        f"  send: [{SERVICE}]\n"
    )
    health = (
        "- description: health settled (Healthy or Degraded) at the synced revision\n"
        "  when: app.status.health.status in ['Healthy', 'Degraded']\n"
        "  oncePer: app.status.sync.revision + '/' + app.status.health.status\n"
        f"  send: [{SERVICE}]\n"
    )
    return {
        f"service.webhook.{SERVICE}": service,
        f"template.{SERVICE}": template,
        f"trigger.{TRIGGER_SYNC}": sync,
        f"trigger.{TRIGGER_HEALTH}": health,
    }


def subscription_annotations() -> dict[str, str]:
    """Annotations that subscribe an Application to both triggers."""
    return {
        f"notifications.argoproj.io/subscribe.{trigger}.{SERVICE}": ""
        for trigger in (TRIGGER_SYNC, TRIGGER_HEALTH)
    }
