"""The pushed sources: Flux `generic-hmac` events and Argo CD notifications.

Every hostile request is refused before anything is parsed and changes
nothing; every honest one is kept, even when no deployment claims it yet.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.health.assessing import assess
from bridge.health.folders import DeploymentFolder
from bridge.health.observations import ObservationStore
from bridge.health.webhooks import (
    ARGOCD_NOTIFICATIONS_BODY,
    FLUX_PATH_METADATA,
    FLUX_WAIT_METADATA,
    MAX_BODY,
    ArgoCDNotificationsWebhook,
    FluxWebhook,
    HookResult,
    argocd_notifications_config,
    deliver,
    subscription_annotations,
)
from bridge.redaction import Redacted
from tests.gitservers import git
from tests.health.support import CONSUMERS, GitTreeReader, application, commit_files

pytestmark = pytest.mark.quick

# The known-answer vector of notification-controller's forwarder_test.go, as
# ../shared/reference/consumers/README.md gives it (repeated here so that a
# fresh clone checks it too; the test below also reads it from there).
VECTOR_KEY = "7152fed34dd6149a7c75a276c510da27cb6f82b0"
VECTOR_BODY = (
    '{"involvedObject":{"kind":"GitRepository","namespace":"gitops-system","name":"webapp"},'
    '"severity":"info","timestamp":"2022-09-30T06:40:29Z","message":"message","reason":"reason",'
    '"metadata":{"test":"metadata"},"reportingController":"source-controller",'
    '"reportingInstance":"source-controller-xyz"}'
)
VECTOR_SIGNATURE = "sha256=65b018549b1254e7226d1c08f9567ee45bc9de0fc4e7b1a40253f9a018b08be7"
SECRET = "s3cret-flux-webhook-token-0123456789"
REMOTE = "https://git.example.com/platform/prod-agents.git"


def signed(body: bytes, key: str = SECRET) -> dict[str, str]:
    digest = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return {"x-signature": f"sha256={digest}", "content-type": "application/json"}


def flux_body(
    sha: str,
    *,
    reason: str = "ReconciliationSucceeded",
    severity: str = "info",
    when: str = "2026-05-01T10:00:00Z",
    message: str = "Reconciliation finished in 1.2s, next run in 10m0s",
    name: str = "agents-a",
    path: str | None = "prod/agents/a",
) -> bytes:
    metadata = {"revision": f"main@sha1:{sha}", "token": "9b2c"}
    if path is not None:
        metadata[FLUX_PATH_METADATA] = path
    doc = {
        "involvedObject": {
            "kind": "Kustomization",
            "namespace": "flux-system",
            "name": name,
            "uid": "7a1f",
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "resourceVersion": "42",
        },
        "severity": severity,
        "timestamp": when,
        "message": message,
        "reason": reason,
        "metadata": metadata,
        "reportingController": "kustomize-controller",
        "reportingInstance": "kustomize-controller-7d9",
    }
    return json.dumps(doc).encode()


# --- Flux: authentication first --------------------------------------------------------


def test_the_known_answer_vector_verifies() -> None:
    hook = FluxWebhook(Redacted(VECTOR_KEY))
    assert hook.verify({"X-Signature": VECTOR_SIGNATURE}, VECTOR_BODY.encode()) is None
    result = hook.handle({"X-Signature": VECTOR_SIGNATURE}, VECTOR_BODY.encode())
    # Verified and parsed; a GitRepository event says nothing about a deployment.
    assert result.status == 202 and result.observations == () and result.outcome == "ignored"
    readme = CONSUMERS / "README.md"
    if readme.is_file():  # the same vector as the reference gives it, where ../shared is
        text = readme.read_text()
        assert VECTOR_KEY in text and VECTOR_SIGNATURE in text and VECTOR_BODY in text


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "unsigned"),
        ({"X-Signature": "sha256=" + "0" * 64}, "bad signature"),
        ({"X-Signature": "sha1=" + "0" * 40}, "not `sha256="),
        ({"X-Signature": "sha256=abc"}, "not `sha256="),
        ({"Authorization": "Bearer " + VECTOR_KEY}, "unsigned"),
    ],
)
def test_unsigned_or_badly_signed_is_401_before_parsing(headers: dict[str, str], why: str) -> None:
    hook = FluxWebhook(Redacted(VECTOR_KEY))
    result = hook.handle(headers, VECTOR_BODY.encode())
    assert result.status == 401 and why in result.message and result.event is None
    # Not even a body that is not JSON gets further than the signature.
    assert hook.handle(headers, b"\x00{not json").status == 401


def test_a_signature_of_another_key_or_body_is_refused() -> None:
    hook = FluxWebhook(Redacted(SECRET))
    body = flux_body("a" * 40)
    assert hook.handle(signed(body, key=SECRET + "x"), body).status == 401
    assert hook.handle(signed(body), body + b" ").status == 401
    # Header names are case-insensitive; the hex digits too.
    good = signed(body)["x-signature"]
    assert (
        hook.handle({"X-SIGNATURE": good.upper().replace("SHA256", "sha256")}, body).status == 202
    )


def test_oversized_is_413_without_hashing_and_malformed_is_400() -> None:
    hook = FluxWebhook(Redacted(SECRET))
    huge = b"{" + b" " * (10 * 1024 * 1024) + b"}"
    result = hook.handle(signed(huge), huge)
    assert result.status == 413 and result.outcome == "too_large"
    exactly = b" " * (MAX_BODY - 2) + b"{}"
    assert hook.handle(signed(exactly), exactly).status == 400  # at the limit: read, then malformed
    for bad in (
        b"not json",
        b"[1, 2]",
        b"{}",
        b'{"involvedObject": {"kind": "Kustomization"}}',
        b"[" * 100 + b"]" * 100,
    ):
        result = hook.handle(signed(bad), bad)
        assert result.status == 400 and result.outcome == "malformed", bad[:20]


def test_messages_never_echo_the_secret_or_the_body() -> None:
    hook = FluxWebhook(Redacted(SECRET))
    body = flux_body("a" * 40, message=SECRET)
    for headers in ({}, {"x-signature": "sha256=" + "1" * 64}, signed(body)):
        result = hook.handle(headers, body)
        assert SECRET not in result.message and "Reconciliation" not in result.message
    assert SECRET not in repr(hook.__dict__)


# --- Flux: nothing lost, nothing counted twice -----------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    git("init", "-q", "-b", "main", str(path))
    return path


def test_repeats_and_replays_change_nothing(repo: Path) -> None:
    c1 = commit_files(repo, {"prod/agents/a/k.yaml": "a: 1\n"}, "a")
    hook, store = FluxWebhook(Redacted(SECRET)), ObservationStore()
    applied = flux_body(c1, reason="Progressing", message="Deployment/agents/a configured")
    passed = flux_body(
        c1, reason="Progressing", message="Health check passed in 2s", when="2026-05-01T10:00:05Z"
    )
    finished = flux_body(c1, when="2026-05-01T10:00:06Z")
    results = [deliver(hook.handle(signed(b), b), store) for b in (applied, passed, finished)]
    assert [r.status for r in results] == [202, 202, 202]
    [obs] = store.snapshot()
    assert obs.status == "healthy" and obs.applied == c1
    since = obs.since
    # Flux repeats "Reconciliation finished" every interval: same state, since kept.
    later = flux_body(
        c1,
        when="2026-05-01T10:10:06Z",
        message="Reconciliation finished in 0.9s, next run in 10m0s",
    )
    repeat = deliver(hook.handle(signed(later), later), store)
    assert repeat.status == 200 and "duplicate" in repeat.message and repeat.outcome == "duplicate"
    # A replay of an earlier body (nothing time-based is signed): dropped as stale.
    replay = deliver(hook.handle(signed(applied), applied), store)
    assert replay.status == 200 and "stale" in replay.message
    [after] = store.snapshot()
    assert after.status == "healthy" and after.since == since


def test_a_revision_the_bridge_never_wrote_and_an_unknown_deployment_are_kept(repo: Path) -> None:
    c1 = commit_files(repo, {"prod/agents/a/k.yaml": "a: 1\n"}, "a")
    hook, store = FluxWebhook(Redacted(SECRET)), ObservationStore()
    reader = GitTreeReader(repo)
    a = DeploymentFolder("id-a", "agents", REMOTE, "main", "prod/agents/a", commit=c1)
    stranger = "e" * 40  # not in the clone: pushed by someone else, or never at all
    body = flux_body(stranger, name="agents-a")
    assert deliver(hook.handle(signed(body), body), store).status == 202
    assert assess(a, store.snapshot(), reader).sync == "unknown"  # never "synced"
    # An event for a Kustomization no deployment has yet (bootstrapped first).
    other = flux_body(c1, name="agents-z", path="prod/agents/z")
    assert deliver(hook.handle(signed(other), other), store).status == 202
    assert len(store) == 2
    # Later: the clone fetched the commit someone else pushed on top of ours
    # (it left a's folder alone), and deployment z appeared. Nothing was lost.
    c2 = commit_files(repo, {"README.md": "hand edit\n"}, "someone else")
    again = flux_body(c2, name="agents-a", when="2026-05-01T10:05:00Z")
    deliver(hook.handle(signed(again), again), store)
    assert assess(a, store.snapshot(), reader).sync == "synced"
    z = DeploymentFolder("id-z", "agents", REMOTE, "main", "prod/agents/z", commit=c1)
    assert assess(z, store.snapshot(), reader).source == "flux flux-system/agents-z"


def test_a_build_failure_keeps_the_last_applied_commit(repo: Path) -> None:
    c1 = commit_files(repo, {"prod/agents/a/k.yaml": "a: 1\n"}, "a")
    c2 = commit_files(repo, {"prod/agents/a/k.yaml": "a: 2\n"}, "a again")
    hook, store = FluxWebhook(Redacted(SECRET)), ObservationStore()
    ok = flux_body(c1)
    failed = flux_body(
        c2,
        reason="BuildFailed",
        severity="error",
        message='kustomize build failed: "x"',
        when="2026-05-01T10:01:00Z",
    )
    for body in (ok, failed):
        deliver(hook.handle(signed(body), body), store)
    [obs] = store.snapshot()
    assert obs.status == "degraded" and obs.applied == c1 and obs.reason.startswith("BuildFailed")
    a = DeploymentFolder("id-a", "agents", REMOTE, "main", "prod/agents/a", commit=c2)
    health = assess(a, store.snapshot(), GitTreeReader(repo))
    assert (health.sync, health.status) == ("out-of-date", "degraded")


# --- Argo CD notifications -----------------------------------------------------------------


TOKEN = "argocd-notifications-token-0123456789"


def render(template: str, app: dict[str, Any]) -> str:
    """The template's Go-template actions, rendered the one way it uses them:
    `{{toJson .app.<path>}}` (Sprig's toJson; a missing key gives null). Any
    other action fails the test: every field must go through toJson."""

    def value(match: re.Match[str]) -> str:
        node: Any = {"app": app}
        for part in match[1].split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return json.dumps(node)

    out = re.sub(r"\{\{toJson \.(app(?:\.[A-Za-z]+)+)\}\}", value, template)
    assert "{{" not in out, f"an action that is not toJson: {out}"
    return out


def test_the_template_makes_json_the_route_accepts_even_with_quotes() -> None:
    app = application(conditions=[{"type": "SyncError", "message": 'quote " and \n newline'}])
    app["status"]["health"]["message"] = 'back\\slash and "quotes"'
    body = render(ARGOCD_NOTIFICATIONS_BODY, app).encode()
    hook = ArgoCDNotificationsWebhook(
        Redacted(TOKEN), clock=lambda: datetime(2026, 5, 1, tzinfo=UTC)
    )
    result = hook.handle({"Authorization": f"Bearer {TOKEN}"}, body)
    assert result.status == 202, result.message
    [obs] = result.observations
    assert obs.source == "argocd-notifications" and obs.status == "degraded"
    assert obs.object == "argocd/agents-support-bot"


def test_the_config_entries_carry_the_same_template() -> None:
    import yaml

    config = argocd_notifications_config("http://gitops-bridge.gitops-bridge.svc:9090")
    template = yaml.safe_load(config["template.gitops-bridge"])
    hook = template["webhook"]["gitops-bridge"]
    assert hook["method"] == "POST" and hook["path"] == "/hooks/argocd"
    assert hook["body"] == ARGOCD_NOTIFICATIONS_BODY
    service = yaml.safe_load(config["service.webhook.gitops-bridge"])
    assert {"name": "Authorization", "value": "Bearer $gitops-bridge-token"} in service["headers"]
    for key in ("trigger.on-gitops-bridge-sync", "trigger.on-gitops-bridge-health"):
        [condition] = yaml.safe_load(config[key])
        assert condition["send"] == ["gitops-bridge"] and condition["oncePer"]
    assert set(subscription_annotations()) == {
        "notifications.argoproj.io/subscribe.on-gitops-bridge-sync.gitops-bridge",
        "notifications.argoproj.io/subscribe.on-gitops-bridge-health.gitops-bridge",
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"X-Signature": "sha256=x"},
    ],
)
def test_argocd_notifications_need_the_bearer_token(headers: dict[str, str]) -> None:
    hook = ArgoCDNotificationsWebhook(Redacted(TOKEN))
    result = hook.handle(headers, json.dumps(application()).encode())
    assert result.status == 401 and result.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in result.message


def test_argocd_deployed_twice_is_one_observation() -> None:
    hook, store = ArgoCDNotificationsWebhook(Redacted(TOKEN)), ObservationStore()
    body = render(ARGOCD_NOTIFICATIONS_BODY, application()).encode()
    auth = {"authorization": f"bearer {TOKEN}"}
    assert deliver(hook.handle(auth, body), store).status == 202
    assert deliver(hook.handle(auth, body), store).status == 200
    assert len(store) == 1
    assert hook.handle(auth, b'{"metadata": {}}').status == 400
    assert hook.handle(auth, b"x" * (MAX_BODY + 1)).status == 413


def test_outcomes_are_bounded_labels() -> None:
    labels = {HookResult(s, "").outcome for s in (200, 202, 400, 401, 413, 418)}
    assert labels <= {"duplicate", "ignored", "malformed", "unauthorized", "too_large"}


# --- a hostile sequence, then the honest event still counts ------------------------------


def test_after_every_attack_the_next_honest_event_counts(repo: Path) -> None:
    c1 = commit_files(repo, {"prod/agents/a/k.yaml": "a: 1\n"}, "a")
    hook, store = FluxWebhook(Redacted(SECRET)), ObservationStore()
    honest = flux_body(c1, when="2026-05-01T10:00:00Z")
    attacks = [
        ({"x-signature": "sha256=" + "0" * 64}, honest),  # wrong signature
        (signed(honest, key="guessed-secret-0123"), honest),  # another key
        ({}, honest),  # unsigned
        (signed(b"x" * (10 * 1024 * 1024)), b"x" * (10 * 1024 * 1024)),  # 10 MB
        (signed(b'{"involvedObject": []}'), b'{"involvedObject": []}'),  # malformed
    ]
    for headers, body in attacks:
        assert deliver(hook.handle(headers, body), store).status in (400, 401, 413)
        assert len(store) == 0  # nothing changed
    assert deliver(hook.handle(signed(honest), honest), store).status == 202
    # The attacker replays the honest body later: nothing moves.
    assert deliver(hook.handle(signed(honest), honest), store).status == 200
    [obs] = store.snapshot()
    a = DeploymentFolder("id-a", "agents", REMOTE, "main", "prod/agents/a", commit=c1)
    assert assess(a, store.snapshot(), GitTreeReader(repo)).sync == "synced"
    assert obs.applied == c1


def test_signed_garbage_never_raises() -> None:
    import random

    hook = FluxWebhook(Redacted(SECRET))
    argo = ArgoCDNotificationsWebhook(Redacted(TOKEN))
    base = flux_body("a" * 40)
    app = json.dumps(application()).encode()
    rng = random.Random(23)
    for _ in range(400):
        for body, handle in (
            (base, lambda b: hook.handle(signed(b), b)),
            (app, lambda b: argo.handle({"authorization": f"Bearer {TOKEN}"}, b)),
        ):
            data = bytearray(body)
            for _ in range(rng.randint(1, 6)):
                pos = rng.randrange(len(data))
                data[pos : pos + rng.randint(0, 3)] = bytes(
                    rng.choice(b'{}[]":,0a\\ \x00\xff') for _ in range(rng.randint(0, 3))
                )
            assert handle(bytes(data)).status in (202, 400)


def test_a_kustomization_annotated_as_waiting_is_healthy_at_its_first_success() -> None:
    hook = FluxWebhook(Redacted(SECRET))
    plain = flux_body("a" * 40)
    [unknown] = hook.handle(signed(plain), plain).observations
    assert unknown.status == "unknown" and "spec.wait" in unknown.reason
    doc = json.loads(plain)
    doc["metadata"][FLUX_WAIT_METADATA] = "true"
    waiting = json.dumps(doc).encode()
    [healthy] = hook.handle(signed(waiting), waiting).observations
    assert healthy.status == "healthy"
