"""The daemon's state store: SQLite (WAL) in the state directory.

It records what exists (sets, groups, overflow volumes, their names and parameters) so a restart
or a crash brings everything back. Bitmaps live in bitmap volumes, never here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass, fields, replace

log = logging.getLogger(__name__)

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
    imported INTEGER NOT NULL DEFAULT 0,
    master_ident TEXT NOT NULL DEFAULT '',
    shadow_ident TEXT NOT NULL DEFAULT '',
    bitmap_ident TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    hosts TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS overflows (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    ident TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    sets TEXT NOT NULL DEFAULT '',
    grp TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    since INTEGER NOT NULL DEFAULT 0,
    last_run INTEGER NOT NULL DEFAULT 0,
    last_result TEXT NOT NULL DEFAULT '',
    stamps TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    added INTEGER NOT NULL DEFAULT 0,
    last_seen INTEGER NOT NULL DEFAULT 0,
    version TEXT NOT NULL DEFAULT '',
    sets INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
"""

# Columns added after the first release: a state store made before gets them (empty) when it
# is opened. An empty identity is recorded at the set's next successful open.
MIGRATIONS = (
    ("sets", "master_ident", "TEXT NOT NULL DEFAULT ''"),
    ("sets", "shadow_ident", "TEXT NOT NULL DEFAULT ''"),
    ("sets", "bitmap_ident", "TEXT NOT NULL DEFAULT ''"),
    ("overflows", "ident", "TEXT NOT NULL DEFAULT ''"),
    ("groups", "hosts", "TEXT NOT NULL DEFAULT ''"),
)


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
    # the volumes' identities (ptcopy.daemon.identity.Identity as JSON; '' = not recorded)
    master_ident: str = ""
    shadow_ident: str = ""
    bitmap_ident: str = ""

    def with_(self, **changes: object) -> SetRow:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class GroupRow:
    id: str
    name: str
    hosts: tuple[str, ...] = ()   # the other hosts the group spans (one per line in the store)


@dataclass(frozen=True)
class OverflowRow:
    id: str
    path: str
    ident: str = ""      # the volume's identity (JSON; '' = not recorded)


@dataclass(frozen=True)
class ScheduleRow:
    """A schedule (ptcopy.daemon.service.schedules); times in microseconds since the epoch."""

    id: str
    name: str
    spec: str
    sets: str = ""         # the set ids it rotates over, comma-separated ('' for a group)
    grp: str = ""          # or the group id it updates
    enabled: bool = True
    since: int = 0         # the next run is the spec's first elapse after this
    last_run: int = 0
    last_result: str = ""
    stamps: str = ""       # JSON {set id: when its last point in time was taken}

    def with_(self, **changes: object) -> ScheduleRow:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class HostRow:
    """A registered remote host (ptcopy.daemon.service.hosts); times in µs since the epoch,
    the rest as its last probe found it."""

    name: str
    target: str            # the SSH destination, [USER@]HOST[:PORT]
    added: int = 0
    last_seen: int = 0     # the last probe that reached it (0: never)
    version: str = ""      # its ptcopyd's version then
    sets: int = 0          # how many sets it had then
    last_error: str = ""   # why the last probe failed ('' when it did not)

    def with_(self, **changes: object) -> HostRow:
        return replace(self, **changes)  # type: ignore[arg-type]


FALLBACK_DIR = "fallback"


def open_fallback(state_dir: str, set_id: str, fresh: bool = False) -> int:
    """An open descriptor of set ``set_id``'s fallback record: STATE_DIR/fallback/<id>.rec,
    root-only (directory 0700, file 0600), never through a symlink. The engine records there
    that the set's bitmap volume was lost while offline (see docs/bitmap-format.md). ``fresh``
    empties it (a new set). The caller closes the descriptor."""
    if not set_id.isalnum():
        raise ValueError(f"set id {set_id!r} is not a plain name")
    d = os.path.join(state_dir, FALLBACK_DIR)
    with contextlib.suppress(FileExistsError):
        os.mkdir(d, 0o700)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(dfd)
        if st.st_uid != os.geteuid():
            raise PermissionError(f"{d} belongs to uid {st.st_uid}, not to ptcopyd")
        if st.st_mode & 0o077:
            os.fchmod(dfd, 0o700)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_TRUNC if fresh
                                                                         else 0)
        fd = os.open(f"{set_id}.rec", flags, 0o600, dir_fd=dfd)
    finally:
        os.close(dfd)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


def remove_fallback(state_dir: str, set_id: str) -> None:
    """The set is gone: so is its record."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(state_dir, FALLBACK_DIR, f"{set_id}.rec"))


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
            self._migrate()

    def _migrate(self) -> None:
        """Add the columns a state store from an earlier release lacks (one transaction)."""
        todo = []
        for table, column, decl in MIGRATIONS:
            have = {str(r[1]) for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                todo.append(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        if not todo:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for sql in todo:
                self._db.execute(sql)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        log.info("state store %s: added %s", self.path, ", ".join(t.split()[5] for t in todo))

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
        self._write("INSERT OR REPLACE INTO groups (id, name, hosts) VALUES (?, ?, ?)",
                    (row.id, row.name, "\n".join(row.hosts)))

    def delete_group(self, group_id: str) -> None:
        self._write("DELETE FROM groups WHERE id = ?", (group_id,))

    def groups(self) -> list[GroupRow]:
        return [GroupRow(str(i), str(n), tuple(str(h).split("\n")) if h else ()) for i, n, h in
                self._rows("SELECT id, name, hosts FROM groups ORDER BY name")]

    # overflow volumes
    def put_overflow(self, row: OverflowRow) -> None:
        self._write("INSERT OR REPLACE INTO overflows (id, path, ident) VALUES (?, ?, ?)",
                    (row.id, row.path, row.ident))

    def delete_overflow(self, ov_id: str) -> None:
        self._write("DELETE FROM overflows WHERE id = ?", (ov_id,))

    def overflows(self) -> list[OverflowRow]:
        return [OverflowRow(str(i), str(p), str(d)) for i, p, d in
                self._rows("SELECT id, path, ident FROM overflows ORDER BY path")]

    # schedules
    def put_schedule(self, row: ScheduleRow) -> None:
        names = [f.name for f in fields(ScheduleRow)]
        values = tuple(getattr(row, n) for n in names)
        self._write(f"INSERT OR REPLACE INTO schedules ({', '.join(names)}) VALUES "
                    f"({', '.join('?' for _ in names)})", values)

    def delete_schedule(self, schedule_id: str) -> None:
        self._write("DELETE FROM schedules WHERE id = ?", (schedule_id,))

    def schedules(self) -> list[ScheduleRow]:
        names = [f.name for f in fields(ScheduleRow)]
        out = []
        for r in self._rows(f"SELECT {', '.join(names)} FROM schedules ORDER BY name"):
            d = dict(zip(names, r, strict=True))
            d["enabled"] = bool(d["enabled"])
            out.append(ScheduleRow(**d))  # type: ignore[arg-type]
        return out

    # remote hosts
    def put_host(self, row: HostRow) -> None:
        names = [f.name for f in fields(HostRow)]
        values = tuple(getattr(row, n) for n in names)
        self._write(f"INSERT OR REPLACE INTO hosts ({', '.join(names)}) VALUES "
                    f"({', '.join('?' for _ in names)})", values)

    def delete_host(self, name: str) -> None:
        self._write("DELETE FROM hosts WHERE name = ?", (name,))

    def hosts(self) -> list[HostRow]:
        names = [f.name for f in fields(HostRow)]
        return [HostRow(**dict(zip(names, r, strict=True)))  # type: ignore[arg-type]
                for r in self._rows(f"SELECT {', '.join(names)} FROM hosts ORDER BY name")]
