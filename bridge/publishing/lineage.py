"""What a target's clone says about its deployment folders, for the health read-back.

Owns the git side of SPEC §8's "synced": `CloneLineage` is the `TreeReader`
of bridge.health.syncing over a target's clone (does it hold a commit, does
one commit descend from another, which tree had a folder at a commit), and
says for each deployment folder which commit last changed it and when
(`folder_changes`), read from the branch as the remote has it (the tracking
ref: what Argo CD and Flux can fetch), never from unpushed local commits.

Reads only: no fetch, no ref moves. A sha a consumer reports that the clone
does not hold (pushed after our last fetch, or on a branch we never fetch) is
`has_commit() == False`, so the deployment is "unknown" until the next
cycle's fetch brings it; never "synced". Shas come from outside (Argo CD,
webhooks) and are checked to be object ids before they reach git; every git
process has a deadline and every output a byte cap; a failure is an answer
of "not known" plus a line in `problems`, never an exception into the loop.

Batched, because a cycle asks this for every deployment: `answer(questions)`
takes what a first pass of bridge.health.assessing recorded
(`syncing.Questions`) and answers it in one `cat-file --batch-check` and one
`rev-list` per applied commit; answers are cached (objects never change).
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import NamedTuple, TypeVar

from bridge.formats.state import STATE_FILE
from bridge.health.syncing import Questions
from bridge.publishing.clone import Clone
from bridge.publishing.transport import BASE_CONFIG

OID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
TIMEOUT = 60.0  # seconds of one git process; a 10k-commit history walks in < 1 s
MAX_OUTPUT = 64 << 20  # bytes read from one git process
MAX_WALK = 50_000  # commits of one ancestry or folder walk
MAX_WALKS = 8  # applied commits whose ancestry is kept as a set
MAX_CACHE = 200_000  # answers kept per kind (20 deployments' worth of each, x10k)
# Each record starts with an empty NUL-terminated field: file names (the
# other NUL-terminated fields of `log -z --name-only`) are never empty, so a
# name cannot pass for the start of a record, whatever bytes it holds.
_LOG_FORMAT = "%x00%H %ct %(trailers:key=Revision-Id,valueonly,separator=%x2c)"

K = TypeVar("K")
V = TypeVar("V")


class FolderChange(NamedTuple):
    """The last commit that changed a deployment folder on the branch."""

    sha: str
    committed_at: datetime
    revision_id: str | None  # its `Revision-Id` trailer: a bridge commit's revision


def _keep(cache: dict[K, V], key: K, value: V) -> V:
    # Insertion order is age: the oldest answer goes first when the cache is full.
    if len(cache) >= MAX_CACHE:
        del cache[next(iter(cache))]
    cache[key] = value
    return value


def _plain_folder(folder: str) -> bool:
    """A repo-relative folder that can be named in `<sha>:<folder>` on one line."""
    return not any(c in folder for c in "\n\r\0") and not folder.startswith(("/", "-"))


class CloneLineage:
    """bridge.health.syncing.TreeReader over one target's clone, cached."""

    def __init__(
        self,
        clone: Clone,
        *,
        timeout: float = TIMEOUT,
        max_walk: int = MAX_WALK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clone = clone
        self.timeout = timeout
        self.max_walk = max_walk
        self._clock = clock
        self._commits: dict[str, bool] = {}  # present commits only: a fetch may add one
        self._ancestry: dict[tuple[str, str], bool] = {}
        self._trees: dict[tuple[str, str], str | None] = {}
        self._walks: dict[str, tuple[frozenset[str], bool]] = {}  # sha -> (ancestors, complete)
        self._changes: dict[str, tuple[str, dict[str, FolderChange]]] = {}  # ns_dir -> (head, ...)
        self.problems: list[str] = []  # what git refused since the caller last looked

    # -- the TreeReader protocol ----------------------------------------------------

    def has_commit(self, sha: str) -> bool:
        if not OID.fullmatch(sha):
            return False
        if sha in self._commits:
            return True
        result = self._git("cat-file", "-e", f"{sha}^{{commit}}")
        return result is not None and result[0] == 0 and _keep(self._commits, sha, True)

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        if not (OID.fullmatch(ancestor) and OID.fullmatch(descendant)):
            return False
        if ancestor == descendant:
            return True
        key = (ancestor, descendant)
        if key in self._ancestry:
            return self._ancestry[key]
        walked = self._walks.get(descendant)
        if walked is not None and (ancestor in walked[0] or walked[1]):
            return _keep(self._ancestry, key, ancestor in walked[0])
        result = self._git("merge-base", "--is-ancestor", ancestor, descendant)
        if result is None or result[0] not in (0, 1):
            return False  # not cached: git failed, the next cycle asks again
        return _keep(self._ancestry, key, result[0] == 0)

    def folder_tree(self, sha: str, folder: str) -> str | None:
        key = (sha, folder)
        if key in self._trees:
            return self._trees[key]
        if not OID.fullmatch(sha) or not _plain_folder(folder):
            return None
        self._check([key])
        return self._trees.get(key)

    # -- batched answers ---------------------------------------------------------------

    def answer(self, questions: Questions) -> None:
        """Answer what a first pass recorded (bridge.health.syncing.Questions) in
        as few git processes as it takes, so that the second pass asks nothing."""
        trees = [
            (sha, folder)
            for sha, folder in questions.trees
            if (sha, folder) not in self._trees and OID.fullmatch(sha) and _plain_folder(folder)
        ]
        commits = {
            sha
            for sha in questions.commits | {d for _, d in questions.ancestry}
            if OID.fullmatch(sha) and sha not in self._commits
        }
        self._check(trees, commits)
        # One walk per applied commit that many deployments ask about (most
        # first): with one Application per deployment they usually share HEAD.
        by_descendant: dict[str, int] = {}
        for ancestor, descendant in questions.ancestry:
            if (ancestor, descendant) not in self._ancestry and descendant in self._commits:
                by_descendant[descendant] = by_descendant.get(descendant, 0) + 1
        for descendant in sorted(by_descendant, key=lambda d: -by_descendant[d])[:MAX_WALKS]:
            self._walk(descendant)

    def _check(self, trees: list[tuple[str, str]], commits: Iterable[str] = ()) -> None:
        """One `cat-file --batch-check`: which commits exist, which tree each folder had."""
        shas = sorted(commits)
        names = [*shas, *(f"{s}^{{tree}}" if not f else f"{s}:{f}" for s, f in trees)]
        if not names:
            return
        result = self._git("cat-file", "--batch-check", input="".join(n + "\n" for n in names))
        if result is None or result[0] != 0:
            return
        lines = result[1].decode("utf-8", "replace").splitlines()
        if len(lines) != len(names):
            self.problems.append("cat-file --batch-check answered out of step")
            return
        for sha, line in zip(shas, lines[: len(shas)], strict=True):
            parts = line.split()
            if len(parts) == 3 and parts[1] == "commit" and parts[0] == sha:
                _keep(self._commits, sha, True)
        for key, line in zip(trees, lines[len(shas) :], strict=True):
            parts = line.split()
            found = parts[0] if len(parts) == 3 and parts[1] == "tree" else None
            _keep(self._trees, key, found if found and OID.fullmatch(found) else None)

    def _walk(self, descendant: str) -> None:
        result = self._git("rev-list", f"--max-count={self.max_walk}", descendant)
        if result is None or result[0] != 0:
            return
        ancestors = frozenset(result[1].decode("ascii", "replace").split())
        if len(self._walks) >= MAX_WALKS:
            del self._walks[next(iter(self._walks))]
        self._walks[descendant] = (ancestors, len(ancestors) < self.max_walk)

    # -- which commit last changed each folder --------------------------------------------

    def head(self) -> str | None:
        """The branch as the remote has it (as last fetched or pushed)."""
        return self.clone.rev(self.clone.tracking_ref)

    def first_parents(self, head: str, limit: int) -> list[str]:
        """The branch's commits from `head` back along first parents, newest
        first, at most `limit` (the commits a consumer of the branch applies:
        in pull-request mode, the merges). Empty when git cannot say."""
        if not OID.fullmatch(head) or limit < 1:
            return []
        result = self._git("rev-list", "--first-parent", f"--max-count={limit}", head)
        if result is None or result[0] != 0:
            return []
        return [s for s in result[1].decode("ascii", "replace").split() if OID.fullmatch(s)]

    def state_files(self, head: str, prefix: str) -> dict[str, str]:
        """path -> blob id of every state file under `prefix` at `head` (one
        `ls-tree`, bounded); empty when git cannot say."""
        if not OID.fullmatch(head):
            return {}
        args = ["ls-tree", "-r", "-z", "--full-tree", head]
        if prefix.strip("/"):
            args += ["--", prefix.strip("/") + "/"]
        result = self._git(*args)
        if result is None or result[0] != 0:
            return {}
        found: dict[str, str] = {}
        for record in result[1].split(b"\0"):
            meta, _, raw_path = record.partition(b"\t")
            parts = meta.split(b" ")
            path = raw_path.decode("utf-8", "surrogateescape")
            if len(parts) == 3 and parts[1] == b"blob" and path.endswith("/" + STATE_FILE):
                found[path] = parts[2].decode("ascii", "replace")
        return found

    def folder_changes(
        self, head: str, ns_dir: str, folders: Iterable[str]
    ) -> dict[str, FolderChange]:
        """folder -> the last commit on the branch up to `head` that changed it
        (first-parent: in pull-request mode, the merge that brought it to the
        branch). Kept per namespace folder and brought forward from the last
        head with only the commits since; a folder not found within the walk's
        bounds is left out (its deployment's sync is then unknown)."""
        wanted = {f for f in folders if _plain_folder(f)}
        known_head, known = self._changes.get(ns_dir, ("", {}))
        if known_head and known_head != head and self.is_ancestor(known_head, head):
            newer = self._log(f"{known_head}..{head}", ns_dir, None)
            if newer is not None:
                known = {**known, **newer}
                known_head = head
        if known_head != head or not wanted <= set(known):
            found = self._log(head, ns_dir, wanted)
            if found is None:
                return {f: known[f] for f in wanted if f in known and known_head == head}
            known, known_head = found, head
        self._changes[ns_dir] = (known_head, known)
        return {f: known[f] for f in wanted if f in known}

    def _log(
        self, revs: str, ns_dir: str, wanted: set[str] | None
    ) -> dict[str, FolderChange] | None:
        """The newest change of each folder under `ns_dir` in `revs`; with
        `wanted`, the walk stops once each of them is found."""
        found: dict[str, FolderChange] = {}
        prefix = f"{ns_dir.strip('/')}/" if ns_dir.strip("/") else ""
        reader = _LogReader(prefix, found)

        def feed(chunk: bytes) -> bool:
            reader.feed(chunk)
            return wanted is not None and wanted <= set(found)

        args = [
            "log",
            "-z",
            "--no-renames",
            "--first-parent",
            "--diff-merges=first-parent",
            "--name-only",
            f"--max-count={self.max_walk}",
            f"--format={_LOG_FORMAT}",
            revs,
            "--",
            prefix or ".",
        ]
        code = self._stream(args, feed)
        if code is None:
            return None
        reader.feed(b"\0")  # the last field is whole at the end of the output
        return found

    # -- running git ----------------------------------------------------------------------

    def _git(self, *args: str, input: str | None = None) -> tuple[int, bytes] | None:
        result = self.clone.git(
            *args, input=input.encode() if input is not None else None, timeout=self.timeout
        )
        if result.returncode not in (0, 1) or len(result.stdout) > MAX_OUTPUT:
            self.problems.append(f"git {args[0]}: {result.stderr.strip()[-200:] or 'failed'}")
            return None
        return result.returncode, result.stdout

    def _stream(self, args: list[str], feed: Callable[[bytes], bool]) -> int | None:
        """Run git, handing its output to `feed` as it comes; stop it when `feed`
        says it has enough, at the deadline or past MAX_OUTPUT bytes. The exit
        code (0 when stopped early on purpose), or None when it failed."""
        argv = ["git", *BASE_CONFIG, f"--git-dir={self.clone.path}", *args]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(self.clone.env),
            start_new_session=True,
        )
        assert proc.stdout is not None
        fd, total, done = proc.stdout.fileno(), 0, False
        deadline = self._clock() + self.timeout
        try:
            while not done:
                left = deadline - self._clock()
                if left <= 0 or total > MAX_OUTPUT:
                    self.problems.append(
                        f"git {args[0]}: over {self.timeout:g}s or {MAX_OUTPUT} bytes"
                    )
                    return None
                ready, _, _ = select.select([fd], [], [], min(left, 1.0))
                if not ready:
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                total += len(chunk)
                done = feed(chunk)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            code = proc.wait()
        if done:
            return 0
        if code != 0:
            self.problems.append(f"git {args[0]} exited with {code}")
            return None
        return code


class _LogReader:
    """Parses `git log -z --name-only --format=_LOG_FORMAT` as it streams in:
    per commit an empty field, `<sha> <ct> <trailer>`, then its file names."""

    def __init__(self, prefix: str, found: dict[str, FolderChange]) -> None:
        self.prefix = prefix
        self.found = found
        self.pending = bytearray()
        self.change: FolderChange | None = None
        self.header_next = False

    def feed(self, chunk: bytes) -> None:
        self.pending.extend(chunk)
        while (end := self.pending.find(b"\0")) >= 0:
            field = bytes(self.pending[:end])
            del self.pending[: end + 1]
            self._field(field)

    def _field(self, field: bytes) -> None:
        if not field:
            self.header_next = True
            return
        if self.header_next:
            self.header_next = False
            self.change = _header(field)
            return
        if self.change is None:
            return
        path = field.removeprefix(b"\n").decode("utf-8", "surrogateescape")
        if not path.startswith(self.prefix):
            return
        inner, sep, _rest = path[len(self.prefix) :].partition("/")
        if sep and inner:  # a file inside a deployment folder, not the namespace's own
            self.found.setdefault(self.prefix + inner, self.change)


def _header(raw: bytes) -> FolderChange | None:
    fields = raw.decode("utf-8", "replace").split(" ", 2)
    if len(fields) < 2 or not OID.fullmatch(fields[0]) or not fields[1].isdigit():
        return None
    trailer = fields[2].strip() if len(fields) == 3 else ""
    return FolderChange(
        sha=fields[0],
        committed_at=datetime.fromtimestamp(int(fields[1]), UTC),
        revision_id=trailer if _UUID.fullmatch(trailer) else None,
    )
