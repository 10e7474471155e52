"""Guarantee 3: control-plane faults never delete, never stop the others, are
logged once per cycle, and heal on the next good cycle.

A real local control plane on loopback with `/_faults` switched on. 100
deployments of another listener fill page 1, so ours sit on page 2 of the
listing: a fault there strikes with a page already in hand. Cycles run in
process with the real client and the real git writer; retry waits are
recorded, not slept. The log test runs `gitops-bridge run` as a process.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.commands.wiring import make_reconciler
from bridge.errors import ControlPlaneError, ListenerNotFound
from bridge.reconcile.outcomes import CycleReport
from tests.reconcile.world import World, make_world
from tests.reliability.harness import head, start_bridge, stop, tree

PAGE_2 = {"path": "/v2/deployments", "after": 1}
LISTENER = {"path": "/v2/listeners"}
NEW_IMAGE = "registry.example.com/acme/agent:2.0.0"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at_least(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@dataclass
class Plane:
    world: World
    deps: dict[str, dict[str, Any]]
    sleeps: list[float] = field(default_factory=list)
    logs: Records = field(default_factory=Records)

    def arm(self, *rules: dict[str, Any]) -> None:
        r = httpx.post(
            f"{self.world.url}/_faults",
            json={"rules": [{"times": None, **rule} for rule in rules]},
            headers={"X-Api-Key": self.world.api_key},
        )
        assert r.status_code == 200, r.text

    def clear(self) -> None:
        r = httpx.delete(f"{self.world.url}/_faults", headers={"X-Api-Key": self.world.api_key})
        assert r.status_code == 204

    def settings(self, **overrides: Any) -> Any:
        return self.world.settings(**{"controlPlane.timeout": 0.5, **overrides})

    def cycle(self, **overrides: Any) -> CycleReport:
        """One in-process cycle; retry waits are recorded in `sleeps`, logs in `logs`."""
        self.sleeps.clear()
        self.logs.records.clear()
        logger = logging.getLogger("bridge")
        logger.addHandler(self.logs)
        old_level = logger.level
        logger.setLevel(logging.DEBUG)
        reconciler, close = make_reconciler(self.settings(**overrides), sleep=self.sleeps.append)
        try:
            return reconciler.run_cycle()
        finally:
            close()
            logger.removeHandler(self.logs)
            logger.setLevel(old_level)

    def heads(self) -> dict[str, str]:
        return {ns: head(r) for ns, r in self.world.remotes.items()}

    def folders(self, ns: str = "agents") -> set[str]:
        prefix = f"test-cluster/{ns}/"
        return {
            p[len(prefix) :].split("/")[0]
            for p in tree(self.world.remotes[ns])
            if p.startswith(prefix) and p.count("/") == 3
        }

    def patch_image(self, name: str, image: str = NEW_IMAGE) -> None:
        self.deps[name] = self.world.admin.patch_deployment(
            self.deps[name]["id"], {"source_revision_config": {"image_uri": image}}
        )


@pytest.fixture(scope="module")
def plane_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    with make_world(tmp_path_factory.mktemp("cpfaults"), faults=True) as world:
        other = world.admin.create_listener("another-cluster", ["elsewhere"])
        for i in range(100):
            world.admin.create_deployment(
                {
                    "name": f"filler-{i:03d}",
                    "source": "external_docker",
                    "source_config": {
                        "listener_id": other["id"],
                        "listener_config": {"k8s_namespace": "elsewhere"},
                    },
                    "source_revision_config": {"image_uri": "registry.example.com/f:1"},
                    "secrets": [],
                }
            )
        deps = {
            name: world.create(name, namespace=ns)
            for name, ns in (
                ("first", "agents"),  # index 100: the first record of page 2
                ("second", "agents"),
                ("third", "agents"),
                ("fourth", "agents"),
                ("fifth", "agents"),
                ("solo", "staging"),
            )
        }
        plane = Plane(world, deps)
        report = plane.cycle()
        assert report.exit_code() == 0, [o.error for o in report.outcomes]
        yield plane


@pytest.fixture
def plane(plane_world: Plane) -> Iterator[Plane]:
    plane_world.clear()
    yield plane_world
    plane_world.clear()


LISTING_FAULTS = [
    ("500", PAGE_2),
    ("500", LISTENER),
    ("429", {**PAGE_2, "retry_after": 0}),
    ("slow", {**PAGE_2, "seconds": 2}),
    ("reset", PAGE_2),
    ("reset", LISTENER),
    ("garbage", PAGE_2),
    ("garbage", LISTENER),
    ("truncated", PAGE_2),
    ("shift", PAGE_2),  # a deployment appearing between pages, on every pass
    ("empty", PAGE_2),  # a short, malformed later page
]


def test_a_failed_listing_changes_nothing_and_the_next_good_cycle_recovers(plane: Plane) -> None:
    # Pending work a broken listing must not touch: a new revision and a deletion.
    plane.patch_image("second")
    plane.world.admin.delete_deployment(plane.deps["fifth"]["id"])
    before = plane.heads()
    for mode, where in LISTING_FAULTS:
        plane.arm({**where, "mode": mode})
        try:
            report = plane.cycle()
        except ControlPlaneError as e:
            assert "changed nothing" in str(e), (mode, where)
            # No retry storm in the logs: retries are debug; the cycle's one
            # error line is the caller's (see the process test below).
            noisy = plane.logs.at_least(logging.INFO)
            assert len(noisy) <= 1 and all("restarts from offset 0" in m for m in noisy), noisy
        else:
            # `empty` on every page after the first: the relisted first page is
            # empty too, a well-formed empty listing, which the guard refuses.
            assert mode == "empty" and report.exit_code() == 1, (mode, where)
            assert {o.action for o in report.outcomes} == {"refused"}
        assert plane.heads() == before, (mode, where)
        assert len(plane.sleeps) <= 6, (mode, plane.sleeps)  # bounded: 3 attempts per pass
    plane.clear()
    report = plane.cycle()
    assert report.exit_code() == 0, [o.error for o in report.outcomes]
    assert {(o.name, o.action) for o in report.outcomes if o.action != "unchanged"} == {
        ("second", "deployed"),
        ("fifth", "deleted"),
    }
    assert "fifth" not in plane.folders()


def test_retry_after_is_honoured(plane: Plane) -> None:
    plane.arm({**PAGE_2, "mode": "429", "retry_after": 7, "times": 1})
    report = plane.cycle()
    assert report.exit_code() == 0
    assert plane.sleeps == [7.0]


def test_a_record_with_wrong_types_fails_alone_and_is_not_deleted(plane: Plane) -> None:
    plane.patch_image("third", "registry.example.com/acme/agent:3.0.0")
    plane.arm({**PAGE_2, "mode": "wrong-types"})  # `first` arrives with name: 42
    report = plane.cycle()
    assert report.exit_code() == 1
    failed = [o for o in report.outcomes if o.action == "failed"]
    assert [o.deployment_id for o in failed] == [plane.deps["first"]["id"]]
    assert plane.deps["first"]["id"] in (failed[0].error or "")
    assert "name" in (failed[0].error or "")
    assert "first" in plane.folders()  # a parse error never deletes
    assert any(o.name == "third" and o.action == "deployed" for o in report.outcomes)
    plane.clear()
    report = plane.cycle()
    assert report.exit_code() == 0
    assert not [o for o in report.outcomes if o.action != "unchanged"]


def test_a_deployment_vanishing_between_pages_is_not_deleted(plane: Plane) -> None:
    """Offset paging skips a record when an earlier one is deleted mid-listing;
    the answer looks complete. The bridge confirms with the control plane
    before it deletes anything."""
    plane.arm({**PAGE_2, "mode": "drop"})  # `first` is never listed
    before = plane.heads()
    report = plane.cycle()
    assert report.exit_code() == 0
    assert "first" in plane.folders()
    assert plane.heads() == before
    kept = [m for m in plane.logs.at_least(logging.WARNING) if plane.deps["first"]["id"] in m]
    assert kept and "folder is kept" in kept[0]


def test_an_empty_listing_after_a_full_one_is_refused_by_the_mass_delete_guard(
    plane: Plane,
) -> None:
    """Also answers each per-id GET with a well-formed empty page (the rule matches
    /v2/deployments/<id>): `solo`, alone in its target and so under the guard's
    floor, is kept because that answer is not the deployment (no 404)."""
    plane.arm({"path": "/v2/deployments", "mode": "empty"})  # a well-formed, empty answer
    before = plane.heads()
    report = plane.cycle()
    assert report.exit_code() == 1
    refused = {o.name for o in report.outcomes if o.action == "refused"}
    assert {"first", "second", "third", "fourth"} <= refused
    assert "solo" not in refused
    assert all("--allow-mass-delete" in (o.error or "") for o in report.failed)
    assert plane.heads() == before
    assert "solo" in plane.folders("staging")
    unconfirmed = [m for m in plane.logs.at_least(logging.WARNING) if "cannot confirm" in m]
    assert unconfirmed and "staging" in unconfirmed[0]
    plane.clear()
    report = plane.cycle()
    assert report.exit_code() == 0
    assert {o.action for o in report.outcomes} == {"unchanged"}


def test_a_listener_404_changes_nothing(plane: Plane) -> None:
    before = plane.heads()
    with pytest.raises(ListenerNotFound) as caught:
        plane.cycle(**{"controlPlane.listenerId": str(uuid.uuid4())})
    assert caught.value.exit_code == 3
    assert "listenerId" in str(caught.value)
    assert plane.heads() == before


def test_errors_are_logged_once_per_cycle_not_per_retry(plane: Plane, tmp_path: Path) -> None:
    """`gitops-bridge run` (the loop) through a persistent fault, then recovery."""
    world = plane.world
    config = tmp_path / "bridge.yaml"
    config.write_text(world.write_config(**{"controlPlane.pollInterval": 1}).read_text())
    plane.arm({"path": "/v2/deployments", "mode": "429", "retry_after": 0})
    proc = start_bridge(world, config, once=False)
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while sum("nothing changed this cycle" in ln for ln in lines) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.05)
        failing = list(lines)
        plane.clear()
        while not any(" cycle: " in ln for ln in lines[len(failing) :]):
            assert proc.poll() is None and time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.05)
    finally:
        code, _out, _err = stop(proc)
        reader.join(timeout=10)
    assert code == 0
    cycles = sum("nothing changed this cycle" in ln for ln in failing)
    loud = [ln for ln in failing if " ERROR " in ln or " WARNING " in ln or " CRITICAL " in ln]
    # One line per failed cycle, the first an error, the rest "still failing".
    assert len(loud) == cycles, loud
    assert sum(" ERROR " in ln for ln in loud) == 1, "\n".join(loud)
    assert not [ln for ln in failing if "retry" in ln.lower()], failing


def test_a_deletion_the_control_plane_cannot_confirm_waits(plane: Plane) -> None:
    """Deletions are confirmed one by one; a failing confirmation deletes nothing."""
    victim = plane.world.create("victim")
    assert plane.cycle().exit_code() == 0
    plane.world.admin.delete_deployment(victim["id"])
    plane.arm({"path": f"/v2/deployments/{victim['id']}", "mode": "500"})
    report = plane.cycle()
    assert report.exit_code() == 0
    assert "victim" in plane.folders()
    assert any("cannot confirm" in m for m in plane.logs.at_least(logging.WARNING))
    plane.clear()
    report = plane.cycle()
    assert [(o.name, o.action) for o in report.outcomes if o.action != "unchanged"] == [
        ("victim", "deleted")
    ]
    assert "victim" not in plane.folders()


def test_confirm_gone_asks_about_each_id(plane: Plane) -> None:
    from bridge.controlplane.client import ControlPlaneClient

    live = plane.deps["third"]["id"]
    unknown = str(uuid.uuid4())
    with ControlPlaneClient.from_settings(plane.settings().control_plane) as client:
        gone = client.confirm_gone([live, unknown, "../../v2/listeners", "not-a-uuid"])
    assert gone == {unknown, "../../v2/listeners", "not-a-uuid"}
