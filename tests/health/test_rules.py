"""Health rules: Argo CD Applications and Flux events/conditions -> an Observation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.health.applications import parse_application, parse_stream_line
from bridge.health.fluxevents import parse_flux_event, parse_revision
from bridge.health.folders import DeploymentFolder, Scope, normal_repo
from bridge.health.rules import (
    argocd_observations,
    argocd_status,
    flux_conditions_status,
    flux_event_observation,
)
from bridge.untrusted import UntrustedInput
from tests.health.support import application, shared_fixture, with_changes

pytestmark = pytest.mark.quick
NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
SHA = "c" * 40


def status_of(doc: dict[str, Any]) -> str:
    return argocd_status(parse_application(doc))[0]


# --- Argo CD -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ("Healthy", "healthy"),
        ("Progressing", "progressing"),
        ("Suspended", "progressing"),  # a paused rollout is not done
        ("Missing", "progressing"),  # applied resources not there yet
        ("Degraded", "degraded"),
        ("Unknown", "unknown"),
        ("SomethingNew", "unknown"),
    ],
)
def test_argocd_health_words(health: str, expected: str) -> None:
    assert status_of(application(health=health)) == expected


def test_health_is_unknown_until_reconciled_after_the_sync_finished() -> None:
    stale = application(finished="2026-05-01T10:00:05Z", reconciled="2026-05-01T10:00:04Z")
    status, reason = argocd_status(parse_application(stale))
    assert status == "unknown" and "not yet reconciled" in reason
    assert status_of(application(reconciled=None)) == "unknown"
    # Equal is enough (>=): the fixture's own reconciledAt equals finishedAt.
    assert (
        status_of(application(finished="2026-05-01T10:00:05Z", reconciled="2026-05-01T10:00:05Z"))
        == "healthy"
    )
    # No sync operation at all (never synced by an operation): health stands.
    assert status_of(application(phase=None)) == "healthy"


@pytest.mark.parametrize("condition", ["ComparisonError", "InvalidSpecError", "SyncError"])
def test_error_conditions_are_failures_whatever_health_says(condition: str) -> None:
    doc = application(conditions=[{"type": condition, "message": 'repo "x" not found'}])
    status, reason = argocd_status(parse_application(doc))
    assert status == "degraded" and reason.startswith(condition)
    warning = application(conditions=[{"type": "OrphanedResourceWarning", "message": "x"}])
    assert status_of(warning) == "healthy"


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("Running", "progressing"),
        ("Terminating", "progressing"),
        ("Failed", "degraded"),
        ("Error", "degraded"),
    ],
)
def test_operation_phases(phase: str, expected: str) -> None:
    assert status_of(application(phase=phase)) == expected


def test_applied_revision_synced_or_last_successful_sync() -> None:
    synced = parse_application(application(revision=SHA))
    [obs] = argocd_observations(synced, source="argocd", now=NOW)
    assert obs.applied == SHA and obs.object == "argocd/agents-support-bot"
    assert obs.scope == Scope(
        "git.example.com/platform/prod-agents", "main", "prod/agents/support-bot"
    )
    assert obs.at == datetime(2026, 5, 1, 10, 0, 10, tzinfo=UTC)  # reconciledAt orders replays
    newer = "d" * 40
    out_of_sync = application(revision=SHA)
    out_of_sync["status"]["sync"] = {"status": "OutOfSync", "revision": newer}
    [obs] = argocd_observations(parse_application(out_of_sync), source="argocd", now=NOW)
    assert obs.applied == SHA  # what the last successful sync applied, not what it compares to


def test_an_app_that_names_no_branch_or_path_matches_nothing() -> None:
    for changes in ({"targetRevision": "HEAD"}, {"targetRevision": None}, {"path": None}):
        doc = application()
        doc["spec"]["source"].update(changes)
        assert argocd_observations(parse_application(doc), source="argocd", now=NOW) == []


def test_multi_source_applications_give_one_observation_per_git_folder() -> None:
    doc = application()
    doc["spec"] = {
        "sources": [
            {"repoURL": "https://charts.example.com", "chart": "x", "targetRevision": "1.0.0"},
            {"repoURL": "https://git.example.com/p/r.git", "path": "a/b", "targetRevision": "main"},
        ]
    }
    doc["status"]["sync"] = {"status": "Synced", "revisions": ["1.0.0", SHA]}
    [obs] = argocd_observations(parse_application(doc), source="argocd", now=NOW)
    assert obs.object.endswith("#1") and obs.applied == SHA and obs.scope is not None
    assert obs.scope.path == "a/b"


@pytest.mark.parametrize(
    "broken",
    [
        {"metadata": {}},
        {"metadata": {"name": 5}},
        {"metadata": {"name": "x"}, "status": {"conditions": "ComparisonError"}},
        {"metadata": {"name": "x"}, "status": {"reconciledAt": "yesterday"}},
        {"metadata": {"name": "x"}, "spec": {"source": ["a"]}},
        ["not", "an", "object"],
    ],
)
def test_malformed_applications_are_untrusted_input(broken: Any) -> None:
    with pytest.raises(UntrustedInput):
        parse_application(broken)


def test_the_real_fixture_replays() -> None:
    doc = shared_fixture()
    app = parse_application(doc)
    assert app.key == "argo-cd/velero-test"
    # reconciledAt == finishedAt (07:33:04Z): health is trusted.
    assert argocd_status(app) == ("healthy", "Argo CD health Healthy")
    [obs] = argocd_observations(app, source="argocd", now=NOW)
    assert obs.scope == Scope("github.com/foo/manifests-velero", "test-lla", "instances/test")
    # `sync.revision` is "rev1" (not a commit): the applied commit comes from
    # the last successful sync operation instead.
    assert obs.applied == "ea8759964626a583667a2bfd08f334ec2070040a"
    stale = with_changes(doc, reconciledAt="2024-03-05T07:33:03Z")
    assert argocd_status(parse_application(stale))[0] == "unknown"


def test_stream_lines() -> None:
    import json

    line = json.dumps({"result": {"type": "MODIFIED", "application": application()}}).encode()
    event = parse_stream_line(line, max_bytes=1 << 20)
    assert event.kind == "MODIFIED" and event.application.name == "agents-support-bot"
    with pytest.raises(UntrustedInput, match="event type"):
        parse_stream_line(b'{"result": {"type": "BOOKMARK", "application": {}}}', max_bytes=1 << 20)
    with pytest.raises(UntrustedInput, match="bytes"):
        parse_stream_line(line, max_bytes=100)


# --- folders -----------------------------------------------------------------------


def test_repo_urls_name_the_same_repository_whatever_the_scheme() -> None:
    same = {
        normal_repo(u)
        for u in (
            "https://git.example.com/platform/prod-agents.git",
            "https://GIT.example.com/platform/prod-agents/",
            "ssh://git@git.example.com/platform/prod-agents.git",
            "git@git.example.com:platform/prod-agents.git",
        )
    }
    assert same == {"git.example.com/platform/prod-agents"}
    assert normal_repo("https://git.example.com/platform/other") not in same


def test_a_scope_holds_its_folder_or_every_folder_under_it() -> None:
    folder = DeploymentFolder(
        "d1", "agents", "ssh://git@git.example.com/p/r.git", "main", "prod/agents/bot"
    )
    exact = Scope("git.example.com/p/r", "main", "prod/agents/bot")
    namespace = Scope("git.example.com/p/r", "main", "prod/agents")
    assert exact.holds(folder) and exact.exact(folder)
    assert namespace.holds(folder) and not namespace.exact(folder)
    assert not Scope("git.example.com/p/r", "main", "prod/agents/bo").holds(folder)
    assert not Scope("git.example.com/p/r", "staging", "prod/agents/bot").holds(folder)
    assert not Scope("git.example.com/p/other", "main", "prod/agents/bot").holds(folder)
    assert Scope(None, None, "prod/agents").holds(folder)
    assert not Scope(None, "main", None).holds(folder)


# --- Flux --------------------------------------------------------------------------


def flux_event(
    reason: str, severity: str = "info", message: str = "", revision: str | None = None
) -> Any:
    doc: dict[str, Any] = {
        "involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": "bot"},
        "severity": severity,
        "timestamp": "2026-05-01T10:00:00Z",
        "message": message,
        "reason": reason,
        "metadata": {"revision": revision or f"main@sha1:{SHA}"},
        "reportingController": "kustomize-controller",
        "reportingInstance": "kustomize-controller-1",
    }
    return parse_flux_event(doc)


def test_flux_revisions_new_and_old_forms() -> None:
    assert parse_revision(f"main@sha1:{SHA}") == ("main", SHA)
    assert parse_revision(f"refs/heads/main@sha1:{SHA}") == ("refs/heads/main", SHA)
    assert parse_revision(f"sha1:{SHA}") == (None, SHA)
    assert parse_revision(f"main/{SHA}") == ("main", SHA)
    assert parse_revision(f"main@sha256:{'e' * 64}") == ("main", "e" * 64)
    for nothing in (None, "", "v1.0.0", f"main@sha1:{SHA[:39]}", "latest@sha256:abc", "main/abc"):
        assert parse_revision(nothing) is None


@pytest.mark.parametrize(
    ("reason", "severity", "message", "status", "applied"),
    [
        (
            "ReconciliationSucceeded",
            "info",
            "Reconciliation finished in 1.2s, next run in 10m",
            "unknown",
            True,
        ),
        ("Progressing", "info", "Health check passed in 3.1s", "healthy", True),
        ("Progressing", "info", "Deployment/agents/bot configured", "progressing", True),
        (
            "Progressing",
            "info",
            "Health checks canceled due to new reconciliation",
            "progressing",
            False,
        ),
        (
            "DependencyNotReady",
            "info",
            "Dependencies do not meet ready condition",
            "progressing",
            False,
        ),
        (
            "HealthCheckFailed",
            "error",
            "timeout waiting for: [Deployment/agents/bot]",
            "degraded",
            True,
        ),
        ("BuildFailed", "error", "kustomize build failed", "degraded", False),
        ("ArtifactFailed", "error", "artifact not found", "degraded", False),
    ],
)
def test_flux_events(reason: str, severity: str, message: str, status: str, applied: bool) -> None:
    obs = flux_event_observation(flux_event(reason, severity, message), path="./prod/agents/bot/")
    assert obs is not None
    assert obs.status == status and obs.object == "flux-system/bot"
    assert obs.applied == (SHA if applied else None)
    assert obs.scope == Scope(None, "main", "prod/agents/bot")


def test_flux_success_with_health_checks_is_healthy_and_other_kinds_say_nothing() -> None:
    ok = flux_event_observation(flux_event("ReconciliationSucceeded"), health_checked=True)
    assert ok is not None and ok.status == "healthy" and ok.scope == Scope(None, "main", None)
    source = parse_flux_event(
        {
            "involvedObject": {"kind": "GitRepository", "namespace": "flux-system", "name": "r"},
            "severity": "info",
            "timestamp": "2026-05-01T10:00:00Z",
            "reason": "NewArtifact",
        }
    )
    assert flux_event_observation(source) is None
    assert flux_event_observation(flux_event("SomethingElse")) is None


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (
            [
                {"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded"},
                {"type": "Healthy", "status": "True", "reason": "Succeeded"},
            ],
            "healthy",
        ),
        ([{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded"}], "unknown"),
        (
            [
                {"type": "Ready", "status": "False", "reason": "HealthCheckFailed"},
                {"type": "Healthy", "status": "False"},
            ],
            "degraded",
        ),
        ([{"type": "Ready", "status": "False", "reason": "BuildFailed"}], "degraded"),
        ([{"type": "Ready", "status": "False", "reason": "DependencyNotReady"}], "progressing"),
        (
            [
                {"type": "Ready", "status": "Unknown", "reason": "Progressing"},
                {"type": "Reconciling", "status": "True"},
            ],
            "progressing",
        ),
        (
            [
                {"type": "Ready", "status": "True"},
                {"type": "Healthy", "status": "Unknown", "reason": "Progressing"},
            ],
            "progressing",
        ),
        (
            [
                {"type": "Ready", "status": "False", "reason": "ArtifactFailed"},
                {"type": "Stalled", "status": "True", "reason": "InvalidPath"},
            ],
            "degraded",
        ),
        ([], "unknown"),
    ],
)
def test_flux_conditions(conditions: list[dict[str, str]], expected: str) -> None:
    assert flux_conditions_status(conditions)[0] == expected


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {
            "involvedObject": {"kind": "Kustomization"},
            "severity": "info",
            "timestamp": "2026-05-01T10:00:00Z",
        },
        {
            "involvedObject": {"kind": "K", "name": "n"},
            "severity": "fatal",
            "timestamp": "2026-05-01T10:00:00Z",
        },
        {"involvedObject": {"kind": "K", "name": "n"}, "severity": "info"},
        {
            "involvedObject": {"kind": "K", "name": "n"},
            "severity": "info",
            "timestamp": "2026-05-01T10:00:00Z",
            "metadata": {"revision": 5},
        },
        "a string",
    ],
)
def test_malformed_flux_events(broken: Any) -> None:
    with pytest.raises(UntrustedInput):
        parse_flux_event(broken)
