"""The party agent's state in SQLite: every request it answered (with the run spec and the reply
it sent), every user report its devices submitted, each report task's tally of the reports folded
so far (:meth:`AgentStore.fold`), the credential key and the users whose credentials are
revoked, and the privacy ledger.

Handled requests let a restarted agent rebuild a run's party state exactly (the protocol's party
is deterministic given its requests) and answer a re-delivered request with the reply it already
sent, so no user ever reports twice. Reports are keyed by (run, user): a second report of a user
in a run cannot be stored. Reports are written by :class:`GroupCommit`: many devices' reports in
one transaction (one fsync), each device answered only once its report is durable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedhh.errors import ParameterError, StorageError
from fedhh.ops.storage import Database

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
CREATE TABLE IF NOT EXISTS tallies (
    run_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    tally BLOB NOT NULL,
    upto INTEGER NOT NULL,
    PRIMARY KEY (run_id, task_id)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS revoked (
    user INTEGER PRIMARY KEY,
    until_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_runs (
    run_id TEXT PRIMARY KEY,
    epsilon REAL NOT NULL,
    admitted REAL NOT NULL,
    settled REAL
);
"""

ReportRow = tuple[str, str, int, bytes]  # run, user, task, report


class AgentStore(Database):
    """Thread-safe access to the agent's SQLite file (one connection, one lock, WAL journal)."""

    schema = _SCHEMA
    kind = "party agent"

    @classmethod
    def of_party(cls, path: Path, party_id: str) -> AgentStore:
        """The state file of ``party_id``: a new file is bound to it, another party's refused
        (its privacy ledger and credential key are that party's)."""
        store = cls(path)
        owner = store.meta_default("party-id", party_id.encode()).decode(errors="replace")
        if owner != party_id:
            store.close()
            raise ParameterError(f"{path} is the state file of party {owner}, not of {party_id}")
        return store

    # --- handled requests ----------------------------------------------------------------------
    def save_handled(
        self, run_id: str, request_id: int, spec: bytes, request: bytes, reply: bytes
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO handled VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, request_id, spec, request, reply, time.time()),
            )

    def reply_for(self, run_id: str, request_id: int) -> bytes | None:
        rows = self._query(
            "SELECT reply FROM handled WHERE run_id=? AND request_id=?", (run_id, request_id)
        )
        return bytes(rows[0][0]) if rows else None

    def handled(self, run_id: str) -> list[tuple[bytes, bytes, bytes]]:
        """(spec, request, reply) of every request of the run, in request order."""
        rows = self._query(
            "SELECT spec, request, reply FROM handled WHERE run_id=? ORDER BY request_id",
            (run_id,),
        )
        return [(bytes(a), bytes(b), bytes(c)) for a, b, c in rows]

    # --- device reports ------------------------------------------------------------------------
    def add_reports(self, rows: Sequence[ReportRow]) -> None:
        """Store reports in one transaction (a user's second report in a run is ignored)."""
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO reports VALUES (?, ?, ?, ?, ?)", [(*r, now) for r in rows]
            )

    def add_report(self, run_id: str, user_id: str, task_id: int, report: bytes) -> bool:
        """Store one report; False (nothing changes) if the user already reported."""
        if self.has_reported(run_id, user_id):
            return False
        self.add_reports([(run_id, user_id, task_id, report)])
        return True

    def has_reported(self, run_id: str, user_id: str) -> bool:
        rows = self._query("SELECT 1 FROM reports WHERE run_id=? AND user_id=?", (run_id, user_id))
        return bool(rows)

    def reported_users(self, run_id: str) -> list[str]:
        return [
            str(r[0]) for r in self._query("SELECT user_id FROM reports WHERE run_id=?", (run_id,))
        ]

    def reported_ids(self, run_id: str) -> np.ndarray:
        """The (numeric) user ids that reported in the run."""
        ids = [int(u) for u in self.reported_users(run_id) if u.isdigit()]
        return np.asarray(ids, dtype=np.int64)

    def stored_among(self, run_id: str, users: np.ndarray) -> np.ndarray:
        """Which of ``users`` have a report stored in the run (a mask)."""
        found: set[int] = set()
        ids = [str(int(u)) for u in users]
        for i in range(0, len(ids), 500):  # (SQLite's limit on an IN list's parameters)
            part = ids[i : i + 500]
            rows = self._query(
                f"SELECT user_id FROM reports WHERE run_id=? AND user_id IN "
                f"({','.join('?' * len(part))})",
                (run_id, *part),
            )
            found.update(int(r[0]) for r in rows)
        return np.array([int(u) in found for u in users], dtype=bool)

    def unfolded_reports(
        self, run_id: str, task_id: int, limit: int
    ) -> tuple[list[int], list[bytes]]:
        """Up to ``limit`` of the task's reports not yet folded into its tally: (row ids,
        reports), oldest first. Rows get increasing ids as they are written (one writer, none
        deleted), so they are the task's rows after the last one folded: a range of the table,
        not a scan of every report the task has had."""
        rows = self._query(
            "SELECT rowid, report FROM reports WHERE rowid > "
            "COALESCE((SELECT upto FROM tallies WHERE run_id=?1 AND task_id=?2), 0) "
            "AND run_id=?1 AND task_id=?2 ORDER BY rowid LIMIT ?3",
            (run_id, task_id, limit),
        )
        return [int(r[0]) for r in rows], [bytes(r[1]) for r in rows]

    def tally(self, run_id: str, task_id: int) -> bytes | None:
        """The task's tally of its folded reports (:class:`~fedhh.oracles.Tally` bytes)."""
        rows = self._query(
            "SELECT tally FROM tallies WHERE run_id=? AND task_id=?", (run_id, task_id)
        )
        return bytes(rows[0][0]) if rows else None

    def fold(self, run_id: str, task_id: int, tally: bytes, upto: int) -> None:
        """Store the task's new tally, which covers its reports up to row ``upto``, in one
        write: the tally and the reports after its row are the task's reports, each once,
        whenever the agent stops. The reports stay as they came (the record of what each user
        sent)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO tallies VALUES (?, ?, ?, ?)", (run_id, task_id, tally, upto)
            )

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
        return int(self._query(sql, args)[0][0])

    # --- key and privacy ledger ----------------------------------------------------------------
    def meta(self, key: str) -> bytes | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return bytes(rows[0][0]) if rows else None

    def meta_default(self, key: str, value: bytes) -> bytes:
        """The stored value of ``key``, storing ``value`` first if there is none."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return bytes(row[0])

    # --- revoked device credentials ------------------------------------------------------------
    def revoke(self, users: Sequence[int], until_ms: int) -> None:
        """Void every credential of ``users`` issued up to ``until_ms`` (a later revocation of
        the same user moves the time on)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO revoked VALUES (?, ?) ON CONFLICT(user) DO UPDATE "
                "SET until_ms = max(until_ms, excluded.until_ms)",
                [(int(u), int(until_ms)) for u in users],
            )

    def revocations(self) -> dict[int, int]:
        """user → the time (ms) up to which its credentials are void."""
        return {int(u): int(t) for u, t in self._query("SELECT user, until_ms FROM revoked")}

    def budget_runs(self) -> dict[str, tuple[float, bool]]:
        """run → (ε, settled) of every run the ledger admitted."""
        rows = self._query("SELECT run_id, epsilon, settled FROM budget_runs")
        return {str(r[0]): (float(r[1]), r[2] is not None) for r in rows}

    def admit_run(self, run_id: str, epsilon: float) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO budget_runs VALUES (?, ?, ?, NULL)",
                (run_id, epsilon, time.time()),
            )

    def settle_run(self, run_id: str, spent: np.ndarray) -> None:
        """Mark the run settled and store the users' new ε totals, in one transaction."""
        blob = np.ascontiguousarray(spent, dtype="<f8").tobytes()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO meta VALUES ('spent', ?) ON CONFLICT(key) DO UPDATE "
                "SET value=excluded.value",
                (blob,),
            )
            db.execute("UPDATE budget_runs SET settled=? WHERE run_id=?", (time.time(), run_id))


@dataclass(eq=False)
class _Waiter:
    rows: Sequence[ReportRow]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GroupCommit:
    """Writes reports for many threads with one transaction per batch: a caller of :meth:`write`
    returns once its rows are durable (so an acknowledged report survives a crash), and rows
    queued while a commit is in flight go into the next one. A commit of fewer than
    ``min_rows`` rows waits up to ``linger`` seconds for more (fewer fsyncs under load, at most
    that much more latency)."""

    def __init__(
        self,
        store: AgentStore,
        max_rows: int = 50_000,
        min_rows: int = 64,
        linger: float = 0.002,
    ) -> None:
        self.store = store
        self.max_rows = max_rows
        self.min_rows = min_rows
        self.linger = linger
        self._events = threading.local()
        self.cond = threading.Condition()
        self.pending: list[_Waiter] = []
        self.closed = False
        self.commits = 0
        self.thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self.thread.start()

    def write(self, rows: Sequence[ReportRow]) -> None:
        """Store ``rows`` durably (raises StorageError if the write failed)."""
        done = getattr(self._events, "event", None)  # one event per writing thread
        if done is None:
            done = self._events.event = threading.Event()
        done.clear()
        waiter = _Waiter(rows, done)
        with self.cond:
            if self.closed:
                raise StorageError("the agent is shutting down")
            self.pending.append(waiter)
            self.cond.notify()
        waiter.done.wait()
        if waiter.error is not None:
            raise StorageError(f"reports not stored: {waiter.error}")

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.thread.join()

    def _take(self) -> list[_Waiter]:
        with self.cond:
            while not self.pending and not self.closed:
                self.cond.wait()
            end = time.monotonic() + self.linger
            while not self.closed and sum(len(w.rows) for w in self.pending) < self.min_rows:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            batch: list[_Waiter] = []
            n = 0
            while self.pending and (not batch or n + len(self.pending[0].rows) <= self.max_rows):
                w = self.pending.pop(0)
                batch.append(w)
                n += len(w.rows)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            error: BaseException | None = None
            try:
                self.store.add_reports(list(_rows(batch)))
                self.commits += 1
            except Exception as exc:  # reported to every waiter of the batch
                error = exc
            for w in batch:
                w.error = error
                w.done.set()


def _rows(batch: Iterable[_Waiter]) -> Iterable[ReportRow]:
    for w in batch:
        yield from w.rows
