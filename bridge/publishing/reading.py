"""Reading a clone's tree: the listing of the head (cached by commit id), blobs
through one long-lived `git cat-file --batch`, sized first when they may come
from anyone, and the last commit that touched a path. Reads only.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import IO

from bridge.formats.objects import REGULAR_FILE
from bridge.publishing.clone import _OID, Clone
from bridge.publishing.transport import (
    BASE_CONFIG,
)

log = logging.getLogger("bridge.publishing")


def parse_ls_tree(out: bytes) -> dict[str, str]:
    """path -> entry of `git ls-tree -r -z` output: a regular file's blob id,
    "<mode> <id>" for an executable, a symlink or a gitlink (objects.entry_id,
    inlined: this loop runs once per file of the repo)."""
    entries: dict[str, str] = {}
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, _kind, oid = meta.decode().split(" ")
        entries[raw_path.decode("utf-8", "surrogateescape")] = (
            oid if mode == REGULAR_FILE else f"{mode} {oid}"
        )
    return entries


_EMPTY: Mapping[str, str] = MappingProxyType({})


class TreeReader:
    """Reads the tree at a clone's local head."""

    def __init__(self, clone: Clone) -> None:
        self.clone = clone
        self._catfile: subprocess.Popen[bytes] | None = None
        # Blobs read ahead by preload_blobs(), each handed out once by read_blobs().
        # Content-addressed: a blob id names the same bytes forever.
        self._preloaded: dict[str, bytes] = {}
        # The folders ls_tree() was asked for, at one head commit.
        self._folders: tuple[str, dict[str, Mapping[str, str]]] = ("", {})

    def ls_tree(self, prefix: str) -> Mapping[str, str]:
        """path -> entry id at HEAD under `prefix` ("dir/" = folder, else one exact
        path): a regular file's blob id, "<mode> <id>" for an executable, a symlink
        or a gitlink (objects.entry_id), so that no kind of entry looks like a file.

        Read only: a folder's entries are kept per head commit (a commit's tree
        never changes) and handed out again, since filtering a target's 9,000
        entries every cycle was ~5 % of an unchanged cycle at 10,000."""
        self.clone.ensure()
        head = self.clone.local_head()
        if head is None:
            return _EMPTY
        if self.clone.listing is None or self.clone.listing[0] != head:
            self.clone.listing = None  # never a stale listing, even if ls-tree fails
            out = self.clone.must("ls-tree", "ls-tree", "-r", "-z", "--full-tree", head)
            self.clone.listing = (head, parse_ls_tree(out))
        listing = self.clone.listing[1]
        if not prefix:
            return MappingProxyType(listing)
        if not prefix.endswith("/"):
            return MappingProxyType({prefix: listing[prefix]} if prefix in listing else {})
        if self._folders[0] != head:
            self._folders = (head, {})
        folder = self._folders[1].get(prefix)
        if folder is None:
            entries = {path: oid for path, oid in listing.items() if path.startswith(prefix)}
            folder = self._folders[1][prefix] = MappingProxyType(entries)
        return folder

    def read_blob(self, blob_id: str) -> bytes:
        """The bytes of one blob, through one long-lived `git cat-file --batch`."""
        return self.read_blobs([blob_id])[blob_id]

    def preload_blobs(self, blob_ids: Sequence[str], *, max_bytes: int | None = None) -> None:
        """Read blobs ahead of their use (from the thread that synced the clone,
        while the cycle waits on the control plane); read_blobs hands each out once."""
        if blob_ids:
            self._preloaded.update(self.read_blobs(blob_ids, max_bytes=max_bytes))

    def blob_sizes(self, entries: Sequence[str], *, missing_ok: bool = False) -> dict[str, int]:
        """Blob id -> size, of those of `entries` (listing entries or ids) that are
        blobs in the clone; the rest (not an id, another kind of object, a
        symlink's or gitlink's entry) are left out. One `cat-file --batch-check`;
        nothing is read. An id the clone lacks means damage (a listing's entries
        exist: the fetch checked), LocalCloneBroken, unless `missing_ok` (an id
        from a file's content, which may name anything): then it is left out."""
        ids = [e for e in dict.fromkeys(entries) if _OID.match(e)]
        if not ids:
            return {}
        self.clone.ensure()
        result = self.clone.git(
            "cat-file", "--batch-check", input="".join(f"{i}\n" for i in ids).encode()
        )
        if result.returncode != 0:
            raise self.clone.broken("cat-file --batch-check", result.stderr)
        sizes: dict[str, int] = {}
        for line in result.stdout.decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "blob":
                sizes[parts[0]] = int(parts[2])
            elif len(parts) == 2 and parts[1] == "missing" and not missing_ok:
                raise self.clone.broken(
                    "cat-file --batch-check", f"object {parts[0]} is missing; {result.stderr}"
                )
        return sizes

    def read_blobs(
        self, blob_ids: Sequence[str], *, max_bytes: int | None = None, missing_ok: bool = False
    ) -> dict[str, bytes]:
        """Blob id -> bytes, through one long-lived `git cat-file --batch`. With many
        ids a thread writes the requests while this one reads the answers: no round
        trip per blob (a restarted bridge reads 10,000 state files back).

        With `max_bytes` the ids may come from anyone (a state file, a listing
        entry that is not a file): each is first sized by blob_sizes(), and only
        blobs of at most `max_bytes` are read; the rest are left out of the result
        and never read (blob_sizes() tells the caller why); `missing_ok` as there."""
        ids = list(dict.fromkeys(blob_ids))
        ahead = {oid: self._preloaded.pop(oid) for oid in ids if oid in self._preloaded}
        if max_bytes is not None:
            ahead = {oid: data for oid, data in ahead.items() if len(data) <= max_bytes}
            rest = [oid for oid in ids if oid not in ahead]
            sizes = self.blob_sizes(rest, missing_ok=missing_ok) if rest else {}
            ids = [oid for oid in rest if sizes.get(oid, max_bytes + 1) <= max_bytes]
            return {**ahead, **self.read_blobs(ids)} if ids else ahead
        if ahead:
            ids = [oid for oid in ids if oid not in ahead]
            return {**ahead, **self.read_blobs(ids)} if ids else ahead
        for oid in ids:
            if not _OID.match(oid):
                raise ValueError(f"not a blob id: {oid!r}")
        self.clone.ensure()
        for attempt in range(2):
            proc = self._start_catfile()
            assert proc.stdin is not None and proc.stdout is not None
            request = "".join(f"{oid}\n" for oid in ids).encode()
            writer = None
            if len(ids) > 1:
                writer = threading.Thread(target=_feed, args=(proc.stdin, request), daemon=True)
            answers: list[tuple[str, str, bytes]] = []
            try:
                if writer is None:
                    proc.stdin.write(request)
                    proc.stdin.flush()
                else:
                    writer.start()
                for _blob_id in ids:
                    header = proc.stdout.readline()
                    if not header:
                        raise BrokenPipeError
                    parts = header.decode().split()
                    if len(parts) == 2 and parts[1] == "missing":
                        answers.append((parts[0], "missing", b""))
                        continue
                    if len(parts) != 3:
                        self.close_catfile()
                        raise self.clone.broken(
                            "read_blob", f"unexpected cat-file output {header!r}"
                        )
                    answers.append(
                        (parts[0], parts[1], _read_exact(proc.stdout, int(parts[2]) + 1)[:-1])
                    )
            except (BrokenPipeError, OSError, ValueError) as e:
                self.close_catfile()
                if attempt:
                    raise self.clone.broken("read_blob", f"cat-file failed: {e!r}") from e
                continue
            finally:
                if writer is not None:
                    writer.join()
            out: dict[str, bytes] = {}
            for wanted, (oid, kind, data) in zip(ids, answers, strict=True):
                if kind == "missing":
                    raise self.clone.broken("read_blob", f"object {wanted} is missing")
                if oid != wanted:
                    self.close_catfile()
                    raise self.clone.broken("read_blob", f"cat-file answered {oid} for {wanted}")
                if kind != "blob":
                    raise ValueError(f"{wanted} is a {kind}, not a blob")
                out[wanted] = data
            return out
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_catfile(self) -> subprocess.Popen[bytes]:
        if self._catfile is None or self._catfile.poll() is not None:
            self.close_catfile()
            self._catfile = subprocess.Popen(
                ["git", *BASE_CONFIG, f"--git-dir={self.clone.path}", "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=self.clone.env,
                start_new_session=True,
            )
        return self._catfile

    def close_catfile(self) -> None:
        proc, self._catfile = self._catfile, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def landed_by(self, sha: str) -> str | None:
        """The commit of the branch's first-parent line that brought `sha` onto it:
        `sha` itself when it is on that line (a push, a squash), else the merge
        commit (a pull request merged with a merge commit). None when the head
        does not contain `sha`."""
        self.clone.ensure()
        head = self.clone.local_head()
        if head is None or self.clone.git("merge-base", "--is-ancestor", sha, head).returncode:
            return None
        if sha == head:
            return sha
        out = self.clone.must(
            "rev-list",
            "rev-list",
            "--first-parent",
            "--ancestry-path",
            "--reverse",
            f"{sha}..{head}",
        ).split()
        if not out:
            return None
        oldest = out[0].decode()
        parents = self.clone.must("rev-list", "rev-list", "--parents", "-n1", oldest).split()
        # The oldest descendant on the first-parent line: its first parent is `sha`
        # when `sha` is on that line; else it is the merge that brought `sha` in.
        return sha if len(parents) > 1 and parents[1].decode() == sha else oldest

    def last_commit_for(self, path: str) -> tuple[str, str, str, str] | None:
        """(sha, author name, author email, subject) of the last commit touching path."""
        self.clone.ensure()
        head = self.clone.local_head()
        if head is None:
            return None
        args = ["log", "-1", "--format=%H%x00%an%x00%ae%x00%s", head]
        clean = path.strip("/")
        if clean:
            args += ["--", clean]
        out = self.clone.must("log", *args).decode("utf-8", "replace").rstrip("\n")
        if not out:
            return None
        sha, name, email, subject = out.split("\0", 3)
        return sha, name, email, subject

    def close(self) -> None:
        self.close_catfile()
        self._preloaded.clear()  # read ahead for one cycle only


def _feed(stream: IO[bytes], data: bytes) -> None:
    """Write requests to a child (from a thread, while its answers are read)."""
    try:
        stream.write(data)
        stream.flush()
    except (OSError, ValueError):  # ValueError: the reader closed the pipe meanwhile
        pass  # the child died or was stopped: its reader sees that


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    chunks = []
    left = size
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            raise BrokenPipeError("cat-file ended early")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
