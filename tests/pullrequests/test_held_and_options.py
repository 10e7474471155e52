"""Held deletions in a pull request of their own, auto-merge through the forge's
native feature, and one pull request per deployment, on the three forges."""

from __future__ import annotations

from bridge.commands.audit import run_audit
from bridge.reconcile.outcomes import CycleReport, PullReport
from tests.pullrequests.conftest import BASE, HEAD, Bench
from tests.pullrequests.test_lifecycle import changes_pull

HELD = HEAD + ".held-deletions"


def held_pull(report: CycleReport) -> PullReport:
    (target,) = report.targets
    assert target.error is None, target.error
    (pull,) = [p for p in (target.pulls or []) if p.kind == "held-deletions"]
    return pull


def test_held_deletions_go_in_their_own_pull_request(bench: Bench) -> None:
    world = bench.world
    deps = [world.create(name) for name in ("a1", "a2", "a3", "a4")]
    bench.cycle()
    bench.state.merge(bench.open_pull().number)
    bench.cycle()
    for dep in deps[:3]:
        world.admin.delete_deployment(dep["id"])
    world.create("fresh")

    # The guard holds 3 of 4: those go in a pull request of their own, the rest flows.
    report = bench.cycle()
    held = held_pull(report)
    assert held.state == "open" and sorted(held.deployments) == sorted(d["id"] for d in deps[:3])
    assert changes_pull(report).state == "open"
    held_pr = bench.open_pull(HELD)
    assert "approves these deletions" in held_pr.body
    changes = bench.open_pull()
    assert "`fresh`" in changes.body and "`a1`" not in changes.body

    # Merging it is the approval: the next cycle proposes the deletions.
    bench.state.merge(held_pr.number, by="carol")
    bench.state.review(held_pr.number, "alice")
    report = bench.cycle()
    assert held_pull(report).state == "merged" and held_pull(report).merged_by == "carol"
    changes = bench.open_pull()
    assert all(f"`{name}`" in changes.body for name in ("a1", "a2", "a3", "fresh"))
    bench.state.merge(changes.number)
    tree = bench.tree(BASE)
    assert not any("/a1/" in p for p in tree) and any("/a4/" in p for p in tree)

    # audit: each deletion rests on the held pull request, approved by alice, merged by carol.
    audit = run_audit(bench.settings())
    assert audit.findings == []
    deletes = [r for d in audit.deployments for r in d.history if r.kind == "delete"]
    assert len(deletes) == 3
    for revision in deletes:
        assert revision.review is not None and revision.review["pullRequest"] == changes.number
        approval = revision.approval_review
        assert approval is not None and approval["pullRequest"] == held_pr.number
        assert approval["mergedBy"] == "carol" and approval["approvedBy"] == ["alice"]


def test_auto_merge_uses_the_forges_own_feature(bench: Bench) -> None:
    bench.world.create("alpha")
    settings = bench.settings(autoMerge={"method": "squash"})
    bench.cycle(settings)
    pull = bench.open_pull()
    if bench.kind == "gitlab":
        # GitLab refuses (405) until a pipeline exists for the head: asked again.
        assert pull.auto_merge is None
        bench.state.set_status(pull.head_sha, "ci/build", "running")
        bench.cycle(settings)
    assert bench.open_pull().auto_merge is not None
    # Never merged by the bridge itself: the base is the forge's to move.
    assert not pull.merged and bench.sha(BASE) != bench.sha(HEAD)


def test_one_pull_request_per_deployment(bench: Bench) -> None:
    world = bench.world
    world.create("alpha")
    world.create("beta")
    settings = bench.settings(granularity="deployment")
    report = bench.cycle(settings)
    pulls = [p for p in report.targets[0].pulls or [] if p.kind == "changes"]
    assert sorted(p.branch for p in pulls) == [f"{HEAD}/alpha", f"{HEAD}/beta"]
    alpha = bench.open_pull(f"{HEAD}/alpha")
    assert alpha.title == "[test-cluster/agents] 1 deployment change"
    bench.state.merge(alpha.number)
    bench.cycle(settings)
    beta = bench.open_pull(f"{HEAD}/beta")
    # Beta's pull request took alpha's merge in and still merges cleanly.
    bench.state.merge(beta.number)
    kustomization = bench.show(BASE, "test-cluster/agents/kustomization.yaml")
    assert "alpha" in kustomization and "beta" in kustomization
