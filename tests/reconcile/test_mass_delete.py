"""The mass-delete guard and approvals as commits (issue #17), end to end: a real
control plane on loopback, real bare remotes, real git clones for the operator's
approval commits, real kustomize and sops.

- the guard has a floor: a target's only deployment, confirmed gone, is one
  ordinary `delete` commit;
- held deletions are never committed; deploys of the same target go on; status,
  /metrics and one log line (per change of the held set) name each one;
- an approval commit lets go exactly the held ids it lists that are still
  confirmed gone, with `Approved-By` naming its author, and is removed in the
  same commit; the rest stay held (recorded, so they cannot slip under the floor);
- an approval naming a deployment that is listed again is ignored and reported;
  a malformed approval deletes nothing; one anywhere but the target's namespace
  folder does nothing;
- deployments the bridge will not manage are named with their ids, once per change.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from bridge.commands.audit import run_audit
from bridge.commands.status import format_held, held_deletions
from bridge.commands.statusfile import read_status, write_status
from bridge.commands.wiring import make_reconciler
from bridge.formats.approvals import APPROVAL_FILE, HELD_FILE, parse_approval
from bridge.formats.commits import TRAILER_KEYS, parse
from bridge.observability.metrics import Metrics
from bridge.reconcile.outcomes import CycleReport
from tests.leakscan import scan_repo, scan_text
from tests.reconcile.world import World, git, make_world

NS_DIR = "test-cluster/agents"
APPROVAL = f"{NS_DIR}/{APPROVAL_FILE}"
HELD = f"{NS_DIR}/{HELD_FILE}"
APPROVER = ("Jane Approver", "jane@example.com")
SECRET = "sk-" + "q7w8e9r0" * 4  # made up; must never show up in git or a log


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


@contextmanager
def captured() -> Iterator[Records]:
    """The bridge's log records (its logger may not propagate to the root)."""
    records = Records()
    logger = logging.getLogger("bridge")
    old = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(records)
        logger.setLevel(old)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as w:
        yield w


def folders(world: World, ns: str = "agents") -> set[str]:
    prefix = f"test-cluster/{ns}/"
    return {p[len(prefix) :].split("/")[0] for p in world.tree(ns) if p.startswith(prefix)} - {
        "kustomization.yaml"
    }


def commit_file(
    world: World,
    path: str,
    text: str,
    *,
    ns: str = "agents",
    author: tuple[str, str] = APPROVER,
    message: str = "approve held deletions",
) -> str:
    """An operator's commit of one file, pushed to the target's branch; its sha."""
    clone = world.clone(ns)
    (clone / path).parent.mkdir(parents=True, exist_ok=True)
    (clone / path).write_text(text)
    git("add", "-A", cwd=clone)
    git(
        "-c",
        f"user.name={author[0]}",
        "-c",
        f"user.email={author[1]}",
        "commit",
        "-qm",
        message,
        cwd=clone,
    )
    git("push", "-q", "origin", "HEAD:main", cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone).strip()


def approve(world: World, *ids: str, author: tuple[str, str] = APPROVER) -> str:
    body = "# deletions approved after checking LangSmith\ndeploymentIds:\n" + "".join(
        f"  - {i}\n" for i in ids
    )
    return commit_file(world, APPROVAL, body, author=author)


def held(report: CycleReport) -> dict[str, str]:
    """name -> error of the deletions the guard held."""
    return {o.name: o.error or "" for o in report.outcomes if o.action == "refused"}


def messages(world: World, n: int) -> list[str]:
    """The full messages of the last n commits, newest first."""
    return [c.split("\x00", 2)[2] for c in world.log()[:n]]


def create(world: World, *names: str, **kwargs: Any) -> dict[str, dict[str, Any]]:
    return {n: world.create(n, **kwargs) for n in names}


# --- the floor ---------------------------------------------------------------


def test_deleting_a_targets_only_deployment_is_an_ordinary_delete(tmp_path: Path) -> None:
    with make_world(tmp_path, namespaces=("solo",)) as world:
        dep = world.create("lonely-agent")
        assert world.cycle().exit_code() == 0
        world.admin.delete_deployment(dep["id"])
        with captured() as logs:
            report = world.cycle()
        assert report.exit_code() == 0, [o.error for o in report.failed]
        assert world.subjects("solo")[0] == "delete(solo/lonely-agent)"
        assert len(world.subjects("solo")) == 2
        assert not [line for line in logs.lines if "mass-delete" in line]
        assert not any(p.startswith("test-cluster/solo/lonely-agent/") for p in world.tree("solo"))


def test_the_guard_trips_on_fraction_and_minimum_together(world: World) -> None:
    deps = create(world, "a1", "a2", "a3", "a4", "a5", "a6")
    world.cycle()
    # 3 of 6 is not more than half: deleted.
    for name in ("a1", "a2", "a3"):
        world.admin.delete_deployment(deps[name]["id"])
    report = world.cycle()
    assert report.exit_code() == 0 and not held(report)
    assert folders(world) == {"a4", "a5", "a6"}
    # 3 of 3 with the floor raised to 4: still an ordinary deletion.
    for name in ("a4", "a5", "a6"):
        world.admin.delete_deployment(deps[name]["id"])
    settings = world.settings(**{"policy.massDelete": {"min": 4}})
    head = world.head()
    report = world.cycle(settings)
    assert report.exit_code() == 0 and world.head() != head
    assert folders(world) == set()


def test_a_lower_fraction_holds_what_the_default_would_delete(world: World) -> None:
    deps = create(world, "b1", "b2", "b3", "b4", "b5", "b6")
    world.cycle()
    for name in ("b1", "b2", "b3"):
        world.admin.delete_deployment(deps[name]["id"])
    head = world.head()
    report = world.cycle(world.settings(**{"policy.massDelete": {"fraction": 0.25}}))
    assert set(held(report)) == {"b1", "b2", "b3"}
    assert world.head() == head


# --- held, approved in part, recorded, approved again, then the flag -----------


def test_held_deletions_are_reported_and_approved_by_commits(world: World, tmp_path: Path) -> None:
    deps = create(world, "alpha", "beta", "gamma", "delta")
    deps.update(create(world, "epsilon", secrets_={"OPENAI_API_KEY": SECRET}))
    assert world.cycle().exit_code() == 0
    for name in ("alpha", "beta", "gamma", "delta"):
        world.admin.delete_deployment(deps[name]["id"])
    # A deploy of the same target in the same cycle is not held up by the question.
    world.admin.patch_deployment(
        deps["epsilon"]["id"],
        {"source_revision_config": {"image_uri": "registry.example.com/acme/agent:2.0.0"}},
    )
    settings = world.settings()
    reconciler, close = make_reconciler(settings, metrics=None)
    try:
        with captured() as logs:
            report = reconciler.run_cycle()
        assert report.exit_code() == 1
        assert set(held(report)) == {"alpha", "beta", "gamma", "delta"}
        assert all(APPROVAL_FILE in e and "--allow-mass-delete" in e for e in held(report).values())
        assert world.subjects()[0].startswith("deploy(agents/epsilon): ")
        assert not [s for s in world.subjects() if s.startswith("delete(")]
        assert {"alpha", "beta", "gamma", "delta", "epsilon"} <= folders(world)
        # One log line names each held deployment and its id...
        (line,) = [x for x in logs.take() if "mass-delete guard holds" in x]
        for name in ("alpha", "beta", "gamma", "delta"):
            assert f"{name} ({deps[name]['id']})" in line
        assert "4 deletion(s) of 5 deployments" in line and APPROVAL in line
        # ...once per change of the held set, not every cycle.
        head = world.head()
        report = reconciler.run_cycle()
        assert set(held(report)) == {"alpha", "beta", "gamma", "delta"}
        assert not [x for x in logs.take() if "mass-delete" in x]
        assert world.head() == head
    finally:
        close()

    # Status (as `run` writes it and `status` reads it) and /metrics.
    write_status(settings, report, 0.0)
    (target,) = held_deletions(read_status(settings))
    assert sorted(h["name"] for h in target["heldDeletions"]) == ["alpha", "beta", "delta", "gamma"]
    assert deps["alpha"]["id"] in format_held([target])
    metrics = Metrics()
    metrics.record_report(report)
    assert (
        metrics.registry.get_sample_value("gitops_bridge_deletions_held", {"target": "agents"}) == 4
    )

    # Approve some, not all: alpha and beta.
    approval_sha = approve(world, deps["alpha"]["id"], deps["beta"]["id"])
    with captured() as logs:
        report = world.cycle()
    assert report.exit_code() == 1  # gamma and delta are still held
    assert set(held(report)) == {"gamma", "delta"}
    assert world.subjects()[:2] == ["delete(agents/beta)", "delete(agents/alpha)"]
    for message in messages(world, 2):
        p = parse(message)
        assert p is not None and p.kind == "delete"
        assert list(p.trailers) == [*TRAILER_KEYS, "Approved-By"]
        assert p.approved_by == "Jane Approver <jane@example.com>"
        assert approval_sha in message
    newest, older = (c.split("\x00")[0] for c in world.log()[:2])
    remote = world.remotes["agents"]
    # The approval file goes in the commit of the last approved deletion; what stays
    # held is recorded there too, and nothing else changes.
    assert APPROVAL not in world.tree()
    assert APPROVAL in git("show", "--name-only", "--format=", newest, cwd=remote).split()
    assert APPROVAL not in git("show", "--name-only", "--format=", older, cwd=remote).split()
    assert parse_approval(world.read(HELD)) == tuple(
        sorted([deps["gamma"]["id"], deps["delta"]["id"]])
    )
    assert folders(world) == {"gamma", "delta", "epsilon", ".gitops-bridge"}
    held_line = [x for x in logs.lines if "mass-delete guard holds" in x]
    assert len(held_line) == 1 and "gamma" in held_line[0] and "alpha" not in held_line[0]

    # 2 of 3 is under the floor, but gamma and delta were held: they stay held.
    head = world.head()
    report = world.cycle()
    assert set(held(report)) == {"gamma", "delta"}
    assert world.head() == head

    # Approve gamma: deleted; the record now holds delta alone.
    approve(world, deps["gamma"]["id"], author=("Sam Second", "sam@example.com"))
    report = world.cycle()
    assert set(held(report)) == {"delta"}
    assert world.subjects()[0] == "delete(agents/gamma)"
    assert parse(messages(world, 1)[0]).approved_by == "Sam Second <sam@example.com>"  # type: ignore[union-attr]
    assert parse_approval(world.read(HELD)) == (deps["delta"]["id"],)

    # The one-off flag lets delta go and clears the record: no bridge metadata is left.
    report = world.cycle(allow_mass_delete=True)
    assert report.exit_code() == 0
    assert world.subjects()[0] == "delete(agents/delta)"
    assert parse(messages(world, 1)[0]).approved_by is None  # type: ignore[union-attr]
    assert folders(world) == {"epsilon"}
    assert world.cycle().exit_code() == 0
    assert world.subjects()[0] == "delete(agents/delta)"  # no commit since

    # The audit shows who approved which deletion and finds nothing wrong:
    # approvals are not drift, and approved deletions may remove them.
    audit = run_audit(world.settings())
    assert audit.findings == [], [(f.type, f.detail) for f in audit.findings]
    doc = json.loads(audit.to_json())
    assert doc["schema"] == 1
    approved_by = {
        d["name"]: [h["approvedBy"] for h in d["history"] if h["kind"] == "delete"]
        for d in doc["deployments"]
    }
    assert approved_by["alpha"] == approved_by["beta"] == ["Jane Approver <jane@example.com>"]
    assert approved_by["gamma"] == ["Sam Second <sam@example.com>"]
    assert approved_by["delta"] == [None]
    assert "delete (approved by Jane Approver <jane@example.com>)" in audit.to_markdown()

    for name, remote_path in world.remotes.items():
        assert scan_repo(remote_path, [SECRET]) == [], name
    assert scan_text("\n".join(logs.lines), [SECRET]) == []


def test_audit_catches_an_approved_by_the_approval_does_not_bear_out(world: World) -> None:
    deps = create(world, "c1", "c2", "c3", "c4")
    world.cycle()
    for name in ("c1", "c2", "c3"):
        world.admin.delete_deployment(deps[name]["id"])
    world.cycle()
    approve(world, deps["c1"]["id"])
    world.cycle()
    assert world.subjects()[0] == "delete(agents/c1)"
    # Someone forges a bridge commit claiming an approval nobody gave.
    clone = world.clone()
    real = messages(world, 1)[0]
    git("rm", "-rq", f"{NS_DIR}/c2", cwd=clone)
    forged = (
        real.replace(deps["c1"]["id"], deps["c2"]["id"])
        .replace("(agents/c1)", "(agents/c2)")
        .replace("Deployment-Name: c1", "Deployment-Name: c2")
        .replace("Jane Approver", "Mallory")
    )
    git("commit", "-qm", forged, cwd=clone)
    git("push", "-q", "origin", "HEAD:main", cwd=clone)
    # And someone edits the bridge's held record by hand (releasing c3 from the hold).
    human = commit_file(world, HELD, f"deploymentIds: [{deps['c2']['id']}]\n", message="unhold")
    audit = run_audit(world.settings())
    (finding,) = [f for f in audit.findings if f.type == "trailer-mismatch"]
    assert "Approved-By" in finding.detail and "no test-cluster/agents/" in finding.detail
    (drift,) = [f for f in audit.findings if f.type == "drift"]
    assert drift.commit == human and drift.paths == [HELD]


# --- approvals that do not count ----------------------------------------------


def test_an_approval_for_a_deployment_that_is_listed_again_is_ignored_and_reported(
    world: World,
) -> None:
    deps = create(world, "d1", "d2", "d3", "d4", "d5")
    world.cycle()
    for name in ("d1", "d2", "d3"):
        world.admin.delete_deployment(deps[name]["id"])
    assert set(held(world.cycle())) == {"d1", "d2", "d3"}
    # d5 is in the control plane (as a deployment that came back would be).
    approve(world, deps["d5"]["id"])
    head = world.head()
    with captured() as logs:
        report = world.cycle()
    assert set(held(report)) == {"d1", "d2", "d3"}
    assert world.head() == head  # nothing deleted; the approval is kept, no commit
    assert APPROVAL in world.tree()
    notes = [x for x in logs.lines if x.startswith("WARNING") and "approval" in x]
    assert any(f"'d5' ({deps['d5']['id']})" in x and "lists again" in x for x in notes), notes
    assert any("approves none of the held deletions" in x for x in notes), notes
    report = world.cycle()
    (t,) = [t for t in report.targets if t.target.namespace == "agents"]
    assert any("lists again" in n for n in t.approval_notes)

    # Approve d1 along with the listed d5: d1 goes, d5 stays, the file is removed.
    approve(world, deps["d1"]["id"], deps["d5"]["id"])
    report = world.cycle()
    assert world.subjects()[0] == "delete(agents/d1)"
    assert "d5" in folders(world)
    assert APPROVAL not in world.tree()
    assert set(held(report)) == {"d2", "d3"}
    (t,) = [t for t in report.targets if t.target.namespace == "agents"]
    assert any(deps["d5"]["id"] in n and "lists again" in n for n in t.approval_notes)


@pytest.mark.parametrize(
    "text",
    [
        "deploymentIds: not-a-list\n",
        "approve: [x]\n",
        "deploymentIds: []\n",
        "deploymentIds: [[nested]]\n",
        "deploymentIds: [a\n",
    ],
    ids=["not-a-list", "wrong-key", "empty", "nested", "not-yaml"],
)
def test_a_malformed_approval_is_reported_and_deletes_nothing(world: World, text: str) -> None:
    deps = create(world, "e1", "e2", "e3", "e4")
    world.cycle()
    for name in ("e1", "e2", "e3"):
        world.admin.delete_deployment(deps[name]["id"])
    world.cycle()
    commit_file(world, APPROVAL, text + f"# {deps['e1']['id']}\n")
    head = world.head()
    with captured() as logs:
        report = world.cycle()
    assert set(held(report)) == {"e1", "e2", "e3"}
    assert world.head() == head
    (note,) = [x for x in logs.lines if "approval file" in x and "nothing is deleted" in x]
    assert APPROVAL in note and "Jane Approver <jane@example.com>" in note


def test_a_forged_approval_outside_the_targets_folder_does_nothing(world: World) -> None:
    target = {
        "namespace": "agents",
        "repo": world.remotes["agents"].as_uri(),
        "branch": "main",
        "path": "envs/prod",
    }
    other = {"namespace": "staging", "repo": world.remotes["staging"].as_uri(), "branch": "main"}
    settings = world.settings(targets=[target, other])
    deps = create(world, "f1", "f2", "f3", "f4")
    world.cycle(settings)
    for name in ("f1", "f2", "f3"):
        world.admin.delete_deployment(deps[name]["id"])
    assert set(held(world.cycle(settings))) == {"f1", "f2", "f3"}
    body = "deploymentIds:\n" + "".join(f"- {d['id']}\n" for d in deps.values())
    for path in (
        f"test-cluster/agents/{APPROVAL_FILE}",  # outside `path`
        f"envs/prod/test-cluster/staging/{APPROVAL_FILE}",  # another namespace's folder
        f"envs/prod/other-cluster/agents/{APPROVAL_FILE}",  # another cluster's folder
        f"envs/prod/{APPROVAL_FILE}",  # the target's path itself
        f"envs/prod/test-cluster/agents/{APPROVAL_FILE}.yaml",  # not the name
    ):
        commit_file(world, path, body)
    commit_file(world, f"test-cluster/staging/{APPROVAL_FILE}", body, ns="staging")
    head = world.head()
    report = world.cycle(settings)
    assert set(held(report)) == {"f1", "f2", "f3"}
    assert world.head() == head
    assert not [s for s in world.subjects() if s.startswith("delete(")]
    # The staging target holds nothing: its stray approval is reported, not acted on.
    (staging,) = [t for t in report.targets if t.target.namespace == "staging"]
    assert any("no deletion of this target is held" in n for n in staging.approval_notes)


# --- deployments the bridge will not manage ------------------------------------


def test_unmanaged_deployments_are_named_once_per_change(tmp_path: Path) -> None:
    with make_world(tmp_path, namespaces=("agents", "staging", "other-ns")) as world:
        settings = world.settings(
            targets=[
                {"namespace": "agents", "repo": world.remotes["agents"].as_uri(), "branch": "main"}
            ]
        )
        stray = world.create("stray-agent", namespace="staging")
        outside = world.create("outside-agent", namespace="other-ns")
        # The listener stops serving other-ns; its deployment stays in LangSmith.
        r = httpx.patch(
            f"{world.url}/v2/listeners/{world.listener_id}",
            json={"compute_config": {"k8s_namespaces": ["agents", "staging"]}},
            headers={"X-Api-Key": world.api_key},
        )
        assert r.status_code == 200, r.text
        reconciler, close = make_reconciler(settings)
        try:
            with captured() as logs:
                report = reconciler.run_cycle()
                first = [x for x in logs.take() if x.startswith("WARNING")]
                assert len(first) == 2, first
                (not_ours,) = [x for x in first if "other-ns" in x]
                assert f"'outside-agent' ({outside['id']})" in not_ours
                assert "not one of the listener's namespaces ('agents', 'staging')" in not_ours
                assert "add a target" not in not_ours
                (no_target,) = [x for x in first if "'staging'" in x and "no target" in x]
                assert f"'stray-agent' ({stray['id']})" in no_target
                assert "add a target for namespace 'staging'" in no_target
                assert len(report.warnings) == 2
                # Unchanged: said again in the report, not in the log.
                report = reconciler.run_cycle()
                assert len(report.warnings) == 2
                assert not [x for x in logs.take() if x.startswith("WARNING")]
                # The set changes: said again, naming the new one too.
                another = world.create("another-agent", namespace="staging")
                reconciler.run_cycle()
                again = [x for x in logs.take() if x.startswith("WARNING")]
                assert any(another["id"] in x and stray["id"] in x for x in again), again
        finally:
            close()


# --- the command line: run --once, status (json and table), /metrics text ------


def bridge_cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args, "--config", str(world.write_config())],
        capture_output=True,
        text=True,
        env=world.env,
        check=False,
        timeout=300,
    )


def test_run_and_status_show_held_deletions_by_name_and_id(world: World) -> None:
    deps = create(world, "g1", "g2", "g3", "g4")
    assert bridge_cli(world, "run", "--once").returncode == 0
    for name in ("g1", "g2", "g3"):
        world.admin.delete_deployment(deps[name]["id"])
    done = bridge_cli(world, "run", "--once")
    assert done.returncode == 1, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if "mass-delete guard holds" in x]
    for name in ("g1", "g2", "g3"):
        assert f"{name} ({deps[name]['id']})" in line

    done = bridge_cli(world, "status", "--output", "json")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    rows = {r["name"]: r for r in doc["deployments"]}
    assert [n for n, r in sorted(rows.items()) if r["deletionHeld"]] == ["g1", "g2", "g3"]
    assert rows["g1"]["lastError"].startswith("deletion held by the mass-delete guard")
    assert not rows["g4"]["deletionHeld"] and rows["g4"]["lastError"] is None
    (target,) = doc["held"]
    assert target["namespace"] == "agents"
    assert {h["id"]: h["name"] for h in target["heldDeletions"]} == {
        deps[n]["id"]: n for n in ("g1", "g2", "g3")
    }

    done = bridge_cli(world, "status")
    assert done.returncode == 1
    (summary,) = [x for x in done.stdout.splitlines() if x.startswith("target agents: 3 deletion")]
    assert all(f"{n} ({deps[n]['id']})" in summary for n in ("g1", "g2", "g3"))
    assert ".gitops-bridge/approve-delete" in summary and "--allow-mass-delete" in summary

    metrics = Metrics()
    report = world.cycle()
    metrics.record_report(report)
    text = generate_latest(metrics.registry).decode()
    assert 'gitops_bridge_deletions_held{target="agents"} 3.0' in text
    assert 'gitops_bridge_deletions_held{target="staging"} 0.0' in text


def test_a_hold_that_ends_is_not_logged_and_a_new_one_is(world: World) -> None:
    deps = create(world, "h1", "h2", "h3", "h4")
    reconciler, close = make_reconciler(world.settings())
    try:
        with captured() as logs:
            reconciler.run_cycle()
            for name in ("h1", "h2", "h3"):
                world.admin.delete_deployment(deps[name]["id"])
            reconciler.run_cycle()
            assert len([x for x in logs.take() if "guard holds" in x]) == 1
            approve(world, *(deps[n]["id"] for n in ("h1", "h2", "h3")))
            report = reconciler.run_cycle()
            assert report.exit_code() == 0 and not held(report)
            assert folders(world) == {"h4"}  # no record: nothing stays held
            assert not [x for x in logs.take() if "guard holds" in x or "approval" in x]
            deps.update(create(world, "h5", "h6"))
            reconciler.run_cycle()
            for name in ("h4", "h5", "h6"):
                world.admin.delete_deployment(deps[name]["id"])
            report = reconciler.run_cycle()
            assert set(held(report)) == {"h4", "h5", "h6"}
            (line,) = [x for x in logs.take() if "guard holds" in x]
            assert "3 deletion(s) of 3 deployments" in line
    finally:
        close()
