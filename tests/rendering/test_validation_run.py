"""Validation fed root by root (`Validator.begin`, `RootChecker.add`): the same
answers as validating all roots at once, builds started before the last root
is added (library batches and kubectl chunks), builds ended when a run is
closed, small batches spread over the cores, no more `kubectl kustomize`
processes at once than cores, and a scratch dir that fails midway falls back
to the whole-batch path. Real kustomize (library and
kubectl), real worker processes."""

from __future__ import annotations

import logging
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.validation import libkustomize
from bridge.validation import roots as validation
from bridge.validation.kustomize import CHUNK
from bridge.validation.roots import LIBRARY_BATCH, MIN_SPLIT, RootChecker, check_roots
from bridge.validation.scratch import Validator
from tests.rendering.test_libkustomize import needs_library
from tests.rendering.test_validation_parallel import write_roots
from tests.rendering.test_validator_scratch import roots as broken_roots
from tests.rendering.test_validator_scratch import settings


@pytest.fixture(autouse=True)
def clean_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def reset() -> None:
        validation.shutdown_workers()
        validation._LIBRARY_OFF = False
        validation._POOL_BROKEN = False
        validation._VALID.clear()

    reset()
    monkeypatch.setenv("BRIDGE_VALIDATE_WORKERS", "1")
    monkeypatch.delenv(libkustomize.ENGINE_ENV, raising=False)
    yield
    reset()


def scratchless(found: dict[str, list[str]]) -> dict[str, list[str]]:
    """Errors without the name of the scratch dir they were built in (kustomize's
    messages name the files it could not read)."""
    return {
        folder: [re.sub(r"gitops-bridge-validate-[^/]+", "SCRATCH", e) for e in errors]
        for folder, errors in found.items()
    }


def rendered(tmp_path: Path, count: int) -> dict[str, dict[str, bytes]]:
    """Real rendered roots (state files included) plus a good and a broken one."""
    base = tmp_path / "rendered"
    out = {
        folder: {p.name: p.read_bytes() for p in sorted((base / folder).iterdir())}
        for folder in write_roots(base, count)
    }
    return out | broken_roots()


@pytest.mark.parametrize("engine", ["auto", "kubectl"])
def test_a_run_answers_as_the_whole_batch_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    monkeypatch.setenv(libkustomize.ENGINE_ENV, engine)
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(Validator, "TMPFS", shm)
    roots = rendered(tmp_path, 2 * LIBRARY_BATCH + 3)
    validator = Validator(settings())
    whole = validator(roots)
    run = validator.begin(len(roots))
    try:
        for folder, files in roots.items():
            run.add(folder, files)
        assert scratchless(run.results()) == scratchless(whole)
    finally:
        run.close()
    assert sorted(f for f, errors in whole.items() if errors) == ["c/ns/broken"]
    assert list(shm.iterdir()) == []  # nothing left behind


@needs_library
def test_batches_are_built_before_the_last_root_is_added(tmp_path: Path) -> None:
    folders = write_roots(tmp_path, LIBRARY_BATCH + 1)
    checker = RootChecker(tmp_path)
    checker.add(folders[:LIBRARY_BATCH])
    # The first batch went to a worker as soon as it was full: it finishes on its
    # own, while the caller could still be rendering the next root.
    [(batch, future)] = checker._sent
    assert batch == folders[:LIBRARY_BATCH]
    assert [r.problems for r in future.result(timeout=120)] == [[]] * LIBRARY_BATCH
    checker.add(folders[LIBRARY_BATCH:] + folders[:1])  # a root added twice counts once
    found = checker.results()
    assert found == check_roots(tmp_path, folders)
    assert sorted(found) == sorted(folders)


def test_a_scratch_dir_that_fails_midway_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The run's scratch dir is gone and a file stands in its place (tmpfs trouble):
    the roots are validated the whole-batch way at the end, with the same answers."""
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(Validator, "TMPFS", shm)
    roots = rendered(tmp_path, 3)
    validator = Validator(settings())
    whole = validator(roots)
    run = validator.begin(len(roots))
    items = list(roots.items())
    try:
        run.add(*items[0])
        scratch = Path(run._scratch.name)  # type: ignore[union-attr]
        shutil.rmtree(scratch)
        scratch.write_text("not a directory")
        with caplog.at_level(logging.WARNING, logger="bridge.run"):
            for folder, files in items[1:]:
                run.add(folder, files)
        assert "validation scratch dir failed" in caplog.text
        assert scratchless(run.results()) == scratchless(whole)
    finally:
        run.close()
        (shm / scratch.name).unlink(missing_ok=True)
    assert list(shm.iterdir()) == []


def test_kubectl_chunks_are_built_before_the_last_root_is_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `kubectl kustomize` (the default install), a full chunk starts
    building on a thread as soon as it is added; the answers are the same."""
    monkeypatch.setenv(libkustomize.ENGINE_ENV, "kubectl")
    folders = write_roots(tmp_path, CHUNK + 5)
    checker = RootChecker(tmp_path)
    checker.add(folders[:CHUNK])
    [building] = checker._building
    assert sorted(building.result(timeout=120)) == sorted(folders[:CHUNK])
    checker.add(folders[CHUNK:] + folders[:1])  # a root added twice counts once
    found = checker.results()
    assert checker._building == [] and checker._threads is None  # threads ended
    assert found == check_roots(tmp_path, folders)
    assert sorted(found) == sorted(folders)


def test_a_flushed_checker_builds_the_rest_before_it_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flush` (every root is added): roots short of a chunk start building at
    once, so that they build while the cycle begins the next target; `results`
    then only waits, with the same answers."""
    monkeypatch.setenv(libkustomize.ENGINE_ENV, "kubectl")
    folders = write_roots(tmp_path, 5)
    checker = RootChecker(tmp_path)
    checker.add(folders)
    assert checker._building == []  # short of a chunk: nothing builds yet
    checker.flush()
    assert checker._kubectl == [] and checker._building
    built = sorted(f for b in checker._building for f in b.result(timeout=120))
    assert built == sorted(folders)
    found = checker.results()
    assert found == check_roots(tmp_path, folders)


@pytest.mark.parametrize(("busy", "builds"), [(0, 2), (1, 1), (2, 1)])
def test_a_flush_spreads_the_rest_over_the_cores_no_build_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy: int, builds: int
) -> None:
    """10 roots flushed on 2 cores: two builds side by side when nothing else
    builds (the answer comes sooner), one while another target's builds hold
    the cores (one start instead of two); the same answers either way."""
    monkeypatch.setenv(libkustomize.ENGINE_ENV, "kubectl")
    monkeypatch.setattr(validation, "available_cpus", lambda: 2)
    monkeypatch.setattr(validation._BUILDS, "busy", lambda: busy)
    folders = write_roots(tmp_path, 10)
    checker = RootChecker(tmp_path)
    checker.add(folders)
    checker.flush()
    assert len(checker._building) == builds
    assert checker.results() == check_roots(tmp_path, folders)


def test_builds_under_way_are_counted_across_checkers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(libkustomize.ENGINE_ENV, "kubectl")
    gate = threading.Event()
    real = validation._check_chunk

    def gated(*args: object) -> object:
        gate.wait(timeout=60)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(validation, "_check_chunk", gated)
    first, second = RootChecker(tmp_path), RootChecker(tmp_path)
    folders = write_roots(tmp_path, 2)
    before = validation._BUILDS.busy()
    first.add(folders[:1])
    first.flush()
    second.add(folders[1:])
    second.flush()
    assert validation._BUILDS.busy() == before + 2
    gate.set()
    first.results()
    second.results()
    assert validation._BUILDS.busy() == before


def test_closing_a_checker_ends_its_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cycle cut short closes its run: builds under way finish before the scratch
    dir goes, and the ones not started never start."""
    monkeypatch.setenv(libkustomize.ENGINE_ENV, "kubectl")
    folders = write_roots(tmp_path, 3 * CHUNK)
    checker = RootChecker(tmp_path)
    checker.add(folders)
    futures = list(checker._building)
    assert len(futures) == 3
    checker.close()
    assert all(f.done() for f in futures)
    assert checker._threads is None


def test_no_more_kubectl_processes_at_once_than_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Builds run from cores + 1 threads, but a third kubectl on 2 cores would
    only wait for a CPU while holding ~100 MB: the processes take a slot each."""
    monkeypatch.setenv(libkustomize.ENGINE_ENV, "kubectl")
    monkeypatch.setattr(validation, "available_cpus", lambda: 2)
    monkeypatch.setattr(validation, "_SLOTS", None)
    real = validation.kustomize_text
    running, peak, guard = [0], [0], threading.Lock()

    def counted(root: Path) -> str:
        with guard:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return real(root)
        finally:
            with guard:
                running[0] -= 1

    monkeypatch.setattr(validation, "kustomize_text", counted)
    folders = write_roots(tmp_path, 6 * MIN_SPLIT)
    checker = RootChecker(tmp_path)
    checker.add(folders)
    found = checker.results()
    assert sorted(found) == sorted(folders)
    assert all(c.objects and not c.errors and c.build_error is None for c in found.values())
    assert peak[0] == 2  # three threads, two processes


@pytest.mark.parametrize(
    ("roots", "cpus", "sizes"),
    [
        (1, 2, [1]),
        (7, 2, [7]),  # under 2 x MIN_SPLIT: one build is cheaper than two starts
        (10, 2, [5, 5]),  # a few changes per target: both cores build
        (10, 4, [5, 5]),
        (16, 4, [4, 4, 4, 4]),
        (33, 2, [11, 11, 11]),
        (100, 2, [12] + [11] * 8),  # rounds of `threads` chunks of at most CHUNK
    ],
)
def test_chunks_spread_small_batches_over_the_cores(
    roots: int, cpus: int, sizes: list[int]
) -> None:
    todo = [f"r{i:03d}" for i in range(roots)]
    chunks = validation._chunks(todo, cpus)
    assert [len(c) for c in chunks] == sizes
    assert [r for c in chunks for r in c] == todo
    assert all(len(c) <= CHUNK for c in chunks)
