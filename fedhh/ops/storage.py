"""SQLite files of the transports (coordinator state, party agent state): one way to open them."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from fedhh.errors import ParameterError


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """A connection in autocommit mode, shareable across threads (callers hold a lock), with a
    WAL journal and full fsync (an accepted report or reply survives a crash), schema applied."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ParameterError(f"cannot create the database {path}: {path.parent} is not a directory")
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
    except sqlite3.Error as exc:
        raise ParameterError(f"cannot open the database {path}: {exc}") from None
    return db


class Database:
    """One SQLite file behind one lock (the coordinator's and the party agent's stores)."""

    schema = ""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = open_database(self.path, self.schema)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())
