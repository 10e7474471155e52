"""The deployments a target's tree holds, read back from their state files:
what planning compares the listing with, and what a hand edit (drift) is
measured against. Reads a `TreeView`; never writes. Its caches are keyed by
content (blob ids, the head commit), so they are never stale, and they hold
only what the last cycle saw.

A folder whose state file is broken (pushed by anyone: nested, oversized,
naming paths outside its folder, not a file) is left as it is: never written,
never deleted, still listed in the namespace kustomization. Its deployment
fails by name until someone restores the file (README, Failure modes);
guessing could lose its escrowed Postgres password.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.errors import DeploymentError
from bridge.formats.objects import entry_kind, quote_path
from bridge.formats.paths import check_repo_path
from bridge.formats.state import MAX_STATE_BYTES, STATE_FILE, DeploymentState
from bridge.models import Deployment
from bridge.reconcile.plans import TreeView
from bridge.reconcile.reading import shown, unread_why
from bridge.untrusted import UntrustedInput

log = logging.getLogger("bridge.reconcile")

STATE_CACHE_LIMIT = 100_000
# The largest file of a deployment folder the bridge reads back to restore it:
# a sealed Secret of 1 MiB of data is ~1.4 MB; a state file could name any
# blob of the repo, so a read on its word is bounded.
FILE_MAX_BYTES = 16 * 1024 * 1024
UNREADABLE_HINT = (
    "restore the file as the bridge last committed it (`git log -- <path>`, then "
    "`git checkout <commit> -- <path>` and push); deleting the folder instead deploys "
    "it afresh, with a new generated Postgres password"
)


@dataclass
class Existing:
    """One deployment folder of the bridge's, as the tree holds it."""

    folder: str  # folder name inside the namespace dir
    state: DeploymentState
    files: dict[str, str]  # file name -> blob id, as in the tree now

    def drifted(self) -> bool:
        """Whether someone else changed the folder since the bridge wrote it.
        Listing entries name anything but a regular file as "<mode> <id>", so
        this one comparison also finds symlinks, executables and gitlinks."""
        return self.state.folder_files != self.files

    def edited(self) -> str:
        """The entries of a drifted folder that differ from the state file's record."""
        recorded = self.state.folder_files
        names = sorted(
            n for n in recorded.keys() | self.files.keys() if recorded.get(n) != self.files.get(n)
        )
        out = []
        for name in names[:10]:
            entry = self.files.get(name)
            kind = entry_kind(entry) if entry is not None else None
            what = "removed" if entry is None else "added" if name not in recorded else "changed"
            out.append(f"{quote_path(name)} ({kind or what})")
        more = f" and {len(names) - 10} more" if len(names) > 10 else ""
        return ", ".join(out) + more

    def restored(self, view: TreeView, dep: Deployment, folder_path: str) -> dict[str, bytes]:
        """The folder's files as the state file records them. Its blob ids come
        from a file anyone may have edited: each is read only if it is a blob of
        the repo of at most FILE_MAX_BYTES."""
        wanted = self.state.folder_files
        read = view.read_blobs(list(wanted.values()), max_bytes=FILE_MAX_BYTES, missing_ok=True)
        lost = sorted(f for f, b in wanted.items() if b not in read)
        if lost:
            state_path = f"{folder_path}/{STATE_FILE}"
            raise DeploymentError(
                f"cannot restore {quote_path(folder_path)}: its state file "
                f"{shown(view, state_path)} records "
                f"{', '.join(repr(f) for f in lost[:5])} as blob(s) that "
                f"{unread_why(view, wanted[lost[0]], FILE_MAX_BYTES)}",
                deployment_id=dep.id,
                deployment_name=dep.name,
                hint=f"{UNREADABLE_HINT}; if the bridge's own last commit of the folder records "
                "those blobs, the local clone is damaged: delete it from git.workdir and the "
                "bridge clones it again",
            )
        files = {fname: read[blob] for fname, blob in wanted.items()}
        files[STATE_FILE] = self.state.to_bytes()
        return files

    def check_deletable(
        self, view: TreeView, dep: Deployment, folder_path: str, keep: Mapping[str, object]
    ) -> None:
        """DeploymentError when an entry of the folder that a plan removes has a
        name git cannot put in an index (".", "..", ".git": anyone who can push
        may have made one with plumbing); other names, newlines and backslashes
        included, are removed like any file."""
        for fname in sorted(self.files):
            if fname in keep:
                continue
            path = f"{folder_path}/{fname}"
            try:
                check_repo_path(path, listed=True)
            except ValueError:
                raise DeploymentError(
                    f"its folder holds {shown(view, path)}, a name the "
                    "bridge cannot remove; nothing of the deployment is committed",
                    deployment_id=dep.id,
                    deployment_name=dep.name,
                    hint="remove that entry from the branch with a commit of your own",
                ) from None


def unreadable_error(dep: Deployment, why: str) -> DeploymentError:
    """The failure of a listed deployment whose folder's state file is broken."""
    return DeploymentError(
        f"{why}; its folder is left as it is",
        deployment_id=dep.id,
        deployment_name=dep.name,
        hint=UNREADABLE_HINT,
    )


def _detail(e: ValueError) -> str:
    """A parse error's text as a predicate: "state file: 'x' is ..." -> "'x' is ..."."""
    text = str(e)
    for prefix in ("state file: ", "state file "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def is_state_of(rel: str, namespace: str) -> bool:
    """Is `rel` (below a target's path) `<cluster>/<namespace>/<folder>/` + STATE_FILE?"""
    parts = rel.split("/")
    return len(parts) == 4 and parts[1] == namespace and parts[3] == STATE_FILE


class ExistingReader:
    """Reads the bridge's deployments out of a tree, remembering parsed state files
    by blob id and whole namespace folders by head commit."""

    def __init__(self) -> None:
        self._states: dict[str, DeploymentState] = {}  # state blob id -> parsed
        self._seen: set[str] = set()  # state blobs read this cycle
        # ns folder -> (head commit, its deployments, their state blob ids, folders
        # whose state file cannot be trusted -> why)
        self._folders: dict[str, tuple[str, dict[str, Existing], list[str], dict[str, str]]] = {}

    def begin_cycle(self) -> None:
        self._seen.clear()

    def end_cycle(self) -> None:
        """Keep only the states of folders that still exist: memory follows the
        number of deployments, not the number of revisions ever seen."""
        self._states = {blob: s for blob, s in self._states.items() if blob in self._seen}

    def knows(self, blob: str) -> bool:
        return blob in self._states

    def remember(self, blob: str, state: DeploymentState) -> None:
        """A state file this cycle writes: the next cycle finds it without reading
        it back (keyed by blob id: right whether or not the commit lands)."""
        self._states[blob] = state
        self._seen.add(blob)

    def read(
        self, view: TreeView, tree: Mapping[str, str], ns_dir: str
    ) -> tuple[dict[str, Existing], dict[str, str]]:
        """The deployments the tree holds, by id, and the folders whose state file
        cannot be trusted (folder -> why). When the branch did not move, the next
        cycle skips sorting 10,000 files into folders (12 % of an unchanged cycle
        at 10,000 deployments)."""
        head = view.head
        cached = self._folders.get(ns_dir)
        if head is not None and cached is not None and cached[0] == head:
            self._seen.update(cached[2])
            return cached[1], cached[3]
        existing, state_blobs, unreadable = self._read(view, tree, ns_dir)
        if head is not None:
            self._folders[ns_dir] = (head, existing, state_blobs, unreadable)
        else:
            self._folders.pop(ns_dir, None)
        return existing, unreadable

    def _read(
        self, view: TreeView, tree: Mapping[str, str], ns_dir: str
    ) -> tuple[dict[str, Existing], list[str], dict[str, str]]:
        # folder -> its files but the state file (kept as Existing.files, so the
        # names are interned: the same few in every folder); folder -> state blob.
        folders: dict[str, dict[str, str]] = {}
        state_ids: dict[str, str] = {}
        prefix = ns_dir + "/"
        intern = sys.intern
        for path, blob in tree.items():
            rel = path[len(prefix) :] if path.startswith(prefix) else path
            parts = rel.split("/", 1)
            if len(parts) == 2:
                files = folders.setdefault(parts[0], {})
                if parts[1] == STATE_FILE:
                    state_ids[parts[0]] = blob
                else:
                    files[intern(parts[1])] = blob
        unread = [state_id for state_id in state_ids.values() if state_id not in self._states]
        read = view.read_blobs(unread, max_bytes=MAX_STATE_BYTES) if unread else {}
        existing: dict[str, Existing] = {}
        state_blobs: list[str] = []
        unreadable: dict[str, str] = {}
        for folder, files in sorted(folders.items()):
            state_blob = state_ids.get(folder)
            if state_blob is None:
                continue
            try:
                state = self._state(view, state_blob, read, prefix + folder)
            except ValueError as e:
                path = f"{prefix}{folder}/{STATE_FILE}"
                unreadable[folder] = f"state file {shown(view, path)}: {_detail(e)}"
                continue
            self._seen.add(state_blob)
            state_blobs.append(state_blob)
            if state.deployment_id in existing:
                log.warning(
                    "two folders claim deployment %s: %s and %s; keeping the first",
                    state.deployment_id,
                    quote_path(existing[state.deployment_id].folder),
                    quote_path(folder),
                )
                continue
            existing[state.deployment_id] = Existing(folder=folder, state=state, files=files)
        return existing, state_blobs, unreadable

    def _state(
        self, view: TreeView, blob: str, read: dict[str, bytes], folder_path: str
    ) -> DeploymentState:
        """The parsed state file; ValueError (UntrustedInput) when it cannot be trusted."""
        state = self._states.get(blob)
        if state is not None:
            return state
        data = read.get(blob)
        if data is None:
            raise UntrustedInput(unread_why(view, blob, MAX_STATE_BYTES))
        state = DeploymentState.from_bytes(data)
        check_repo_path(folder_path, listed=True)
        if len(self._states) > STATE_CACHE_LIMIT:
            self._states.clear()
        self._states[blob] = state
        return state
