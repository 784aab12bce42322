"""SQLite files of the transports (coordinator state, party agent state): one way to open them."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """A connection in autocommit mode, shareable across threads (callers hold a lock), with a
    WAL journal and full fsync (an accepted report or reply survives a crash), schema applied."""
    db = sqlite3.connect(Path(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db
