"""End-to-end reconcile cycles: real control plane over HTTP, real git remotes,
real kustomize and sops. Each test states one promise of SPEC §5-6."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.formats.commits import TRAILER_KEYS, parse
from bridge.formats.state import STATE_FILE
from tests.leakscan import scan_repo
from tests.reconcile.world import World, git, make_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as w:
        yield w


def test_create_makes_one_commit_per_deployment_with_exact_trailers(world: World) -> None:
    a = world.create("alpha", secrets_={"OPENAI_API_KEY": "sk-" + "a1b2c3d4" * 4})
    b = world.create("beta", resource_spec={"min_scale": 1, "max_scale": 3})
    report = world.cycle()
    assert report.exit_code() == 0, [o.error for o in report.outcomes]
    commits = world.log()
    assert len(commits) == 2
    parsed = [parse(c.split("\x00", 2)[2]) for c in commits]
    assert all(p is not None for p in parsed)
    by_id = {p.deployment_id: p for p in parsed if p}
    assert set(by_id) == {a["id"], b["id"]}
    for dep in (a, b):
        p = by_id[dep["id"]]
        assert list(p.trailers) == list(TRAILER_KEYS)
        assert p.trailers["Revision-Id"] == dep["latest_revision_id"]
        assert p.trailers["Listener-Id"] == world.listener_id
        assert p.trailers["Cluster"] == "test-cluster"
        assert p.trailers["Namespace"] == "agents"
        assert p.kind == "deploy"
        assert p.image == "registry.example.com/acme/agent:1.0.0"
    # Each commit touches only its own folder plus the shared namespace files.
    for commit in commits:
        sha = commit.split("\x00")[0]
        p = parse(commit.split("\x00", 2)[2])
        assert p is not None
        files = git("show", "--name-only", "--format=", sha, cwd=world.remotes["agents"]).split()
        own = f"test-cluster/agents/{p.name}/"
        assert all(
            f.startswith(own) or f in ("test-cluster/agents/kustomization.yaml", "README.md")
            for f in files
        ), files
    # Author from config.
    authors = set(
        git("log", "--format=%an <%ae>|%cn <%ce>", "main", cwd=world.remotes["agents"]).split("\n")
    ) - {""}
    assert authors == {
        "GitOps Bridge Test <bridge@test.invalid>|GitOps Bridge Test <bridge@test.invalid>"
    }
    assert [] == scan_repo(
        world.remotes["agents"], [*world.secret_values, world.api_key, world.bridge_key]
    )


def test_unchanged_cycle_makes_no_commit_and_no_push(world: World) -> None:
    world.create("alpha", secrets_={"TOKEN": "tok-" + "z9y8x7w6" * 4})
    assert world.cycle().exit_code() == 0
    head = world.head()
    reflog = git("reflog", "show", "--format=%H", "main", cwd=world.remotes["agents"])
    report = world.cycle()
    assert report.exit_code() == 0
    assert {o.action for o in report.outcomes} == {"unchanged"}
    assert not any(t.pushed for t in report.targets)
    assert world.head() == head
    assert git("reflog", "show", "--format=%H", "main", cwd=world.remotes["agents"]) == reflog
    # A restart on a fresh machine (empty workdir) reads the state back: still nothing.
    report = world.cycle(world.settings(**{"git.workdir": str(world.root / "fresh-workdir")}))
    assert {o.action for o in report.outcomes} == {"unchanged"}
    assert world.head() == head


def test_image_change_is_one_commit_touching_only_that_folder(world: World) -> None:
    a = world.create("alpha", secrets_={"TOKEN": "tok-" + "q1w2e3r4" * 4})
    world.create("beta")
    world.cycle()
    before = world.head()
    world.admin.patch_deployment(
        a["id"], {"source_revision_config": {"image_uri": "registry.example.com/acme/agent:2.0.0"}}
    )
    report = world.cycle()
    assert report.exit_code() == 0
    assert git("rev-list", "--count", f"{before}..main", cwd=world.remotes["agents"]).strip() == "1"
    files = git("diff", "--name-only", before, "main", cwd=world.remotes["agents"]).split()
    assert files and all(f.startswith("test-cluster/agents/alpha/") for f in files), files
    # The revision changes the API server and workers only; secrets are not re-encrypted.
    names = {Path(f).name for f in files}
    assert names <= {"agent-server.yaml", "queue-worker.yaml", STATE_FILE}, names
    assert world.subjects()[0].startswith(
        "deploy(agents/alpha): registry.example.com/acme/agent:2.0.0 [revision "
    )


def test_delete_commit_and_the_guards_floor(world: World) -> None:
    deps = [world.create(n) for n in ("alpha", "beta", "gamma")]
    world.cycle()
    world.admin.delete_deployment(deps[0]["id"])
    report = world.cycle()
    assert report.exit_code() == 0
    assert world.subjects()[0] == "delete(agents/alpha)"
    tree = git("ls-tree", "-r", "--name-only", "main", cwd=world.remotes["agents"])
    assert "test-cluster/agents/alpha/" not in tree
    assert (
        b"alpha"
        not in git(
            "show", "main:test-cluster/agents/kustomization.yaml", cwd=world.remotes["agents"]
        ).encode()
    )
    # Both remaining ones (2 of 2) is more than half but fewer than policy.massDelete.min
    # (3): ordinary deletions, one commit each (tests/reconcile/test_mass_delete.py has
    # the guard itself).
    for dep in deps[1:]:
        world.admin.delete_deployment(dep["id"])
    report = world.cycle()
    assert report.exit_code() == 0, [o.error for o in report.failed]
    assert world.subjects()[:2] == ["delete(agents/gamma)", "delete(agents/beta)"]


def test_manual_edit_is_restored_and_foreign_files_are_untouched(world: World) -> None:
    world.create("alpha", secrets_={"TOKEN": "tok-" + "m1n2b3v4" * 4})
    world.cycle()
    clone = world.clone()
    target = clone / "test-cluster/agents/alpha/agent-server.yaml"
    original = target.read_bytes()
    target.write_text("tampered: true\n")
    (clone / "test-cluster/agents/alpha/extra.yaml").write_text("x: 1\n")
    (clone / "docs").mkdir()
    (clone / "docs/notes.md").write_text("ours, not the bridge's\n")
    git("add", "-A", cwd=clone)
    git("commit", "-qm", "hand edit", cwd=clone)
    git("push", "-q", "origin", "HEAD:main", cwd=clone)
    report = world.cycle()
    assert report.exit_code() == 0
    assert world.subjects()[0] == "restore(agents/alpha): undo manual edit"
    check = world.clone()
    assert (check / "test-cluster/agents/alpha/agent-server.yaml").read_bytes() == original
    assert not (check / "test-cluster/agents/alpha/extra.yaml").exists()
    assert (check / "docs/notes.md").read_text() == "ours, not the bridge's\n"
    # The human commit stays in history: nothing was force-pushed.
    assert "hand edit" in world.subjects()


def human_pushes(clone: Path) -> None:
    """A human's commit "human change" (human.txt) pushed to the clone's main."""
    (clone / "human.txt").write_text("hello\n")
    git("add", "-A", cwd=clone)
    git("commit", "-qm", "human change", cwd=clone)
    git("push", "-q", "origin", "HEAD:main", cwd=clone)


def test_concurrent_pusher_is_kept_and_bridge_retries(world: World) -> None:
    world.create("alpha")
    world.cycle()
    from bridge.commands.wiring import make_reconciler

    settings = world.settings()
    reconciler, close = make_reconciler(settings)
    clone = world.clone()
    original_list = reconciler.list_deployments
    pushed_by_human = []

    def list_then_race():  # type: ignore[no-untyped-def]
        # A human pushes right after the bridge listed: the bridge's push is rejected.
        result = original_list()
        if not pushed_by_human:
            human_pushes(clone)
            pushed_by_human.append(True)
        return result

    reconciler.list_deployments = list_then_race  # type: ignore[method-assign]
    world.create("beta")
    reconciler.sleep = lambda _s: None
    try:
        report = reconciler.run_cycle()
    finally:
        close()
    assert report.exit_code() == 0
    subjects = world.subjects()
    assert "human change" in subjects
    assert subjects[0].startswith("deploy(agents/beta)")
    assert subjects.count(next(s for s in subjects if s.startswith("deploy(agents/beta)"))) == 1


def test_diff_writes_nothing_and_shows_changes(world: World) -> None:
    world.create("alpha")
    config = world.write_config()
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "diff", "--config", str(config), "--no-color"],
        env=world.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "agents/alpha" in out.stdout
    assert "+++ b/test-cluster/agents/alpha/agent-server.yaml" in out.stdout
    assert world.head() == ""  # nothing pushed


def test_status_json_matches_the_repo(world: World) -> None:
    import json

    a = world.create("alpha")
    config = world.write_config()
    run = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--once", "--config", str(config)],
        env=world.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "status", "--config", str(config), "--output", "json"],
        env=world.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["deployments"]
    assert len(rows) == 1
    row = rows[0]
    assert row["id"] == a["id"]
    assert row["wantedRevision"] == a["latest_revision_id"]
    assert row["committedRevision"] == a["latest_revision_id"]
    assert row["pushed"] is True
    assert row["commit"] == world.head()
    assert row["lastError"] is None


def test_a_kept_reconciler_sees_every_change_of_a_listed_deployment(world: World) -> None:
    """`run` keeps one reconciler, which remembers last cycle's fingerprints by
    deployment equality; a change must still be seen, even one that Python's
    equality hides (`True == 1`) inside free-form objects such as sidecars."""
    from bridge.models import parse_deployment, parse_listener
    from bridge.publishing import TargetRepo
    from bridge.publishing.publisher import BranchPublisher
    from bridge.reconcile.cycle import Reconciler

    sidecar = {"name": "proxy", "image": "registry.example.com/acme/proxy:1", "args": ["x"]}
    alpha = world.create("alpha", resource_spec={"min_scale": 1, "max_scale": 2})
    beta = world.create("beta", resource_spec={"sidecars": [sidecar]})
    beta["source_config"]["resource_spec"]["sidecars"][0]["tty"] = True
    listener = parse_listener(world.admin.get_listener(world.listener_id))
    records = {d["id"]: d for d in (alpha, beta)}
    settings = world.settings()
    publishers: dict[str, BranchPublisher] = {}

    def open_publisher(target: Any) -> BranchPublisher:
        return publishers.setdefault(target.key, BranchPublisher(TargetRepo(target, settings.git)))

    reconciler = Reconciler(
        settings,
        list_deployments=lambda: (
            listener,
            [parse_deployment(copy.deepcopy(r)) for r in records.values()],
            [],
        ),
        open_publisher=open_publisher,
    )

    def actions() -> dict[str, str]:
        report = reconciler.run_cycle()
        assert report.exit_code() == 0, [o.error for o in report.outcomes]
        return {o.name: o.action for o in report.outcomes}

    assert actions() == {"alpha": "deployed", "beta": "deployed"}
    assert actions() == {"alpha": "unchanged", "beta": "unchanged"}
    records[alpha["id"]]["source_config"]["resource_spec"]["max_scale"] = 3
    assert actions() == {"alpha": "deployed", "beta": "unchanged"}
    assert actions() == {"alpha": "unchanged", "beta": "unchanged"}
    # Same revision, only True -> 1 inside a sidecar: equal in Python, not in YAML.
    records[beta["id"]]["source_config"]["resource_spec"]["sidecars"][0]["tty"] = 1
    assert actions() == {"alpha": "unchanged", "beta": "deployed"}
    beta_files = [p for p in world.tree() if "/beta/" in p]
    assert any(b"tty: 1\n" in world.read(p) for p in beta_files)


def test_a_restart_reads_ahead_only_its_own_namespaces_state_files(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two targets in one repo: after a restart each target's sync thread reads
    ahead the state files of its own namespace folder, never the other's, and
    the cycle still changes nothing."""
    from bridge.publishing import TargetRepo

    shared = world.remotes["agents"].as_uri()
    targets = [{"namespace": ns, "repo": shared, "branch": "main"} for ns in ("agents", "staging")]
    world.create("alpha", namespace="agents")
    world.create("beta", namespace="staging")
    assert world.cycle(world.settings(targets=targets)).exit_code() == 0
    tree = git("ls-tree", "-r", "main", cwd=world.remotes["agents"])
    state_of = {
        line.split()[2]: line.split("\t")[1] for line in tree.splitlines() if STATE_FILE in line
    }
    assert len(state_of) == 2

    read_ahead: list[list[str]] = []
    original = TargetRepo.preload_blobs

    def recording(self: TargetRepo, blob_ids: Any, **kwargs: Any) -> None:
        read_ahead.append(sorted(state_of.get(b, b) for b in blob_ids))
        original(self, blob_ids, **kwargs)

    monkeypatch.setattr(TargetRepo, "preload_blobs", recording)
    report = world.cycle(world.settings(targets=targets, **{"git.workdir": str(world.root / "w2")}))
    assert {o.action for o in report.outcomes} == {"unchanged"}
    assert sorted(read_ahead) == [
        ["test-cluster/agents/alpha/" + STATE_FILE],
        ["test-cluster/staging/beta/" + STATE_FILE],
    ]


def test_a_head_already_read_ahead_is_not_looked_through_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept reconciler looks through a target's tree for state files to read
    ahead once per head: an unchanged branch costs no pass over its listing,
    and a moved one (a human's commit) is looked through again."""
    import bridge.reconcile.cycle as cycle
    from bridge.commands.wiring import make_reconciler

    world.create("alpha")
    world.create("beta")
    looked: list[str] = []
    original = cycle.is_state_of

    def counting(path: str, namespace: str) -> bool:
        looked.append(path)
        return original(path, namespace)

    monkeypatch.setattr(cycle, "is_state_of", counting)
    reconciler, close = make_reconciler(world.settings())
    try:

        def passes() -> int:
            looked.clear()
            report = reconciler.run_cycle()
            assert report.exit_code() == 0, [o.error for o in report.outcomes]
            return len(looked)

        assert passes() == 0  # an empty branch: no head
        assert passes() > 0  # the head the first cycle pushed
        assert passes() == 0
        assert passes() == 0
        human_pushes(world.clone())
        assert passes() > 0
        assert {o.action for o in reconciler.run_cycle().outcomes} == {"unchanged"}
    finally:
        close()


class _Held:
    """A publisher whose publish waits until `go` is set (or 60 s pass), and
    records whether it had to wait."""

    def __init__(self, inner: Any, go: threading.Event, waited: list[bool]) -> None:
        self._inner, self._go, self._waited = inner, go, waited

    def open(self) -> Any:
        return self._inner.open()

    def publish(self, plan: Any) -> Any:
        self._waited.append(self._go.wait(timeout=60))
        return self._inner.publish(plan)

    def close(self) -> None:
        self._inner.close()


def _cycle_noting_drafts(
    monkeypatch: pytest.MonkeyPatch, reconciler: Any, close: Any, noted: Any, *, end: Any = None
) -> Any:
    """One cycle, `noted(namespace)` called as each target's draft begins (and
    `end(namespace)` as it ends: its validation waited for, its changes made)."""
    from bridge.reconcile.planning import Planner

    draft_begin, draft_end = Planner.draft_begin, Planner.draft_end

    def drafting(self: Planner, view: Any, target: Any, *args: Any) -> Any:
        noted(target.namespace)
        return draft_begin(self, view, target, *args)

    def ending(self: Planner, draft: Any) -> Any:
        if end is not None:
            end(draft.target.namespace)
        return draft_end(self, draft)

    monkeypatch.setattr(Planner, "draft_begin", drafting)
    monkeypatch.setattr(Planner, "draft_end", ending)
    try:
        return reconciler.run_cycle()
    finally:
        close()


def test_a_target_is_published_while_the_next_one_is_planned(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first target's commits and push run on their own thread while the
    cycle plans the second target; the report keeps the targets' order."""
    from bridge.commands.wiring import make_reconciler

    world.create("alpha", namespace="agents")
    world.create("beta", namespace="staging")
    reconciler, close = make_reconciler(world.settings())
    go, waited = threading.Event(), list[bool]()
    open_publisher = reconciler.open_publisher
    reconciler.open_publisher = lambda t: (
        _Held(open_publisher(t), go, waited) if t.namespace == "agents" else open_publisher(t)
    )
    # agents' publish waits for the moment staging's draft ends (its validation
    # waited for): the publish runs while staging is planned.
    report = _cycle_noting_drafts(
        monkeypatch,
        reconciler,
        close,
        lambda ns: None,
        end=lambda ns: ns == "staging" and go.set(),
    )
    assert waited == [True]
    assert report.exit_code() == 0
    assert [o.name for o in report.outcomes] == ["alpha", "beta"]
    assert all(o.commit for o in report.outcomes)
    assert [r.pushed for r in report.targets] == [True, True]
    assert world.subjects("agents")[0].startswith("deploy(agents/alpha)")
    assert world.subjects("staging")[0].startswith("deploy(staging/beta)")


def test_a_push_rejected_on_the_publish_thread_is_retried_without_rendering_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone pushes to the first target's branch while the bridge publishes it
    and plans the second: the rejected push is retried on the new head, after
    the second target was planned, with the plan already made (not rendered
    again) and the human's commit kept."""
    from bridge.commands.wiring import make_reconciler
    from bridge.rendering import rendering

    world.create("alpha", namespace="agents")
    world.create("beta", namespace="staging")
    reconciler, close = make_reconciler(world.settings())
    reconciler.sleep = lambda _s: None
    clone = world.clone("agents")
    open_publisher = reconciler.open_publisher

    class Raced(_Held):
        def publish(self, plan: Any) -> Any:
            if not raced:
                human_pushes(clone)
                raced.append(True)
            return self._inner.publish(plan)

    raced: list[bool] = []
    reconciler.open_publisher = lambda t: (
        Raced(open_publisher(t), threading.Event(), [])
        if t.namespace == "agents"
        else open_publisher(t)
    )
    renders: list[str] = []
    render = rendering.render_deployment

    def counting(dep: Any, *args: Any, **kwargs: Any) -> Any:
        renders.append(dep.name)
        return render(dep, *args, **kwargs)

    monkeypatch.setattr(rendering, "render_deployment", counting)
    events: list[tuple[str, Any]] = []
    reconciler.stages.on_event = lambda name, data: events.append((name, dict(data)))
    try:
        report = reconciler.run_cycle()
    finally:
        close()
    assert report.exit_code() == 0
    assert ("push", {"target": "agents", "outcome": "rejected"}) in events
    assert sorted(renders) == ["alpha", "beta"]  # the retry reused alpha's plan
    subjects = world.subjects("agents")
    assert subjects[0].startswith("deploy(agents/alpha)") and "human change" in subjects
    assert [o.name for o in report.outcomes] == ["alpha", "beta"]
    assert all(o.commit for o in report.outcomes)


def test_a_large_plan_is_published_before_the_next_target_is_planned(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More than OVERLAP_MAX_CHANGES changes (a cold cycle) are git's CPU and
    memory, not a round trip: published before the next target is planned."""
    from bridge.commands.wiring import make_reconciler
    from bridge.reconcile import stages

    monkeypatch.setattr(stages, "OVERLAP_MAX_CHANGES", 1)
    world.create("alpha", namespace="agents")
    world.create("gamma", namespace="agents")
    world.create("beta", namespace="staging")
    reconciler, close = make_reconciler(world.settings())
    order: list[tuple[str, str]] = []
    open_publisher = reconciler.open_publisher

    class Recorded(_Held):
        def publish(self, plan: Any) -> Any:
            published = self._inner.publish(plan)
            order.append(("published", plan.target.namespace))
            return published

    reconciler.open_publisher = lambda t: Recorded(open_publisher(t), threading.Event(), [])
    report = _cycle_noting_drafts(
        monkeypatch, reconciler, close, lambda ns: order.append(("draft", ns))
    )
    assert report.exit_code() == 0
    # agents (2 changes) before staging is planned; staging (1) on the thread.
    assert order == [
        ("draft", "agents"),
        ("published", "agents"),
        ("draft", "staging"),
        ("published", "staging"),
    ]
    assert [o.name for o in report.outcomes] == ["alpha", "gamma", "beta"]
    assert all(o.commit for o in report.outcomes)


def test_the_next_target_is_begun_while_a_small_target_validates(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target of a few changes is drafted and its roots left building while
    the next target is drafted; only then is its validation waited for. Each
    still commits only what validated, in the targets' order."""
    from bridge.commands.wiring import make_reconciler

    world.create("alpha", namespace="agents")
    world.create("beta", namespace="staging")
    reconciler, close = make_reconciler(world.settings())
    order: list[tuple[str, str]] = []
    report = _cycle_noting_drafts(
        monkeypatch,
        reconciler,
        close,
        lambda ns: order.append(("begin", ns)),
        end=lambda ns: order.append(("end", ns)),
    )
    assert report.exit_code() == 0
    assert order == [
        ("begin", "agents"),
        ("begin", "staging"),
        ("end", "agents"),
        ("end", "staging"),
    ]
    assert [o.name for o in report.outcomes] == ["alpha", "beta"]
    assert all(o.commit for o in report.outcomes)


def test_a_cycle_cut_short_stops_the_held_targets_validation(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted while the next target is begun, the cycle drops the target it
    held: its builds stop, its scratch folder goes, nothing of it is pushed."""
    from bridge.commands.wiring import make_reconciler
    from bridge.reconcile.planning import Planner

    world.create("alpha", namespace="agents")
    world.create("beta", namespace="staging")
    reconciler, close = make_reconciler(world.settings())
    drafts: list[Any] = []
    draft_begin = Planner.draft_begin

    def drafting(self: Planner, view: Any, target: Any, *args: Any) -> Any:
        if target.namespace == "staging":
            raise KeyboardInterrupt
        draft = draft_begin(self, view, target, *args)
        drafts.append((draft, draft.run))
        return draft

    monkeypatch.setattr(Planner, "draft_begin", drafting)
    try:
        with pytest.raises(KeyboardInterrupt):
            reconciler.run_cycle()
    finally:
        close()
    [(draft, run)] = drafts
    assert draft.ended and draft.run is None
    assert run is not None and run._scratch is None  # closed: scratch folder removed
    assert world.subjects("agents") == []
