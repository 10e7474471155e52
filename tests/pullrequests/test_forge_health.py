"""Commit statuses on the forge as a health source, end to end, for GitHub,
GitLab and Gitea: real git, the test forge over real HTTP, the local control
plane, the real ReadBack after each cycle (issue #23, source 4).

One story per forge (the cycles are the slow part): a change opens a pull
request, it is merged, "Flux" writes a status on the merge commit; the road
is created → committed → pushed → merged → synced → healthy. Then a failure,
a later merge of another deployment carrying the status, hostile statuses,
and a forge that refuses the token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from prometheus_client import CollectorRegistry

from bridge.commands.healthmanifests import flux_deployment_name
from bridge.commands.readback import ReadBack
from bridge.config import Settings, load_settings
from bridge.forges import ForgeHosts
from bridge.formats.canonical_yaml import dumps
from bridge.formats.state import STATE_FILE
from bridge.health.forgestatus import MAX_REASON, SOURCE
from bridge.reconcile.outcomes import CycleReport
from tests.pullrequests.conftest import BASE, Bench

UID = "0a1b2c3d"  # the first part of the Flux Provider's uid, as Flux names its contexts


def settings_of(bench: Bench) -> Settings:
    doc = bench.config_doc()
    doc["health"] = {"forgeStatuses": True}
    path = bench.world.root / "bridge-health.yaml"
    path.write_text(dumps(doc))
    return load_settings(path, env=bench.env)


def readback_of(bench: Bench, settings: Settings) -> ReadBack:
    # The bridge's clock is the forge's (virtual) clock: merge and status times
    # and the road's marks are on one time line.
    return ReadBack(
        settings,
        registry=CollectorRegistry(),
        clock=lambda: datetime.fromtimestamp(bench.clock.time(), UTC),
        forge_hosts=ForgeHosts(bench.clock),
    )


def cycle(bench: Bench, settings: Settings, readback: ReadBack) -> CycleReport:
    bench.clock.advance(30)
    report = bench.cycle(settings)
    assert all(t.error is None for t in report.targets), [t.error for t in report.targets]
    readback.after_cycle(report)
    return report


def merge_open_pull(bench: Bench) -> str:
    method = {"github": "merge", "gitlab": "squash", "gitea": "merge"}[bench.kind]
    bench.clock.advance(60)
    return bench.state.merge(bench.open_pull().number, method=method, by="bob")


def folder_of(bench: Bench, name: str) -> str:
    (path,) = [
        p
        for p in bench.tree(BASE)
        if p.endswith("/" + STATE_FILE) and PurePosixPath(p).parent.name == name
    ]
    return str(PurePosixPath(path).parent)


def flux_context(bench: Bench, name: str) -> str:
    folder = PurePosixPath(folder_of(bench, name))
    kustomization = flux_deployment_name(folder.parent.parent.name, folder.parent.name, name)
    return f"kustomization/{kustomization}/{UID}"


def health_of(readback: ReadBack, settings: Settings, deployment_id: str) -> Any:
    (target,) = settings.targets
    clone, lineage = readback._clone(target)
    from bridge.commands.healthreading import assess_target

    clone.ensure()
    try:
        found = assess_target(target, lineage, readback.store.snapshot(), readback._states)
    finally:
        clone.release()
    (item,) = [a for a in found if a.folder.deployment_id == deployment_id]
    return item.health


def status_calls(bench: Bench) -> int:
    return sum(
        1
        for e in bench.state.exchanges
        if e.method == "GET" and ("/status" in e.path or "/check-runs" in e.path)
    )


def test_commit_statuses_give_the_road_and_health(bench: Bench) -> None:
    world = bench.world
    settings = settings_of(bench)
    readback = readback_of(bench, settings)
    alpha = world.create("alpha")

    # Proposed, not merged: committed and pushed (to the head branch), nothing synced.
    cycle(bench, settings, readback)
    merge = merge_open_pull(bench)
    cycle(bench, settings, readback)
    revision = readback.keeper.road.road(alpha["id"], alpha["latest_revision_id"])
    assert revision is not None and "merged" in revision.times, "the merge is on the road"
    assert "synced" not in revision.times

    # Flux applied the merge commit and its health checks passed.
    context = flux_context(bench, "alpha")
    bench.clock.advance(20)
    bench.state.set_status(merge, context, "success", description="reconciliation succeeded")
    cycle(bench, settings, readback)
    health = health_of(readback, settings, alpha["id"])
    assert (health.sync, health.status, health.commit) == ("synced", "healthy", merge)
    assert health.source.startswith(f"{SOURCE} flux-system/") and not health.per_namespace
    road = readback.keeper.road.road(alpha["id"], alpha["latest_revision_id"])
    assert road is not None
    times = [road.times[s] for s in ("committed", "pushed", "merged", "synced", "healthy")]
    assert times == sorted(times), road.times

    # All healthy: the next cycles ask the head at most once per interval.
    before = status_calls(bench)
    cycle(bench, settings, readback)
    cycle(bench, settings, readback)
    assert status_calls(bench) - before <= 2  # GitHub: the status and the check runs

    # A failing health check on the same commit: degraded, still synced.
    bench.clock.advance(400)
    bench.state.set_status(merge, context, "failure", description="health check failed")
    cycle(bench, settings, readback)
    health = health_of(readback, settings, alpha["id"])
    assert (health.sync, health.status) == ("synced", "degraded")

    # Another deployment's merge moves the head; Flux reports alpha's object
    # there: alpha is synced at the later commit (its folder is unchanged).
    beta = world.create("beta")
    cycle(bench, settings, readback)
    later = merge_open_pull(bench)
    bench.state.set_status(later, context, "success", description="reconciliation succeeded")
    cycle(bench, settings, readback)
    health = health_of(readback, settings, alpha["id"])
    assert (health.sync, health.status, health.commit) == ("synced", "healthy", later)

    # Hostile statuses: a huge description, odd contexts, hundreds of them.
    huge = "\u202ex" * 50_000
    bench.state.set_status(later, flux_context(bench, "beta"), "success", description=huge)
    for i in range(120):
        odd = ("kustomization/../x", f"Kustomization/UPPER{i}/zz", f"ci/{i}")[i % 3]
        bench.state.set_status(later, odd, "failure", description="\x00" * 300)
    cycle(bench, settings, readback)
    said = health_of(readback, settings, beta["id"])
    assert said.status == "healthy"
    assert len(said.reason) <= MAX_REASON + 80 and "\u202e" not in said.reason
    assert readback.forge_statuses.reader.unreachable() == {}
    assert len(readback.store) < 10

    # Argo CD notifications' `github` service names the Application (as the
    # ApplicationSet of `bootstrap --for argocd` names it): health degraded.
    folder = PurePosixPath(folder_of(bench, "beta"))
    app = f"{folder.parent.parent.name}-{folder.parent.name}-beta"
    bench.clock.advance(400)  # all healthy: the head is asked once per idle interval
    bench.state.set_status(later, f"continuous-delivery/{app}", "failure", description="degraded")
    cycle(bench, settings, readback)
    said = health_of(readback, settings, beta["id"])
    assert (said.sync, said.status, said.source) == ("synced", "degraded", f"{SOURCE} argocd/{app}")

    # The forge refuses the token: the source is unreachable for this target,
    # the cycle and the read-back go on, and the last word stands.
    bench.state.fail("GET", r"/status", 401, times=50)
    report = cycle(bench, settings, readback)
    assert report.targets[0].error is None
    (target,) = settings.targets
    assert target.key in readback.forge_statuses.reader.unreachable()
    health = health_of(readback, settings, alpha["id"])
    assert health.status == "healthy"
    assert _sample(readback, "gitops_bridge_health_source_up", source=SOURCE) == 0.0

    # 5xx (retried on the virtual clock, then given up): unreachable too.
    bench.state.faults.clear()
    bench.state.fail("GET", r"/status", 503, times=50)
    cycle(bench, settings, readback)
    assert target.key in readback.forge_statuses.reader.unreachable()
    # The forge answers again: reachable, and the cycle goes on.
    bench.state.faults.clear()
    cycle(bench, settings, readback)
    assert readback.forge_statuses.reader.unreachable() == {}
    assert _sample(readback, "gitops_bridge_health_source_up", source=SOURCE) == 1.0
    readback.stop()


def _sample(readback: ReadBack, name: str, **labels: str) -> float | None:
    assert readback.metrics is not None
    for metric in readback.metrics.source_up.collect():
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None
