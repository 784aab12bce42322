"""SQLite files of the transports (coordinator state, party agent state): one way to open them."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedhh.errors import ParameterError, StorageError

SCHEMA_VERSION = 1  # of the identity row; a file of a newer fedhh is refused
_IDENTITY = """
CREATE TABLE IF NOT EXISTS fedhh_identity (
    kind TEXT NOT NULL,
    schema_version INTEGER NOT NULL
);
"""


def open_database(path: Path, schema: str, kind: str = "") -> sqlite3.Connection:
    """A connection in autocommit mode, shareable across threads (callers hold a lock), with a
    WAL journal and full fsync (an accepted report or reply survives a crash), schema applied.

    A file that exists must be what it claims (``kind``: whose state it holds): an empty file, a
    file that is not SQLite, one that fails SQLite's integrity check or one of another kind is
    refused with one line (ParameterError) and left as it is, so no state is lost silently by
    starting afresh over it. A path that does not exist yet gets a new database, built aside and
    linked into place whole, so a process opening the same path meanwhile never sees it empty."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ParameterError(f"cannot create the database {path}: {path.parent} is not a directory")
    memory = str(path) == ":memory:"
    if not memory and not path.exists():
        _create(path, schema, kind)
    existed = not memory
    if existed and (not path.is_file() or path.stat().st_size == 0):
        what = "not a regular file" if not path.is_file() else "empty"
        raise ParameterError(
            f"{path} is {what}, not a fedhh {kind + ' ' if kind else ''}state file: refusing to "
            "start afresh over "
            "it (move it away to start with new state, or restore it from a backup)"
        )
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if existed:
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                found = " ".join(str(check[0] if check else "no answer").split())  # one line
                raise ParameterError(
                    f"{path} is damaged (SQLite's integrity check: {found}); restore it from a "
                    "backup"
                )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        if kind:
            _check_identity(db, path, kind, existed)
        db.executescript(schema)
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        raise ParameterError(f"cannot open the database {path}: {exc}") from None
    except ParameterError:
        if db is not None:
            db.close()
        raise
    return db


def _create(path: Path, schema: str, kind: str) -> None:
    """A new database at ``path`` (schema and identity row written), unless another process made
    one there first; built under a private name and hard-linked into place, never half made."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    try:
        db = sqlite3.connect(aside, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            if kind:
                _check_identity(db, aside, kind, existed=False)
            db.executescript(schema)
        finally:
            db.close()
        os.link(aside, path)
    except FileExistsError:
        pass  # another process created it first: opened (and checked) as an existing file
    except (sqlite3.Error, OSError) as exc:
        raise ParameterError(f"cannot create the database {path}: {exc}") from None
    finally:
        for leftover in (
            aside,
            aside.with_name(aside.name + "-wal"),
            aside.with_name(aside.name + "-shm"),
        ):
            leftover.unlink(missing_ok=True)


def _identity(db: sqlite3.Connection) -> tuple[set[str], tuple[Any, ...] | None]:
    """The file's tables and its identity row (kind, schema version), if it has one."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "fedhh_identity" not in tables:
        return tables, None
    return tables, db.execute("SELECT kind, schema_version FROM fedhh_identity").fetchone()


def _not_of_kind(path: Path, kind: str, tables: set[str], row: tuple[Any, ...] | None) -> None:
    """Refuse a file whose identity row names another kind or a newer schema, or that has no
    row and tables that are not ``kind``'s (a file of an earlier fedhh is taken by its tables)."""
    if row is None:
        if tables and not _looks_like(tables, kind):
            raise ParameterError(f"{path} is a SQLite file but not a fedhh {kind} state file")
        return
    if row[0] != kind:
        raise ParameterError(f"{path} is a fedhh {row[0]} state file, not the {kind}'s")
    if int(row[1]) > SCHEMA_VERSION:
        raise ParameterError(
            f"{path} was written by a newer fedhh (state schema {row[1]}, this one reads "
            f"{SCHEMA_VERSION})"
        )


def _check_identity(db: sqlite3.Connection, path: Path, kind: str, existed: bool) -> None:
    """The file's identity row: written when the file is new (or from a fedhh that wrote none),
    else checked."""
    tables, row = _identity(db)
    if existed:
        _not_of_kind(path, kind, tables, row)
    if row is None:
        db.executescript(_IDENTITY)
        db.execute("INSERT INTO fedhh_identity VALUES (?, ?)", (kind, SCHEMA_VERSION))


def open_readonly(path: Path, kind: str) -> sqlite3.Connection:
    """An existing state file of ``kind``, read-only (its service may be running; nothing is
    written, not even its identity row); the same refusals as :func:`open_database`."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ParameterError(f"{path}: no fedhh {kind} state file there")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ParameterError(f"cannot open the database {path}: {exc}") from None
    try:
        _not_of_kind(path, kind, *_identity(db))
    except sqlite3.Error as exc:
        db.close()
        raise ParameterError(f"cannot open the database {path}: {exc}") from None
    except ParameterError:
        db.close()
        raise
    return db


_TABLES = {"coordinator": {"runs", "parties"}, "party agent": {"handled", "budget_runs"}}


def _looks_like(tables: set[str], kind: str) -> bool:
    """Whether a file without an identity row (an earlier fedhh's) holds ``kind``'s tables."""
    return _TABLES.get(kind, set()) <= tables


class Database:
    """One SQLite file behind one lock (the coordinator's and the party agent's stores). Every
    write is a :meth:`transaction`; one the file refuses (disk full, I/O error, read-only) raises
    :class:`~fedhh.errors.StorageError` with nothing written and turns :attr:`healthy` off until
    a transaction commits again (:attr:`on_health` is told of each change: the services' health
    checks)."""

    schema = ""
    kind = ""  # whose state the file holds (its identity row; see open_database)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = open_database(self.path, self.schema, self.kind)
        self._lock = threading.Lock()
        self.healthy = True  # the last transaction committed
        self.refused_writes = 0  # transactions the file refused since this process started
        self.on_health: Callable[[bool], None] | None = None  # told when that changes

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed whole, or (an error inside it) rolled back whole."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                self.refused_writes += 1
                self._set_health(False)
                raise StorageError(
                    f"the {self.kind}'s state file {self.path} refused a write ({exc}); nothing "
                    "was stored"
                ) from None
            self._set_health(True)

    def _set_health(self, ok: bool) -> None:
        if ok != self.healthy:
            self.healthy = ok
            if self.on_health is not None:
                self.on_health(ok)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())
