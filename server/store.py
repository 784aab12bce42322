"""The coordinator's state in SQLite: runs, registered parties, every round's requests and
replies, failures (deadlines), final results and an audit log.

Rows are only ever inserted or moved forward (a run's state, a party's last-seen time): a
refused input never changes what is stored. Requests and replies are stored as their protobuf
bytes (:mod:`fedhh.protocol.encoding`), so a restarted coordinator can replay them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedhh.errors import ParameterError
from fedhh.ops.storage import Database, open_readonly

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    party_ids TEXT NOT NULL,
    policy TEXT NOT NULL,
    deadline REAL NOT NULL,
    spec BLOB,
    result TEXT,
    error TEXT NOT NULL DEFAULT '',
    round INTEGER NOT NULL DEFAULT 0,
    phase TEXT NOT NULL DEFAULT '',
    outstanding INTEGER NOT NULL DEFAULT 0,
    failed TEXT NOT NULL DEFAULT '[]',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS parties (
    party_id TEXT PRIMARY KEY,
    n_users INTEGER NOT NULL,
    codec TEXT NOT NULL,
    source TEXT NOT NULL,
    registered REAL NOT NULL,
    last_seen REAL NOT NULL,
    budget TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS requests (
    run_id TEXT NOT NULL,
    request_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    party_id TEXT NOT NULL,
    message BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, request_id)
);
CREATE TABLE IF NOT EXISTS replies (
    run_id TEXT NOT NULL,
    request_id INTEGER NOT NULL,
    party_id TEXT NOT NULL,
    message BLOB NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (run_id, request_id)
);
CREATE TABLE IF NOT EXISTS failures (
    run_id TEXT NOT NULL,
    request_id INTEGER NOT NULL,
    party_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (run_id, request_id)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    run_id TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
"""

ACTIVE_STATES = ("waiting", "running")
FINAL_STATES = ("done", "failed", "cancelled")
# Columns added after the first release: (table, column, declaration) for older files.
_ADDED = (
    ("runs", "owner", "TEXT NOT NULL DEFAULT ''"),
    ("parties", "budget", "TEXT NOT NULL DEFAULT '{}'"),
)
_RUN_COLUMNS = (
    "run_id, state, params, party_ids, policy, deadline, spec, result, error, round, phase, "
    "outstanding, failed, created, updated, owner"
)


@dataclass
class RunRow:
    run_id: str
    state: str
    params: dict[str, Any]
    party_ids: list[str]
    policy: str
    deadline: float
    spec: bytes | None
    result: dict[str, Any] | None
    error: str
    round: int
    phase: str
    outstanding: int
    failed: list[str]
    created: float
    updated: float
    owner: str = ""


@dataclass
class PartyRow:
    party_id: str
    n_users: int
    codec: str
    source: str
    registered: float
    last_seen: float
    budget: dict[str, Any]


METRIC_HELP = {  # the coordinator's metrics read from its state file (fedhh.ops.metrics)
    "fedhh_runs": "runs by state",
    "fedhh_rounds": "rounds the runs went through, summed over the runs",
    "fedhh_requests": "requests sent to parties",
    "fedhh_replies": "replies taken from parties",
    "fedhh_party_failures": "party failures (missed deadlines, implausible replies)",
    "fedhh_parties": "registered parties",
    "fedhh_storage_errors": "writes the state file refused since the coordinator started",
    "fedhh_state_writable": "1 while the state file takes writes (health SERVING)",
}


class Store(Database):
    """Thread-safe access to one SQLite file (one connection, one lock, WAL journal)."""

    schema = _SCHEMA
    kind = "coordinator"

    def __init__(self, path: Any) -> None:
        super().__init__(path)
        with self._lock:
            for table, column, decl in _ADDED:
                have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def metric_samples(self) -> list[tuple[str, str, float, dict[str, str]]]:
        """The coordinator's metrics as its state file holds them now (:data:`METRIC_HELP`)."""
        states = dict(self._query("SELECT state, COUNT(*) FROM runs GROUP BY state"))
        out: list[tuple[str, str, float, dict[str, str]]] = [
            ("gauge", "fedhh_runs", float(states.get(st, 0)), {"state": st})
            for st in (*ACTIVE_STATES, *FINAL_STATES)
        ]
        for name, sql in (
            ("fedhh_rounds", "SELECT COALESCE(SUM(round), 0) FROM runs"),
            ("fedhh_requests", "SELECT COUNT(*) FROM requests"),
            ("fedhh_replies", "SELECT COUNT(*) FROM replies"),
            ("fedhh_party_failures", "SELECT COUNT(*) FROM failures"),
        ):
            out.append(("counter", name, float(self._query(sql)[0][0]), {}))
        parties = self._query("SELECT COUNT(*) FROM parties")[0][0]
        out.append(("gauge", "fedhh_parties", float(parties), {}))
        out.append(("counter", "fedhh_storage_errors", float(self.refused_writes), {}))
        out.append(("gauge", "fedhh_state_writable", float(self.healthy), {}))
        return out

    # --- parties -------------------------------------------------------------------------------
    def register_party(
        self, party_id: str, n_users: int, codec: str, source: str, budget: dict[str, Any]
    ) -> None:
        """A party's registration and its audit line, in one transaction."""
        now = time.time()
        with self.transaction() as db:
            self.audit_in(db, party_id, "register", "", f"{n_users} users, {codec}, {source}")
            db.execute(
                "INSERT INTO parties VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(party_id) DO UPDATE "
                "SET n_users=excluded.n_users, codec=excluded.codec, source=excluded.source, "
                "last_seen=excluded.last_seen, budget=excluded.budget",
                (party_id, n_users, codec, source, now, now, json.dumps(budget)),
            )

    def heartbeat(self, party_id: str, budget: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE parties SET last_seen=?, budget=? WHERE party_id=?",
                (time.time(), json.dumps(budget), party_id),
            )

    def parties(self) -> dict[str, tuple[int, str, str]]:
        rows = self._query("SELECT party_id, n_users, codec, source FROM parties")
        return {r[0]: (int(r[1]), str(r[2]), str(r[3])) for r in rows}

    def party_rows(self) -> dict[str, PartyRow]:
        rows = self._query(
            "SELECT party_id, n_users, codec, source, registered, last_seen, budget FROM parties "
            "ORDER BY party_id"
        )
        return {
            r[0]: PartyRow(r[0], int(r[1]), r[2], r[3], float(r[4]), float(r[5]), json.loads(r[6]))
            for r in rows
        }

    # --- runs ----------------------------------------------------------------------------------
    def insert_run(
        self,
        run_id: str,
        params: dict[str, Any],
        party_ids: list[str],
        policy: str,
        deadline: float,
        owner: str = "",
    ) -> None:
        """A new waiting run and its audit line ("start" by ``owner``), in one transaction: a
        refused write stores neither."""
        now = time.time()
        with self.transaction() as db:
            self.audit_in(db, owner, "start", run_id, json.dumps(party_ids))
            db.execute(
                "INSERT INTO runs (run_id, state, params, party_ids, policy, deadline, created, "
                "updated, owner) VALUES (?, 'waiting', ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    json.dumps(params),
                    json.dumps(party_ids),
                    policy,
                    deadline,
                    now,
                    now,
                    owner,
                ),
            )

    def run_exists(self, run_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM runs WHERE run_id=?", (run_id,)))

    def runs(self, states: tuple[str, ...] | None = None, owner: str | None = None) -> list[RunRow]:
        """Runs in creation order, of the given states and owner (None: any)."""
        sql, args = f"SELECT {_RUN_COLUMNS} FROM runs", list[Any]()
        conds = []
        if states is not None:
            conds.append(f"state IN ({', '.join('?' * len(states))})")
            args += states
        if owner is not None:
            conds.append("owner=?")
            args.append(owner)
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        return [_run_row(r) for r in self._query(sql + " ORDER BY created, run_id", args)]

    def run(self, run_id: str) -> RunRow | None:
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id=?", (run_id,))
        return _run_row(rows[0]) if rows else None

    @staticmethod
    def update_run(db: sqlite3.Connection, run_id: str, **fields: Any) -> None:
        cols = []
        vals: list[Any] = []
        for key, value in fields.items():
            if key in ("result", "failed"):
                value = json.dumps(value, default=_json_default)
            cols.append(f"{key}=?")
            vals.append(value)
        cols.append("updated=?")
        vals.append(time.time())
        db.execute(f"UPDATE runs SET {', '.join(cols)} WHERE run_id=?", (*vals, run_id))

    # --- requests, replies, failures -----------------------------------------------------------
    @staticmethod
    def insert(db: sqlite3.Connection, table: str, *values: Any) -> None:
        """A row of ``requests`` (run, request, round, party, message), ``replies`` (run,
        request, party, message) or ``failures`` (run, request, party, reason), stamped now."""
        marks = ", ".join("?" * (len(values) + 1))
        db.execute(f"INSERT INTO {table} VALUES ({marks})", (*values, time.time()))

    def requests(self, run_id: str, table: str = "requests") -> dict[int, bytes]:
        rows = self._query(f"SELECT request_id, message FROM {table} WHERE run_id=?", (run_id,))
        return {int(r[0]): bytes(r[1]) for r in rows}

    def replies(self, run_id: str) -> dict[int, bytes]:
        return self.requests(run_id, "replies")

    def has_row(self, table: str, run_id: str, request_id: int) -> bool:
        """Whether ``requests``, ``replies`` or ``failures`` holds this request."""
        sql = f"SELECT 1 FROM {table} WHERE run_id=? AND request_id=?"
        return bool(self._query(sql, (run_id, request_id)))

    def failures(self, run_id: str) -> dict[int, tuple[str, str]]:
        rows = self._query(
            "SELECT request_id, party_id, reason FROM failures WHERE run_id=?", (run_id,)
        )
        return {int(r[0]): (str(r[1]), str(r[2])) for r in rows}

    def counts(self) -> dict[str, int]:
        """Row counts per table (for checks that nothing was lost)."""
        return {
            t: int(self._query(f"SELECT COUNT(*) FROM {t}")[0][0])
            for t in ("runs", "parties", "requests", "replies", "failures", "audit")
        }

    # --- audit ---------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, run_id: str = "", detail: str = "") -> None:
        with self.transaction() as db:
            self.audit_in(db, actor, action, run_id, detail)

    @staticmethod
    def audit_in(
        db: sqlite3.Connection, actor: str, action: str, run_id: str = "", detail: str = ""
    ) -> None:
        db.execute(
            "INSERT INTO audit (at, actor, action, run_id, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, action, run_id, detail[:2000]),
        )

    def audit_log(self, run_id: str | None = None) -> list[tuple[float, str, str, str, str]]:
        if run_id is None:
            rows = self._query("SELECT at, actor, action, run_id, detail FROM audit ORDER BY id")
        else:
            rows = self._query(
                "SELECT at, actor, action, run_id, detail FROM audit WHERE run_id=? ORDER BY id",
                (run_id,),
            )
        return [(float(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def _run_row(r: Any) -> RunRow:
    return RunRow(
        r[0],
        r[1],
        json.loads(r[2]),
        json.loads(r[3]),
        r[4],
        float(r[5]),
        r[6],
        json.loads(r[7]) if r[7] else None,
        r[8],
        int(r[9]),
        r[10],
        int(r[11]),
        json.loads(r[12]),
        float(r[13]),
        float(r[14]),
        r[15],
    )


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_audit(
    path: Path, run_id: str = "", actor: str = "", last: int = 0
) -> list[dict[str, Any]]:
    """The audit log of a coordinator's state file, oldest first (``last``: only the last that
    many), read-only: the coordinator may be running, and nothing is written."""
    db = open_readonly(path, Store.kind)
    try:
        rows = db.execute(
            "SELECT id, at, actor, action, run_id, detail FROM audit WHERE (? = '' OR run_id = ?) "
            "AND (? = '' OR actor = ?) ORDER BY id",
            (run_id, run_id, actor, actor),
        ).fetchall()
    except sqlite3.Error as exc:
        raise ParameterError(f"cannot read the audit log of {path}: {exc}") from None
    finally:
        db.close()
    names = ("id", "at", "actor", "action", "run_id", "detail")
    out = [dict(zip(names, r, strict=True)) for r in rows]
    return out[-last:] if last > 0 else out
