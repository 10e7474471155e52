"""SQLite persistence for the local control plane.

Owns the database file and nothing else: one JSON document per listener,
deployment and revision, plus the columns the list filters need. It knows no
HTTP and no validation rules; `server.py` decides what may be stored. Every
call holds one lock, so the FastAPI thread pool can share the connection.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridge.privatefiles import create_private, narrow

Doc = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS listeners (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    compute_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    deployment_id TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS revisions_by_deployment ON revisions (deployment_id, seq);
-- A compact copy of the order: OFFSET steps through it instead of through the
-- table's pages, which hold a few whole JSON documents each (page 100 of
-- 10,000 deployments: 12 ms -> 4 ms).
CREATE INDEX IF NOT EXISTS deployments_by_seq ON deployments (seq);
"""


class DuplicateComputeId(Exception):
    """A listener with this compute_id exists already (the API answers 409)."""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0600 before SQLite opens it: the documents hold plaintext secret values.
        # SQLite gives the -wal and -shm files the database's mode when it makes
        # them; ones an older version left wider are narrowed.
        create_private(path)
        for extra in ("-wal", "-shm"):
            narrow(path.with_name(path.name + extra))
        # isolation_level=None: we open transactions ourselves, so a multi-row
        # change (deployment + its revision) is all or nothing.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, args: Sequence[Any]) -> Doc | None:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return None if row is None else _load(row[0])

    def _many(self, sql: str, args: Sequence[Any]) -> list[Doc]:
        return [_load(text) for text in self._texts(sql, args)]

    def _texts(self, sql: str, args: Sequence[Any]) -> list[str]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [str(row[0]) for row in rows]

    # --- listeners ---------------------------------------------------------

    def insert_listener(self, doc: Doc) -> None:
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO listeners (id, compute_id, body) VALUES (?, ?, ?)",
                    (doc["id"], doc["compute_id"], _dump(doc)),
                )
        except sqlite3.IntegrityError as e:
            raise DuplicateComputeId(doc["compute_id"]) from e

    def get_listener(self, listener_id: str) -> Doc | None:
        return self._one("SELECT body FROM listeners WHERE id = ?", (listener_id,))

    def list_listeners(self, limit: int, offset: int) -> list[Doc]:
        return self._many(
            "SELECT body FROM listeners ORDER BY seq LIMIT ? OFFSET ?", (limit, offset)
        )

    def update_listener(self, doc: Doc) -> None:
        with self._tx() as db:
            db.execute("UPDATE listeners SET body = ? WHERE id = ?", (_dump(doc), doc["id"]))

    def delete_listener(self, listener_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM listeners WHERE id = ?", (listener_id,)).rowcount > 0

    # --- deployments -------------------------------------------------------

    def insert_deployment(self, doc: Doc, revision: Doc) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO deployments (id, name, status, body) VALUES (?, ?, ?, ?)",
                (doc["id"], doc["name"], doc["status"], _dump(doc)),
            )
            _insert_revision(db, doc["id"], revision)

    def update_deployment(self, doc: Doc, revision: Doc | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE deployments SET status = ?, body = ? WHERE id = ?",
                (doc["status"], _dump(doc), doc["id"]),
            )
            if revision is not None:
                _insert_revision(db, doc["id"], revision)

    def get_deployment(self, deployment_id: str) -> Doc | None:
        return self._one("SELECT body FROM deployments WHERE id = ?", (deployment_id,))

    def list_deployment_texts(
        self,
        limit: int,
        offset: int,
        *,
        name_contains: str | None = None,
        status: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """A page of deployments as their stored JSON texts (the listing's hot path:
        the server sends them as they are, without decoding and re-encoding)."""
        # Oldest first: a deployment created while someone pages lands on the
        # last page instead of shifting every page after it.
        where: list[str] = []
        args: list[Any] = []
        if name_contains:
            where.append("instr(name, ?) > 0")
            args.append(name_contains)
        if status:
            where.append("status = ?")
            args.append(status)
        if ids is not None:
            where.append(f"id IN ({', '.join('?' * len(ids))})" if ids else "0")
            args.extend(ids)
        if not where:
            # The page starts at the offset-th seq, found in the index alone.
            sql = (
                "SELECT body FROM deployments WHERE seq >= (SELECT seq FROM deployments "
                "INDEXED BY deployments_by_seq ORDER BY seq LIMIT 1 OFFSET ?) "
                "ORDER BY seq LIMIT ?"
            )
            return self._texts(sql, (offset, limit))
        clause = f"WHERE {' AND '.join(where)}"
        return self._texts(
            f"SELECT body FROM deployments {clause} ORDER BY seq LIMIT ? OFFSET ?",  # noqa: S608 - only placeholders are interpolated
            (*args, limit, offset),
        )

    def delete_deployment(self, deployment_id: str) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM revisions WHERE deployment_id = ?", (deployment_id,))
            return db.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,)).rowcount > 0

    # --- revisions ---------------------------------------------------------

    def list_revisions(
        self, deployment_id: str, limit: int, offset: int, statuses: Sequence[str] | None = None
    ) -> list[Doc]:
        where = "deployment_id = ?"
        args: list[Any] = [deployment_id]
        if statuses:
            where += f" AND status IN ({', '.join('?' * len(statuses))})"
            args.extend(statuses)
        # Newest first, as the documented examples read `resources[0]`.
        return self._many(
            f"SELECT body FROM revisions WHERE {where} ORDER BY seq DESC LIMIT ? OFFSET ?",  # noqa: S608 - only placeholders are interpolated
            (*args, limit, offset),
        )

    def get_revision(self, deployment_id: str, revision_id: str) -> Doc | None:
        return self._one(
            "SELECT body FROM revisions WHERE deployment_id = ? AND id = ?",
            (deployment_id, revision_id),
        )


def _insert_revision(db: sqlite3.Connection, deployment_id: str, revision: Doc) -> None:
    db.execute(
        "INSERT INTO revisions (id, deployment_id, status, body) VALUES (?, ?, ?, ?)",
        (revision["id"], deployment_id, revision["status"], _dump(revision)),
    )


def _dump(doc: Doc) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _load(text: str) -> Doc:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("stored document is not a JSON object")
    return value
