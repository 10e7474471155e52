"""Guarantee 6: resource bounds. Metrics label cardinality is bounded whatever
the control plane sends; the local clone does not grow without bound (the auto
gc that fetch runs prunes what nothing refers to after an hour); the workdir
and the logs do not grow on cycles that change nothing; and (long variant)
memory stays flat across 200 cycles in one process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.commands.wiring import make_reconciler
from bridge.observability.metrics import MAX_DEPLOYMENT_SERIES, Metrics
from bridge.reconcile.outcomes import CycleReport, Outcome, TargetResult
from tests.reconcile.world import World, make_world
from tests.reliability.harness import files_under


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as w:
        yield w


def series(metrics: Metrics) -> dict[str, list[dict[str, str]]]:
    """Metric family -> label sets of its samples (histogram buckets folded)."""
    out: dict[str, list[dict[str, str]]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            if labels not in out.setdefault(family.name, []):
                out[family.name].append(labels)
    return out


def failing_report(names: list[str], target: Any) -> CycleReport:
    report = CycleReport()
    report.outcomes = [
        Outcome(
            target="agents",
            namespace="agents",
            deployment_id=f"id-{n}",
            name=n,
            action="failed",
            error=f"deployment {n!r}: rendered manifests do not validate",
        )
        for n in names
    ]
    report.targets = [TargetResult(target=target)]
    return report


def test_metrics_label_cardinality_is_bounded(world: World) -> None:
    metrics = Metrics()
    target = world.settings().targets[0]
    # Churn: every cycle a fresh set of failing deployments (as a hostile
    # control plane renaming everything would produce), then one huge cycle.
    for cycle in range(20):
        metrics.record_report(failing_report([f"c{cycle}-d{i}" for i in range(300)], target))
        assert len(series(metrics)["gitops_bridge_deployment_failing"]) == 300
    metrics.record_report(
        failing_report([f"huge-{i}" for i in range(MAX_DEPLOYMENT_SERIES + 500)], target)
    )
    got = series(metrics)
    assert len(got["gitops_bridge_deployment_failing"]) == MAX_DEPLOYMENT_SERIES
    unlabelled = metrics.registry.get_sample_value("gitops_bridge_deployments_failing_unlabelled")
    assert unlabelled == 500
    metrics.record_report(failing_report([], target))  # all healed: the series go
    assert series(metrics).get("gitops_bridge_deployment_failing", []) == []


def test_real_cycles_only_produce_bounded_label_values(world: World) -> None:
    """Labels from real cycles come from the config and fixed sets, never from data."""
    metrics = Metrics()
    a = world.create("alpha")
    world.create("beta", namespace="staging")
    settings = world.settings()
    reconciler, close = make_reconciler(settings, metrics=metrics, sleep=lambda _s: None)
    try:
        for i in range(4):
            world.admin.patch_deployment(
                a["id"], {"source_revision_config": {"image_uri": f"registry.example.com/a:{i}"}}
            )
            metrics.record_report(reconciler.run_cycle())
    finally:
        close()
    got = series(metrics)
    targets = {t.namespace for t in settings.targets} | {"-"}
    for name, label_sets in got.items():
        for labels in label_sets:
            assert labels.get("target", "agents") in targets, (name, labels)
            status = labels.get("status")
            assert status is None or status == "error" or (status.isdigit() and len(status) == 3)
    assert {ls["kind"] for ls in got["gitops_bridge_commits"]} <= {
        "deploy",
        "delete",
        "restore",
        "rekey",
    }


def _clone(world: World, namespace: str = "agents") -> Path:
    workdir = world.root / "workdir"
    return next(p for p in workdir.iterdir() if namespace in p.name and (p / "objects").is_dir())


def _count_objects(clone: Path) -> dict[str, int]:
    out = subprocess.run(
        ["git", f"--git-dir={clone}", "count-objects", "-v"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {k: int(v) for k, v in (line.split(": ") for line in out.splitlines())}


def flood_unreachable(clone: Path, count: int, age: float) -> None:
    """`count` loose objects nothing refers to, `age` seconds old: what many lost
    push races and crashed cycles leave behind over time."""
    src = clone.parent / "flood.git"
    subprocess.run(["git", "init", "-q", "--bare", str(src)], check=True)
    stream = b"".join(b"blob\ndata %d\nx%d\n" % (len(b"x%d" % i), i) for i in range(count))
    subprocess.run(
        ["git", f"--git-dir={src}", "fast-import", "--quiet", "--done"],
        input=stream + b"done\n",
        check=True,
    )
    pack = next((src / "objects" / "pack").glob("*.pack"))
    with pack.open("rb") as data:
        subprocess.run(
            ["git", f"--git-dir={clone}", "unpack-objects", "-q"], stdin=data, check=True
        )
    subprocess.run(["rm", "-rf", str(src)], check=True)
    old = time.time() - age
    for path in (clone / "objects").glob("??/*"):
        os.utime(path, (old, old))


def test_the_local_clone_does_not_grow_without_bound(world: World) -> None:
    world.create("alpha")
    assert world.cycle().exit_code() == 0
    clone = _clone(world)
    flood_unreachable(clone, 7000, age=2 * 3600)
    assert _count_objects(clone)["count"] >= 7000
    assert world.cycle().exit_code() == 0  # its sync runs gc --auto: thresholds passed
    after = _count_objects(clone)
    assert after["count"] < 100, after  # unreachable and older than an hour: pruned
    assert after["packs"] <= 2, after


def test_cycles_that_change_nothing_leave_no_trace(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A temp folder of this test's own: another process's bridge (a parallel
    # test run) leaving its askpass folder in /tmp must not count as ours.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    for name in ("alpha", "beta"):
        world.create(name)
    settings = world.settings()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.INFO)
    logger = logging.getLogger("bridge")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    reconciler, close = make_reconciler(settings, sleep=lambda _s: None)
    try:
        for _ in range(2):  # the first creates the branch, the second fetches it
            assert reconciler.run_cycle().exit_code() == 0
        workdir = settings.git.workdir
        before = sorted(files_under(workdir))
        tmp_before = {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).iterdir()}
        records.clear()
        for _ in range(5):
            assert reconciler.run_cycle().exit_code() == 0
        assert sorted(files_under(workdir)) == before  # no temp file, index or marks left
        tmp_after = {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).iterdir()}
        assert not {n for n in tmp_after - tmp_before if "gitops-bridge" in n}
        assert [r.getMessage() for r in records] == []  # quiet: `run` adds one summary line
    finally:
        close()
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.long
def test_long_memory_stays_flat_across_200_cycles(world: World) -> None:
    deps = [
        world.create(f"agent-{i}", secrets_={"TOKEN": f"tok-{i:04d}-abcdefgh"}) for i in range(6)
    ]
    deps.append(world.create("solo", namespace="staging"))
    settings = world.settings()
    metrics = Metrics()
    records = 0

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            nonlocal records
            records += 1

    handler = Count(logging.INFO)
    logger = logging.getLogger("bridge")
    logger.addHandler(handler)
    reconciler, close = make_reconciler(settings, metrics=metrics, sleep=lambda _s: None)
    samples: dict[int, int] = {}
    per_cycle: list[int] = []
    try:
        for cycle in range(200):
            if cycle % 10 == 5:  # a new revision now and then, as in real life
                dep = deps[cycle % len(deps)]
                world.admin.patch_deployment(
                    dep["id"],
                    {"source_revision_config": {"image_uri": f"registry.example.com/a:{cycle}"}},
                )
            before = records
            report = reconciler.run_cycle()
            assert report.exit_code() == 0
            metrics.record_report(report)
            per_cycle.append(records - before)
            if cycle in (30, 199):
                samples[cycle] = _rss_kib()
    finally:
        close()
        logger.removeHandler(handler)
    grown = samples[199] - samples[30]
    print(f"RSS at cycle 30: {samples[30]} KiB, at cycle 199: {samples[199]} KiB")  # -s shows it
    assert grown < 20 * 1024, f"RSS grew by {grown} KiB from cycle 30 to 199 ({samples})"
    assert max(per_cycle) <= 3, per_cycle  # log lines per cycle: one per commit, at most
    assert len(series(metrics)["gitops_bridge_deployments"]) <= 2 * 8
    clone = _clone(world)
    assert _count_objects(clone)["count"] + _count_objects(clone)["in-pack"] < 5000
