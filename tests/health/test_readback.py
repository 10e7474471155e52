"""The health read-back end to end: commits the real bridge made, real git, real HTTP.

One world for the module (two cycles are the slow part): deployment `alpha`
is committed, then `beta` in a later commit that leaves alpha's folder alone.
Argo CD (a loopback fake) reports alpha's Application at beta's later commit;
Flux posts signed events for beta's Kustomization to the `--listen` server's
`POST /hooks/flux`. Then: alpha is synced (not "out of date"), the road is
timed, /metrics, `status` and `audit` show it, every hostile request is
refused and loses nothing, and a restart keeps the first-seen times.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge.commands.readback import ReadBack
from bridge.config import Settings, load_settings
from bridge.formats.state import STATE_FILE
from bridge.observability.metrics import Health
from bridge.observability.serving import RunningServer, start_server
from bridge.reconcile.outcomes import CycleReport
from tests.health.argocd_fake import FakeArgoCD, serve
from tests.health.support import application
from tests.health.test_webhooks import (
    FLUX_PATH_METADATA,
    FLUX_WAIT_METADATA,
    VECTOR_BODY,
    VECTOR_KEY,
    VECTOR_SIGNATURE,
)
from tests.reconcile.world import World, make_world

# The Flux webhook secret is the reference's known-answer key, so the vector
# body and signature from notification-controller's own tests verify here too.
FLUX_SECRET = VECTOR_KEY
ARGOCD_TOKEN = "argocd-api-token-0123456789abcdef"
NOTIFY_TOKEN = "argocd-notify-token-0123456789abcdef"
HEALTH_ENV = {
    "FLUX_WEBHOOK_TOKEN": FLUX_SECRET,
    "ARGOCD_TOKEN": ARGOCD_TOKEN,
    "ARGOCD_NOTIFY_TOKEN": NOTIFY_TOKEN,
}


@dataclass
class Road:
    world: World
    fake: FakeArgoCD
    reports: list[CycleReport]
    folders: dict[str, str]  # name -> repo-relative deployment folder
    ids: dict[str, str]  # name -> deployment id
    commits: dict[str, str]  # name -> the commit that carries its revision

    def settings(self, argocd_url: str | None = None, **health: Any) -> Settings:
        section: dict[str, Any] = {
            "argocd": {"url": argocd_url or self.fake.url, "tokenEnv": "ARGOCD_TOKEN"},
            "flux": {"webhookSecretEnv": "FLUX_WEBHOOK_TOKEN"},
            "argocdNotifications": {"tokenEnv": "ARGOCD_NOTIFY_TOKEN"},
            **health,
        }
        config = self.world.write_config(health=section)
        return load_settings(config, env={**self.world.env, **HEALTH_ENV})

    @property
    def remote(self) -> str:
        return self.world.remotes["agents"].as_uri()


def _folder_of(world: World, name: str) -> str:
    found = [
        p.rsplit("/", 1)[0]
        for p in world.tree()
        if p.endswith("/" + STATE_FILE) and p.split("/")[-2] == name
    ]
    assert len(found) == 1, sorted(world.tree())
    return found[0]


@pytest.fixture(scope="module")
def road(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Road]:
    root = tmp_path_factory.mktemp("readback")
    with (
        make_world(root, namespaces=("agents",)) as world,
        serve(FakeArgoCD(token=ARGOCD_TOKEN)) as fake,
    ):
        ids, commits, reports = {}, {}, []
        for name in ("alpha", "beta"):
            ids[name] = world.create(name)["id"]
            reports.append(world.cycle(validate=False))
            commits[name] = world.head()
        assert commits["alpha"] != commits["beta"]
        folders = {name: _folder_of(world, name) for name in ids}
        yield Road(world, fake, reports, folders, ids, commits)
        assert fake.problems == []


def argocd_app(road: Road, name: str, revision: str, **kwargs: Any) -> dict[str, Any]:
    return application(
        f"agents-{name}", repo=road.remote, path=road.folders[name], revision=revision, **kwargs
    )


def flux_event(
    road: Road,
    revision: str,
    *,
    name: str = "beta",
    path: str | None = None,
    when: str = "2030-01-01T00:00:00Z",
    reason: str = "ReconciliationSucceeded",
) -> bytes:
    doc = {
        "involvedObject": {
            "kind": "Kustomization",
            "namespace": "flux-system",
            "name": f"agents-{name}",
            "uid": "7a1f",
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "resourceVersion": "42",
        },
        "severity": "info",
        "timestamp": when,
        "message": "Reconciliation finished in 1.2s, next run in 10m0s",
        "reason": reason,
        "metadata": {
            "revision": f"main@sha1:{revision}",
            FLUX_PATH_METADATA: path or road.folders[name],
            FLUX_WAIT_METADATA: "true",
        },
        "reportingController": "kustomize-controller",
        "reportingInstance": "kustomize-controller-7d9",
    }
    return json.dumps(doc).encode()


def sign(body: bytes, key: str = FLUX_SECRET) -> str:
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def post(server: RunningServer, path: str, body: bytes, headers: dict[str, str]) -> int:
    host, port = server.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def post_oversized(server: RunningServer, path: str, size: int) -> bytes:
    """A head announcing `size` bytes and a little of them: the server answers
    413 on the head alone, without reading (or waiting for) the rest."""
    host, port = server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
        sock.sendall(f"{head}X-Signature: {sign(b'')}\r\n\r\n".encode() + b"{" * 4096)
        return sock.recv(4096)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture(scope="module")
def served(road: Road) -> Iterator[tuple[ReadBack, RunningServer, CollectorRegistry, Clock]]:
    """A ReadBack as `run` makes it, its routes on a real `--listen` server,
    after Argo CD and Flux have spoken and one cycle's read-back ran."""
    from bridge.controlplane.client import ControlPlaneClient

    road.fake.apps[:] = [argocd_app(road, "alpha", road.commits["beta"])]
    settings = road.settings()
    registry = CollectorRegistry()
    clock = Clock()
    with ControlPlaneClient.from_settings(settings.control_plane) as client:
        readback = ReadBack(
            settings, registry=registry, created_at=client.revision_created_at, clock=clock
        )
        server = start_server("127.0.0.1:0", Health(10), registry, routes=readback.routes())
        try:
            body = flux_event(road, road.commits["beta"])
            status = post(server, "/hooks/flux", body, {"X-Signature": sign(body)})
            assert status == 202
            # The bridge's own commits are recorded by `run` after each cycle.
            for report in road.reports:
                readback.after_cycle(report)
            yield readback, server, registry, clock
        finally:
            server.stop()
            readback.stop()


def test_a_later_commit_of_another_deployment_counts_as_synced(
    road: Road, served: tuple[ReadBack, RunningServer, CollectorRegistry, Clock]
) -> None:
    readback, _server, registry, _clock = served
    # Argo CD applied beta's commit, which left alpha's folder as alpha's commit
    # wrote it: alpha is synced, though the shas differ.
    assert road.commits["alpha"] != road.commits["beta"]
    for name in ("alpha", "beta"):
        road_of = readback.keeper.road.roads(road.ids[name])
        assert len(road_of) == 1, name
        times = road_of[0].times
        assert {"created", "committed", "pushed", "synced", "healthy"} <= set(times), (name, times)
        assert times["created"] <= times["committed"] <= times["synced"] <= times["healthy"]
        assert road_of[0].lead_time_seconds is not None
    counts = sample(
        registry,
        "gitops_bridge_health_deployments",
        target="agents",
        sync="synced",
        status="healthy",
    )
    assert counts == 2
    assert sample(registry, "gitops_bridge_health_source_up", source="argocd") == 1
    for stage in ("commit", "sync", "healthy"):
        observed = sample(
            registry, "gitops_bridge_revision_stage_seconds_count", target="agents", stage=stage
        )
        assert observed == 2, stage


def test_a_consumer_still_at_an_older_commit_is_out_of_date(
    road: Road, served: tuple[ReadBack, RunningServer, CollectorRegistry, Clock]
) -> None:
    """Flux reports beta's Kustomization at alpha's commit, older than beta's own."""
    readback, _server, _registry, _clock = served
    from bridge.commands.healthreading import StateCache, assess_target
    from bridge.publishing.clone import Clone
    from bridge.publishing.lineage import CloneLineage

    settings = road.settings()
    target = settings.targets[0]
    clone = Clone(target, settings.git)
    clone.ensure()
    try:
        older = [o for o in readback.store.snapshot() if o.source == "flux"]
        assert older
        stale = [replace(o, applied=road.commits["alpha"]) for o in older]
        found = assess_target(target, CloneLineage(clone), stale, StateCache())
    finally:
        clone.release()
    by_name = {a.name: a.health for a in found}
    assert by_name["beta"].sync == "out-of-date"
    assert by_name["alpha"].sync == "unknown"  # nothing speaks for alpha in that list


def test_flux_hostile_requests_are_refused_and_lose_nothing(
    road: Road, served: tuple[ReadBack, RunningServer, CollectorRegistry, Clock]
) -> None:
    readback, server, registry, _clock = served
    before = {o.key: o for o in readback.store.snapshot()}
    # notification-controller's own known-answer vector verifies (a
    # GitRepository event: accepted, says nothing about health).
    assert (
        post(server, "/hooks/flux", VECTOR_BODY.encode(), {"X-Signature": VECTOR_SIGNATURE}) == 202
    )
    good = flux_event(road, road.commits["beta"], when="2030-01-01T00:05:00Z")
    # Wrong signature, none, another key, a signed body that is not an event.
    assert post(server, "/hooks/flux", good, {"X-Signature": sign(good + b" ")}) == 401
    assert post(server, "/hooks/flux", good, {}) == 401
    assert post(server, "/hooks/flux", good, {"X-Signature": sign(good, "x" * 40)}) == 401
    assert post(server, "/hooks/flux", b"{[", {"X-Signature": sign(b"{[")}) == 400
    # A replay of what was already said: 200, nothing changes.
    first = flux_event(road, road.commits["beta"])
    assert post(server, "/hooks/flux", first, {"X-Signature": sign(first)}) == 200
    # 10 MB: refused on its head, never read.
    assert post_oversized(server, "/hooks/flux", 10 * 1024 * 1024).startswith(b"HTTP/1.1 413")
    assert {o.key: o for o in readback.store.snapshot()} == before
    # A revision the bridge never wrote, and a folder no deployment has: kept
    # (a later fetch or deployment may claim them), claiming no deployment.
    never = flux_event(road, "f" * 40, name="gamma", path=road.folders["beta"] + "-nobody")
    assert post(server, "/hooks/flux", never, {"X-Signature": sign(never)}) == 202
    odd = flux_event(road, "e" * 40, name="delta", path=road.folders["alpha"])
    assert post(server, "/hooks/flux", odd, {"X-Signature": sign(odd)}) == 202
    kept = {o.object for o in readback.store.snapshot()}
    assert {"flux-system/agents-gamma", "flux-system/agents-delta"} <= kept
    readback.after_cycle(road.reports[-1])
    # delta names alpha's exact folder and speaks later than Argo CD, so its
    # word is alpha's: a sha the clone does not hold is "unknown", never "synced".
    counts = {
        sync: sample(
            registry,
            "gitops_bridge_health_deployments",
            target="agents",
            sync=sync,
            status="healthy",
        )
        for sync in ("synced", "unknown")
    }
    assert counts == {"synced": 1, "unknown": 1}
    # The honest event after all of it still counts.
    later = flux_event(
        road, road.commits["beta"], when="2030-01-01T00:10:00Z", reason="Progressing"
    )
    assert post(server, "/hooks/flux", later, {"X-Signature": sign(later)}) == 202
    outcomes = {
        outcome: sample(
            registry,
            "gitops_bridge_health_webhook_requests_total",
            source="flux",
            outcome=outcome,
        )
        for outcome in ("accepted", "duplicate", "unauthorized", "malformed", "ignored")
    }
    assert outcomes["unauthorized"] == 3 and outcomes["malformed"] == 1
    assert outcomes["duplicate"] == 1 and outcomes["ignored"] == 1
    # Put back what the next tests expect: delta gone, beta healthy again.
    readback.store.forget("flux", ["flux-system/agents-beta", "flux-system/agents-gamma"])
    again = flux_event(road, road.commits["beta"], when="2030-01-01T00:15:00Z")
    assert post(server, "/hooks/flux", again, {"X-Signature": sign(again)}) == 202
    readback.after_cycle(road.reports[-1])


def test_argocd_notifications_need_the_bearer_token(
    road: Road, served: tuple[ReadBack, RunningServer, CollectorRegistry, Clock]
) -> None:
    readback, server, _registry, _clock = served
    body = json.dumps(argocd_app(road, "alpha", road.commits["beta"])).encode()
    assert post(server, "/hooks/argocd", body, {}) == 401
    assert post(server, "/hooks/argocd", body, {"Authorization": "Bearer wrong"}) == 401
    auth = {"Authorization": f"Bearer {NOTIFY_TOKEN}"}
    assert post(server, "/hooks/argocd", body, auth) == 202
    # "deployed" fires more than once: the second is a duplicate.
    assert post(server, "/hooks/argocd", body, auth) == 200
    assert any(o.source == "argocd-notifications" for o in readback.store.snapshot())


def test_a_restart_keeps_first_seen_times_and_what_was_pushed(
    road: Road, served: tuple[ReadBack, RunningServer, CollectorRegistry, Clock]
) -> None:
    readback, _server, _registry, clock = served
    first = {name: readback.keeper.road.roads(road.ids[name])[0].times for name in road.ids}
    readback.stop()  # saves the road and the observations, as `run` does on SIGTERM
    later = Clock()
    later.now = clock.now + timedelta(hours=2)
    again = ReadBack(road.settings(), registry=CollectorRegistry(), clock=later)
    try:
        # Flux tells again only at its next interval: its last word is back at once.
        assert {o.object for o in again.store.snapshot() if o.source == "flux"} >= {
            "flux-system/agents-beta"
        }
        for report in road.reports:
            again.after_cycle(report)
        for name, times in first.items():
            assert again.keeper.road.roads(road.ids[name])[0].times == times, name
    finally:
        again.stop()


def test_status_json_asks_argocd_itself_and_reads_the_pushed_word(road: Road) -> None:
    from bridge.commands.status import collect_status, format_status_table

    rows = {r["name"]: r for r in collect_status(road.settings())}
    for name in ("alpha", "beta"):
        health = rows[name]["health"]
        assert set(health) == {"sync", "status", "since", "commit", "source"}
        assert health["sync"] == "synced" and health["status"] == "healthy", rows[name]
        assert isinstance(rows[name]["leadTimeSeconds"], float)
    assert rows["alpha"]["health"]["source"] == "argocd argocd/agents-alpha"
    assert rows["alpha"]["health"]["commit"] == road.commits["beta"]
    assert rows["beta"]["health"]["source"] == "flux flux-system/agents-beta"
    table = format_status_table(list(rows.values()), health=True)
    assert "SYNC" in table and "LEAD TIME" in table and "synced" in table


def test_status_says_an_unreachable_source_instead_of_guessing(road: Road) -> None:
    from bridge.commands.healthstatus import StatusHealth
    from bridge.commands.status import collect_status

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # Without the notifications (whose last word would speak for alpha).
    settings = road.settings(argocd_url=closed, argocdNotifications=None)
    health = StatusHealth.gather(settings)
    rows = {r["name"]: r for r in collect_status(settings, health)}
    assert rows["alpha"]["health"]["sync"] == "unknown"
    assert "unreachable" in rows["alpha"]["healthNote"]
    assert rows["beta"]["health"]["sync"] == "synced"  # Flux's word, from the snapshot
    argocd = [s for s in health.sources if s["source"] == "argocd"]
    assert argocd and argocd[0]["reachable"] is False
    assert any("unreachable" in line for line in health.notes())


def test_status_says_health_is_per_namespace(road: Road) -> None:
    """One Kustomization for the whole namespace folder (Flux's default layout)."""
    from bridge.commands.healthstatus import StatusHealth
    from bridge.health.folders import Scope
    from bridge.health.rules import Observation

    settings = road.settings(argocd_url=None)
    health = StatusHealth.gather(settings)
    namespace_dir = road.folders["alpha"].rsplit("/", 1)[0]
    health.store.forget("argocd", [])
    health.store.forget("argocd-notifications", [])
    health.store.forget("flux", [])
    health.store.record(
        Observation(
            source="flux",
            object="flux-system/langsmith-agents",
            scope=Scope(repo=None, branch="main", path=namespace_dir),
            applied=road.commits["beta"],
            status="unknown",
            at=datetime(2030, 1, 1, tzinfo=UTC),
            reason="applied; Flux reports health only with spec.wait: true",
        )
    )
    from bridge.commands.status import collect_status

    rows = {r["name"]: r for r in collect_status(settings, health)}
    for name in ("alpha", "beta"):
        assert rows[name]["health"]["sync"] == "synced"
        assert "per namespace" in rows[name]["healthNote"]


def test_audit_says_when_each_revision_was_synced_and_healthy(road: Road) -> None:
    from bridge.commands.audit import run_audit

    report = json.loads(run_audit(road.settings()).to_json())
    revisions = {
        d["name"]: [r for r in d["history"] if r.get("revisionId")] for d in report["deployments"]
    }
    for name in ("alpha", "beta"):
        assert revisions[name], report
        assert revisions[name][-1]["synced"] and revisions[name][-1]["healthy"], revisions[name]


def test_the_status_command_from_a_shell(road: Road) -> None:
    """`gitops-bridge status --output json` as a real process, no bridge running."""
    config = road.world.root / "bridge.yaml"
    road.settings()  # writes the config with the health section
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "status", "--output", "json", "--config", str(config)],
        env={**road.world.env, "ARGOCD_TOKEN": ARGOCD_TOKEN},  # no webhook secrets here
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    rows = {r["name"]: r for r in doc["deployments"]}
    assert rows["alpha"]["health"]["sync"] == "synced"
    assert {s["source"] for s in doc["healthSources"]} == {
        "argocd",
        "flux",
        "argocd-notifications",
    }


def test_stream_mode_follows_argocd_in_its_thread(road: Road) -> None:
    """mode: stream: a list first, then the NDJSON stream's events, until stopped."""
    import time

    road.fake.apps[:] = [argocd_app(road, "alpha", road.commits["alpha"])]
    settings = road.settings(
        argocd={"url": road.fake.url, "tokenEnv": "ARGOCD_TOKEN", "mode": "stream"}
    )
    readback = ReadBack(settings, registry=CollectorRegistry())
    assert readback.streamer is not None and readback.poller is None
    readback.start()
    try:
        # A MODIFIED event on the open stream: Argo CD moved alpha to beta's commit.
        road.fake.events.put(("MODIFIED", argocd_app(road, "alpha", road.commits["beta"])))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            applied = {o.applied for o in readback.store.snapshot() if o.source == "argocd"}
            if applied == {road.commits["beta"]}:
                break
            time.sleep(0.05)
        assert applied == {road.commits["beta"]}
    finally:
        readback.stop()
    assert readback.streamer.follower.connections >= 1


def test_the_run_loop_serves_the_hooks_and_reads_health_back(road: Road) -> None:
    """`gitops-bridge run --listen` as a real process: the hooks on its server,
    Argo CD polled each cycle, /metrics, and the word kept when it stops."""
    from tests.hostile.loop import Loop
    from tests.reliability.harness import bridge_cmd

    road.fake.apps[:] = [argocd_app(road, "alpha", road.commits["beta"])]
    config = road.world.root / "bridge.yaml"
    road.settings()  # writes the config with the health section
    log_path = road.world.root / "run.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            bridge_cmd(config, "--listen", "127.0.0.1:0", once=False),
            env={**road.world.env, **HEALTH_ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    loop = Loop(proc, log_path)
    try:
        loop.wait_cycles(1)
        host, port = loop.address.rsplit(":", 1)
        # A new rollout of beta's Kustomization: progressing, then finished.
        for reason, when in (
            ("Progressing", "2030-02-01T00:00:00Z"),
            ("ReconciliationSucceeded", "2030-02-01T00:01:00Z"),
        ):
            body = flux_event(road, road.commits["beta"], when=when, reason=reason)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("POST", "/hooks/flux", body=body, headers={"X-Signature": sign(body)})
            assert conn.getresponse().status == 202, reason
            conn.close()
        loop.wait_cycles(1)
        _, metrics = loop.get("/metrics")
        synced = (
            'gitops_bridge_health_deployments{status="healthy",sync="synced",target="agents"} 2.0'
        )
        assert synced in metrics, metrics
        assert 'gitops_bridge_health_source_up{source="argocd"} 1.0' in metrics
        assert 'gitops_bridge_health_webhook_requests_total{outcome="accepted",source="flux"}' in (
            metrics
        )
    finally:
        assert loop.stop() == 0, loop.log()[-3000:]
    kept = json.loads((road.world.root / "workdir" / "health-observations.json").read_text())
    beta = [o for o in kept["observations"] if o["object"] == "flux-system/agents-beta"]
    assert beta and beta[0]["at"] == "2030-02-01T00:01:00Z", beta
