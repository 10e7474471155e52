"""Build rendered roots with real Kustomize and validate every object they yield:
the worker processes, the cache of objects found valid, and `RootChecker`.

Building is bridge.validation.kustomize (in aggregate chunks, bisected on
failure); checking one object is bridge.validation.objects.

Where the time goes (benchmarks/README.md): Kustomize ~15 ms per root,
parsing its output ~5.6 ms and schema validation ~0.8 ms per root, the last
two pure Python. So `check_roots` runs the builds from threads (subprocesses,
no GIL), and parses and validates the objects both in this process (one chunk
at a time: the GIL) and in a pool of worker processes (spawn, never fork:
the bridge runs threads), one per spare core; each worker keeps its compiled
validators for its lifetime. An object whose exact text was found valid
before in this process is not parsed or validated again (a new revision
leaves Postgres and Redis byte-identical), so a cycle checks what changed.

Where Kustomize's Go library is installed (bridge/validation/libkustomize.py),
roots are built with it instead, one at a time, in the worker processes (one
per core; the bridge process never loads Go): ~9 ms of CPU per root for build
and parse instead of ~21. `RootChecker` takes roots as the caller produces
them and sends each full batch to the workers at once, so that builds overlap
the rendering of the next roots; `check_roots` is the all-at-once form. If the
library cannot load, a worker dies, or a build hangs, validation goes on with
`kubectl kustomize` for the rest of the process's life, and says so once.
"""

from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing
import os
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import yaml

from bridge.validation import checkcache, kustomize, libkustomize
from bridge.validation.kustomize import (
    BUILD_TIMEOUT,
    BuildError,
    _Loader,
    _root_id,
    _split_documents,
    _write_parent,
    kustomize_text,
)
from bridge.validation.objects import (
    RootCheck,
    _check_document,
    _check_texts,
    _Checked,
    _Result,
    _Unchecked,
)
from bridge.validation.schemas import DEFAULT_KUBERNETES_VERSION

log = logging.getLogger("bridge.validation")


# --- check_roots: build, parse and validate, in parallel, checking only what changed --


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU
    quota (a pod's `resources.limits.cpu`), which os.cpu_count() ignores."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def validation_workers() -> int:
    """Worker processes for validation, or BRIDGE_VALIDATE_WORKERS (0 = none).

    With Kustomize's library, one per core: the workers build and check, this
    process only hands out roots. With `kubectl kustomize`, one per spare
    core: this process parses and checks too."""
    configured = os.environ.get("BRIDGE_VALIDATE_WORKERS", "").strip()
    if configured.isdigit():
        return int(configured)
    return available_cpus() - (0 if _library_wanted() else 1)


_LIBRARY_OFF = False  # the library failed once: kubectl kustomize from then on
_LIBRARY_GUARD = threading.Lock()


def _library_wanted() -> bool:
    return not _LIBRARY_OFF and libkustomize.wanted()


def kustomize_engine() -> str:
    """Which Kustomize `check_roots` builds with now: 'library' or 'kubectl'."""
    if _library_wanted() and validation_workers() >= 1 and not _POOL_BROKEN:
        return "library"
    return "kubectl"


_POOL: ProcessPoolExecutor | None = None
_POOL_GUARD = threading.Lock()
_POOL_BROKEN = False  # a worker died: this process checks everything itself from then on
# Parsing and validating is pure Python: in this process, one chunk at a time.
_HERE = threading.Lock()


def _pool() -> ProcessPoolExecutor | None:
    global _POOL
    with _POOL_GUARD:
        if _POOL is None:
            workers = validation_workers()
            if workers < 1 or _POOL_BROKEN:
                return None
            # spawn, not fork: the bridge runs threads, and a forked child could
            # inherit a lock another thread held. Not forkserver either: its
            # server would be one more resident process (~35 MB) to save a
            # start-up (~0.4 s) that happens once per bridge process.
            context = multiprocessing.get_context("spawn")
            _POOL = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=context,
                # Workers load and keep compiled checks where this process does.
                initializer=checkcache.configure,
                initargs=(checkcache.folder(),),
            )
        return _POOL


def shutdown_workers() -> None:
    """Stop the worker processes (they start again on the next check)."""
    _stop_workers(kill=False)


def _stop_workers(*, kill: bool) -> None:
    global _POOL
    with _POOL_GUARD:
        pool, _POOL = _POOL, None
    if pool is None:
        return
    if kill:
        # ProcessPoolExecutor has no public way to end a busy worker.
        processes = getattr(pool, "_processes", None) or {}
        for process in list(processes.values()):
            process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def _check_somewhere(
    texts: Sequence[str], kubernetes_version: str, schema_dir: str | None
) -> list[_Checked]:
    """_check_texts here if this process is free, else in a worker process."""
    pool = _pool()
    if pool is None:
        with _HERE:
            return _check_texts(texts, kubernetes_version, schema_dir)
    if _HERE.acquire(blocking=False):
        try:
            return _check_texts(texts, kubernetes_version, schema_dir)
        finally:
            _HERE.release()
    future: Future[list[_Checked]] = pool.submit(
        _check_texts, texts, kubernetes_version, schema_dir
    )
    try:
        return future.result()
    except BrokenProcessPool as e:
        # A worker died (OOM-killed, or could not start: a program that imports
        # the bridge needs the `if __name__ == "__main__":` guard for spawn).
        # Never a reason to fail validation: check here, now and from now on.
        _give_up_workers(e)
        with _HERE:
            return _check_texts(texts, kubernetes_version, schema_dir)


def _give_up_workers(error: BaseException) -> None:
    global _POOL_BROKEN
    with _POOL_GUARD:
        already, _POOL_BROKEN = _POOL_BROKEN, True
    if not already:
        log.warning(
            "validation worker process failed (%s); validating in this process from now on",
            error,
        )
    shutdown_workers()


class _Valid:
    """Objects found valid before, by a digest of their exact text: owner id and
    the `unchecked` note. Only valid objects are kept, so errors are always
    computed afresh. ~70 bytes an object (an int key, an interned owner id):
    ~7 MB for the 90,000 objects of 10,000 deployments."""

    LIMIT = 250_000

    def __init__(self) -> None:
        self._seen: dict[int, str | tuple[str | None, _Unchecked] | None] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(text: str, kubernetes_version: str, schema_dir: str | None) -> int:
        material = f"{kubernetes_version}\0{schema_dir}\0{text}".encode()
        return int.from_bytes(hashlib.blake2b(material, digest_size=16).digest(), "big")

    def get(self, key: int) -> tuple[str | None, _Unchecked] | None:
        if key not in self._seen:
            return None
        found = self._seen[key]
        return found if isinstance(found, tuple) else (found, None)

    def put(self, key: int, owner: str | None, unchecked: _Unchecked) -> None:
        owner = sys.intern(owner) if owner is not None else None
        with self._lock:
            if len(self._seen) >= self.LIMIT:
                self._seen.clear()  # rare; simple beats LRU here
            self._seen[key] = (owner, unchecked) if unchecked is not None else owner

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


_VALID = _Valid()


class _Unowned(Exception):
    """An object of an aggregate build carries no id of the chunk's roots."""


def _check_output(text: str, kubernetes_version: str, schema_dir: str | None) -> list[_Result]:
    """(owner, errors, unchecked) for every object of one build output."""
    texts = _split_documents(text)
    keys = [_VALID.key(t, kubernetes_version, schema_dir) for t in texts]
    known = [_VALID.get(k) for k in keys]
    todo = [t for t, hit in zip(texts, known, strict=True) if hit is None]
    try:
        fresh = iter(_check_somewhere(todo, kubernetes_version, schema_dir) if todo else [])
    except yaml.YAMLError:
        # Not one document per part after all: read the stream as kustomize wrote it.
        directory = Path(schema_dir) if schema_dir is not None else None
        docs = [d for d in yaml.load_all(text, Loader=_Loader) if d]
        return [_check_document(d, kubernetes_version, directory) for d in docs]
    out: list[_Result] = []
    for key, hit in zip(keys, known, strict=True):
        if hit is not None:
            out.append((hit[0], (), hit[1]))
            continue
        checked = next(fresh)
        if checked is None:
            continue
        if not checked[1]:
            _VALID.put(key, checked[0], checked[2])
        out.append(checked)
    return out


class _Builds:
    """How many `kubectl kustomize` chunks of this process are queued or building,
    across every checker (each target's run has its own)."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def started(self, building: Future[Any]) -> None:
        with self._lock:
            self._count += 1
        building.add_done_callback(self._done)

    def _done(self, _building: Future[Any]) -> None:
        with self._lock:
            self._count -= 1

    def busy(self) -> int:
        with self._lock:
            return self._count


_BUILDS = _Builds()


_SLOTS: threading.BoundedSemaphore | None = None
_SLOTS_GUARD = threading.Lock()


def _build_slots() -> threading.BoundedSemaphore:
    """One `kubectl kustomize` process at a time per core, across the process.

    The builds run from cores + 1 threads, so that a core is never idle while
    a thread checks its build's output; but only the processes need the
    cores. A third process at once on 2 cores only queued for the CPU while
    holding its memory (~100 MB with GOGC=400): cold `run --once` of 1,000
    deployments, whole tree's peak 405 -> 329 MB (median of 3) at the same wall time."""
    global _SLOTS
    with _SLOTS_GUARD:
        if _SLOTS is None:
            _SLOTS = threading.BoundedSemaphore(available_cpus())
        return _SLOTS


def _kustomize_text(root: Path) -> str:
    with _build_slots():
        return kustomize_text(root)


def _check_chunk(
    base: Path, folders: Sequence[str], kubernetes_version: str, schema_dir: str | None
) -> dict[str, RootCheck]:
    if len(folders) == 1:
        folder = folders[0]
        try:
            text = _kustomize_text(base / folder)
        except BuildError as e:
            return {folder: RootCheck(build_error=str(e))}
        result = RootCheck()
        for _owner, errors, unchecked in _check_output(text, kubernetes_version, schema_dir):
            result.count(errors, unchecked)
        return {folder: result}
    owner: dict[str, str] = {}
    for folder in folders:
        dep_id = _root_id(base / folder)
        if dep_id is None or dep_id in owner:
            return _check_singly(base, folders, kubernetes_version, schema_dir)
        owner[dep_id] = folder
    with tempfile.TemporaryDirectory(prefix=".validate-", dir=base) as tmp:
        parent = _write_parent(base, Path(tmp), folders)
        try:
            text = _kustomize_text(parent)
        except BuildError:
            mid = len(folders) // 2
            out = _check_chunk(base, folders[:mid], kubernetes_version, schema_dir)
            out.update(_check_chunk(base, folders[mid:], kubernetes_version, schema_dir))
            return out
    results = {f: RootCheck() for f in folders}
    try:
        for dep_id, errors, unchecked in _check_output(text, kubernetes_version, schema_dir):
            found = owner.get(str(dep_id)) if dep_id is not None else None
            if found is None:
                raise _Unowned
            results[found].count(errors, unchecked)
    except _Unowned:
        return _check_singly(base, folders, kubernetes_version, schema_dir)
    return results


def _check_singly(
    base: Path, folders: Sequence[str], kubernetes_version: str, schema_dir: str | None
) -> dict[str, RootCheck]:
    out: dict[str, RootCheck] = {}
    for folder in folders:
        out.update(_check_chunk(base, [folder], kubernetes_version, schema_dir))
    return out


# --- with Kustomize's library: one root at a time per worker process ----------

LIBRARY_BATCH = 8  # roots per task: ~80 ms of work against ~0.2 ms to hand it over


def _check_with_library(
    paths: Sequence[str], kubernetes_version: str, schema_dir: str | None
) -> list[RootCheck]:
    """In a worker process: build each root with the library and check its objects.

    Raises libkustomize.Unavailable when the library cannot be loaded here."""
    directory = Path(schema_dir) if schema_dir is not None else None
    out: list[RootCheck] = []
    for path in paths:
        try:
            docs = libkustomize.build(Path(path))
        except libkustomize.BuildFailed as e:
            out.append(RootCheck(build_error=str(e)))
            continue
        result = RootCheck()
        for doc in docs:
            _owner, errors, unchecked = _check_document(doc, kubernetes_version, directory)
            result.count(errors, unchecked)
        out.append(result)
    return out


def _library_version() -> str:
    """In a worker process: which pykustomize runs (raises Unavailable)."""
    return libkustomize.version()


_LIBRARY_LOGGED = False


class RootChecker:
    """`check_roots`, fed while the caller is still producing roots.

    With Kustomize's library, every LIBRARY_BATCH roots added go to the worker
    processes at once, so that building and checking them overlaps whatever
    the caller does meanwhile (the reconciler renders the next deployments).
    With `kubectl kustomize`, every full chunk of kustomize.CHUNK roots
    starts building on a thread at once, for the same reason. `results()`
    waits for them all, and builds in aggregate with `kubectl kustomize` the
    rest: roots short of a chunk, and whatever the library could not do (it
    is unavailable, a worker died, a batch hung)."""

    def __init__(
        self,
        base: Path,
        *,
        kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
        schema_dir: Path | None = None,
        batch: int = LIBRARY_BATCH,
    ) -> None:
        self._base = base
        self._version = kubernetes_version
        self._dir = str(schema_dir) if schema_dir is not None else None
        self._size = max(1, batch)
        self._library = kustomize_engine() == "library"
        self._seen: set[str] = set()
        self._batch: list[str] = []
        self._probe: Future[str] | None = None
        self._sent: list[tuple[list[str], Future[list[RootCheck]]]] = []
        self._kubectl: list[str] = []
        # kubectl chunks already building while the caller renders the rest.
        self._building: list[Future[dict[str, RootCheck]]] = []
        self._threads: ThreadPoolExecutor | None = None
        self._cpus = available_cpus()

    def add(self, folders: Iterable[str]) -> None:
        """Roots (folders under base) whose files are all written."""
        for folder in folders:
            if folder in self._seen:
                continue
            self._seen.add(folder)
            if not self._library:
                self._kubectl.append(folder)
                if len(self._kubectl) >= kustomize.CHUNK:
                    self._build(self._kubectl)
                    self._kubectl = []
                continue
            self._batch.append(folder)
            if len(self._batch) >= self._size:
                self._send()

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        pool = _pool() if self._library else None
        if pool is None:
            self._kubectl.extend(batch)
            return
        paths = [str(self._base / f) for f in batch]
        try:
            if self._probe is None and not _LIBRARY_LOGGED:
                self._probe = pool.submit(_library_version)
            future = pool.submit(_check_with_library, paths, self._version, self._dir)
        except (BrokenProcessPool, RuntimeError) as e:  # RuntimeError: pool shut down
            self._stop_library(e)
            self._kubectl.extend(batch)
            return
        self._sent.append((batch, future))

    def _stop_library(self, error: BaseException) -> None:
        if self._library:
            self._library = False
            _give_up_library(error, hung=isinstance(error, FutureTimeout))
        for batch, future in self._sent:
            future.cancel()
            self._kubectl.extend(batch)
        self._sent = []

    def flush(self) -> None:
        """Every root added is in: the ones short of a full batch or chunk start
        now too, so that they build while the caller goes on (the cycle begins
        the next target) instead of when `results()` is called."""
        if self._batch:
            self._send()
        if self._kubectl:
            todo, self._kubectl = sorted(self._kubectl), []
            # Spread over the cores no build holds: with another target's builds
            # under way (the cycle begins a target while the one before it
            # validates), one build of a few roots costs ~25 % less CPU than two.
            for chunk in _chunks(todo, max(1, self._cpus - _BUILDS.busy())):
                self._build(chunk)

    def results(self) -> dict[str, RootCheck]:
        """folder -> what building it and validating its objects found."""
        if self._batch:
            self._send()
        out: dict[str, RootCheck] = {}
        try:
            if self._probe is not None:
                release = self._probe.result(timeout=BUILD_TIMEOUT)
                self._log_once(release)
            for batch, future in self._sent:
                # Batches queue behind each other, so each wait is at least as
                # long as every earlier batch had: BUILD_TIMEOUT is per batch.
                checked = future.result(timeout=BUILD_TIMEOUT)
                out.update(zip(batch, checked, strict=True))
            self._sent = []
        except (libkustomize.Unavailable, BrokenProcessPool, FutureTimeout) as e:
            self._sent = [(b, f) for b, f in self._sent if b[0] not in out]
            self._stop_library(e)
        try:
            if self._kubectl:
                todo, self._kubectl = sorted(self._kubectl), []
                chunks = _chunks(todo, self._cpus)
                if len(chunks) == 1 and not self._building:
                    # One build and nothing under way: no thread for it.
                    out.update(_check_chunk(self._base, chunks[0], self._version, self._dir))
                else:
                    # The rest joins the chunks under way, spread over the threads.
                    for chunk in chunks:
                        self._build(chunk)
            for building in self._building:
                out.update(building.result())
        finally:
            self.close()
        return out

    def _build(self, chunk: Sequence[str]) -> None:
        """Start building a chunk with `kubectl kustomize` now, on a thread: the
        build (a subprocess, no GIL) overlaps the rendering of the next roots."""
        if self._threads is None:
            # One build per core, plus one, so that a core is never idle while a
            # build waits for its output to be checked.
            self._threads = ThreadPoolExecutor(
                max_workers=self._cpus + 1, thread_name_prefix="kustomize"
            )
        building = self._threads.submit(
            _check_chunk, self._base, list(chunk), self._version, self._dir
        )
        _BUILDS.started(building)
        self._building.append(building)

    def close(self) -> None:
        """Stop what has not started and wait for the builds under way: their
        scratch folder is removed after this."""
        threads, self._threads = self._threads, None
        self._building = []
        if threads is not None:
            threads.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _log_once(release: str) -> None:
        global _LIBRARY_LOGGED
        if not _LIBRARY_LOGGED:
            _LIBRARY_LOGGED = True
            log.info(
                "validation builds with Kustomize's library in worker processes: pykustomize %s",
                release,
            )


def _give_up_library(error: BaseException, *, hung: bool) -> None:
    global _LIBRARY_OFF
    with _LIBRARY_GUARD:
        already, _LIBRARY_OFF = _LIBRARY_OFF, True
    if not already:
        reason = (
            f"a build ran over {BUILD_TIMEOUT} s" if hung else str(error) or type(error).__name__
        )
        log.warning(
            "Kustomize's library failed in a validation worker (%s); "
            "building with kubectl kustomize from now on",
            reason,
        )
    # A worker stuck in Go cannot be interrupted, and a dead one left the pool
    # broken: end them all; kubectl's path starts new ones if it wants them.
    _stop_workers(kill=True)


def check_roots(
    base: Path,
    folders: Iterable[str],
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    schema_dir: Path | None = None,
) -> dict[str, RootCheck]:
    """folder -> what building it and validating its objects found."""
    todo = sorted(set(folders))
    if not todo:
        return {}
    # All roots are known: batches as even as the workers are many, at most LIBRARY_BATCH.
    workers = max(1, validation_workers())
    checker = RootChecker(
        base,
        kubernetes_version=kubernetes_version,
        schema_dir=schema_dir,
        batch=min(LIBRARY_BATCH, math.ceil(len(todo) / workers)),
    )
    checker.add(todo)
    return checker.results()


# A batch is split over the cores only when each part keeps at least this many
# roots: a kustomize process costs ~85 ms to start, then ~20 ms a root.
MIN_SPLIT = 4


def _chunks(todo: Sequence[str], cpus: int) -> list[Sequence[str]]:
    """Chunks of at most kustomize.CHUNK roots, as even as can be, for `cpus`
    + 1 threads (a core is never idle while a build waits for its output to be
    checked); their count a multiple of the threads when there are more, so
    that the last round of builds is as full as the others. A batch smaller
    than a chunk per core is still spread over the cores (each part at least
    MIN_SPLIT roots): 10 roots in two builds side by side took 0.19 s against
    0.28 s in one, on 2 cores, for ~25 % more CPU. That is the common case of
    a busy loop (a few changed deployments per target, one after the other)."""
    threads = cpus + 1
    count = math.ceil(len(todo) / kustomize.CHUNK)
    count = max(count, min(cpus, len(todo) // MIN_SPLIT))
    if count > threads:
        count = math.ceil(count / threads) * threads
    size, extra = divmod(len(todo), count)
    chunks, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        chunks.append(todo[start:end])
        start = end
    return chunks


def validate_roots(
    base: Path,
    folders: Iterable[str],
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    schema_dir: Path | None = None,
) -> dict[str, list[str]]:
    """folder -> list of errors (empty = builds and every object validates)."""
    checked = check_roots(
        base, folders, kubernetes_version=kubernetes_version, schema_dir=schema_dir
    )
    return {folder: result.problems for folder, result in sorted(checked.items())}
