"""The daemon's state store: SQLite (WAL) in the state directory.

It records what exists (sets, groups, overflow volumes, their names and parameters) so a restart
or a crash brings everything back. Bitmaps live in bitmap volumes, never here.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass, fields, replace

SCHEMA = """
CREATE TABLE IF NOT EXISTS sets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    master TEXT NOT NULL,
    shadow TEXT NOT NULL,
    bitmap TEXT NOT NULL,
    chunk_size INTEGER NOT NULL,
    overflow TEXT NOT NULL DEFAULT '',
    grp TEXT NOT NULL DEFAULT '',
    copy_delay INTEGER NOT NULL DEFAULT 0,
    copy_units INTEGER NOT NULL DEFAULT 256,
    loop INTEGER NOT NULL DEFAULT 1,
    exported INTEGER NOT NULL DEFAULT 0,
    imported INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS overflows (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE
);
"""


@dataclass(frozen=True)
class SetRow:
    id: str
    name: str
    kind: str
    master: str
    shadow: str
    bitmap: str          # "" when the bitmaps live in memory only
    chunk_size: int
    overflow: str = ""   # overflow id
    grp: str = ""        # group id
    copy_delay: int = 0
    copy_units: int = 256
    loop: bool = True
    exported: bool = False
    imported: bool = False

    def with_(self, **changes: object) -> SetRow:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class GroupRow:
    id: str
    name: str


@dataclass(frozen=True)
class OverflowRow:
    id: str
    path: str


class Store:
    """Thread-safe access to the state database; every write is one transaction."""

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_dir, "state.db")
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str) -> list[tuple[object, ...]]:
        with self._lock:
            return list(self._db.execute(sql))

    # sets
    def put_set(self, row: SetRow) -> None:
        names = [f.name for f in fields(SetRow)]
        values = tuple(getattr(row, n) for n in names)
        self._write(f"INSERT OR REPLACE INTO sets ({', '.join(names)}) VALUES "
                    f"({', '.join('?' for _ in names)})", values)

    def delete_set(self, set_id: str) -> None:
        self._write("DELETE FROM sets WHERE id = ?", (set_id,))

    def sets(self) -> list[SetRow]:
        names = [f.name for f in fields(SetRow)]
        rows = self._rows(f"SELECT {', '.join(names)} FROM sets ORDER BY name")
        out = []
        for r in rows:
            d = dict(zip(names, r, strict=True))
            for b in ("loop", "exported", "imported"):
                d[b] = bool(d[b])
            out.append(SetRow(**d))  # type: ignore[arg-type]
        return out

    # groups
    def put_group(self, row: GroupRow) -> None:
        self._write("INSERT OR REPLACE INTO groups (id, name) VALUES (?, ?)", (row.id, row.name))

    def delete_group(self, group_id: str) -> None:
        self._write("DELETE FROM groups WHERE id = ?", (group_id,))

    def groups(self) -> list[GroupRow]:
        return [GroupRow(str(i), str(n)) for i, n in
                self._rows("SELECT id, name FROM groups ORDER BY name")]

    # overflow volumes
    def put_overflow(self, row: OverflowRow) -> None:
        self._write("INSERT OR REPLACE INTO overflows (id, path) VALUES (?, ?)",
                    (row.id, row.path))

    def delete_overflow(self, ov_id: str) -> None:
        self._write("DELETE FROM overflows WHERE id = ?", (ov_id,))

    def overflows(self) -> list[OverflowRow]:
        return [OverflowRow(str(i), str(p)) for i, p in
                self._rows("SELECT id, path FROM overflows ORDER BY path")]
