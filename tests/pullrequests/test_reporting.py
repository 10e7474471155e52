"""What pull-request mode reports, on the three forges: `status` per deployment
(pending in PR #n, merged at commit X, rejected in review), `audit` from each
revision to the reviewers who approved it and who merged it, and `/metrics`."""

from __future__ import annotations

import json
import time
from typing import Any

from bridge.commands.audit import run_audit
from bridge.commands.status import collect_status, format_status_table
from bridge.commands.statusfile import write_status
from bridge.observability.metrics import Metrics
from tests.pullrequests.conftest import BASE, Bench
from tests.pullrequests.test_lifecycle import IMAGE_2


def scrape_of(metrics: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def status_of(bench: Bench, metrics: Metrics | None = None) -> dict[str, dict[str, Any]]:
    """One cycle as `run` makes it (status file written), then `status`."""
    settings = bench.settings()
    report = bench.cycle(settings, metrics=metrics)
    if metrics is not None:
        metrics.record_report(report)
    write_status(settings, report, time.time())
    rows = collect_status(settings)
    assert "PULL REQUEST" in format_status_table(rows)
    json.dumps(rows)  # the JSON output takes them as they are
    return {r["name"]: r for r in rows}


def test_status_audit_and_metrics_follow_the_pull_request(bench: Bench) -> None:
    world = bench.world
    metrics = Metrics()
    alpha = world.create("alpha")
    rows = status_of(bench, metrics)
    pull = bench.open_pull()
    assert rows["alpha"]["pullRequest"]["state"] == "pending"
    assert rows["alpha"]["pullRequest"]["number"] == pull.number
    assert f"pending in PR #{pull.number}" in format_status_table(list(rows.values()))
    scrape = scrape_of(metrics)
    assert 'gitops_bridge_pull_requests_open{kind="changes",target="agents"} 1.0' in scrape
    assert "gitops_bridge_forge_quota_remaining" in scrape or bench.kind != "github"

    # Approved and merged: status names the commit on the base, audit the road there.
    bench.state.review(pull.number, "alice")
    method = "merge" if bench.kind == "github" else "squash"
    merge = bench.state.merge(pull.number, method=method, by="bob")
    rows = status_of(bench, metrics)
    assert rows["alpha"]["pullRequest"] == {"state": "merged", "commit": merge}
    assert f"merged at commit {merge[:12]}" in format_status_table(list(rows.values()))
    assert "gitops_bridge_pull_request_merges_total" in scrape_of(metrics)

    report = run_audit(bench.settings())
    assert report.findings == []
    (history,) = [d for d in report.deployments if d.deployment_id == alpha["id"]]
    (revision,) = history.history
    assert revision.review is not None
    assert revision.review["pullRequest"] == pull.number
    assert revision.review["approvedBy"] == ["alice"]
    assert revision.review["mergedBy"] == "bob" and revision.review["mergeCommit"] == merge
    assert revision.commit == (merge if method == "squash" else revision.commit)
    assert "approved by alice, merged by bob" in report.to_markdown()

    # Rejected in review: status says so, with the link.
    world.admin.patch_deployment(alpha["id"], {"source_revision_config": {"image_uri": IMAGE_2}})
    status_of(bench)
    second = bench.open_pull()
    bench.state.close(second.number)
    rows = status_of(bench)
    assert rows["alpha"]["pullRequest"]["state"] == "rejected"
    assert f"rejected in review: PR #{second.number}" in format_status_table(list(rows.values()))
    assert bench.sha(BASE) == merge
