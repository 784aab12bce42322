"""The party agent's state in SQLite: every request it answered (with the run spec and the reply
it sent) and every user report its devices submitted.

Handled requests let a restarted agent rebuild a run's party state exactly (the protocol's party
is deterministic given its requests) and answer a re-delivered request with the reply it already
sent, so no user ever reports twice. Reports are keyed by (run, user): a second report of a user
in a run cannot be stored.
"""

from __future__ import annotations

import sqlite3
import time

from fedhh.storage import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (
    run_id TEXT NOT NULL,
    request_id INTEGER NOT NULL,
    spec BLOB NOT NULL,
    request BLOB NOT NULL,
    reply BLOB NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (run_id, request_id)
);
CREATE TABLE IF NOT EXISTS reports (
    run_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    report BLOB NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (run_id, user_id)
);
CREATE INDEX IF NOT EXISTS reports_by_task ON reports (run_id, task_id);
"""


class AgentStore(Database):
    """Thread-safe access to the agent's SQLite file (one connection, one lock, WAL journal)."""

    schema = _SCHEMA

    # --- handled requests ----------------------------------------------------------------------
    def save_handled(
        self, run_id: str, request_id: int, spec: bytes, request: bytes, reply: bytes
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO handled VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, request_id, spec, request, reply, time.time()),
            )

    def reply_for(self, run_id: str, request_id: int) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT reply FROM handled WHERE run_id=? AND request_id=?", (run_id, request_id)
            ).fetchone()
        return bytes(row[0]) if row else None

    def handled(self, run_id: str) -> list[tuple[bytes, bytes, bytes]]:
        """(spec, request, reply) of every request of the run, in request order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT spec, request, reply FROM handled WHERE run_id=? ORDER BY request_id",
                (run_id,),
            ).fetchall()
        return [(bytes(a), bytes(b), bytes(c)) for a, b, c in rows]

    # --- device reports ------------------------------------------------------------------------
    def add_report(self, run_id: str, user_id: str, task_id: int, report: bytes) -> bool:
        """Store a user's report; False (nothing changes) if the user already reported."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO reports VALUES (?, ?, ?, ?, ?)",
                    (run_id, user_id, task_id, report, time.time()),
                )
            except sqlite3.IntegrityError:
                return False
        return True

    def has_reported(self, run_id: str, user_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM reports WHERE run_id=? AND user_id=?", (run_id, user_id)
            ).fetchone()
        return row is not None

    def task_reports(self, run_id: str, task_id: int) -> list[bytes]:
        with self._lock:
            rows = self._db.execute(
                "SELECT report FROM reports WHERE run_id=? AND task_id=? ORDER BY at, user_id",
                (run_id, task_id),
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    def count_reports(self, run_id: str | None = None, task_id: int | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM reports", list[object]()
        conds = []
        if run_id is not None:
            conds.append("run_id=?")
            args.append(run_id)
        if task_id is not None:
            conds.append("task_id=?")
            args.append(task_id)
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])
