"""The Service's state and what every domain module shares: the engine, the data path, the
state store, the registry of sets, groups and overflow volumes, the lock, events and look-ups.

The domain modules (``volumes``, ``sets``, ``groups``, ``overflows``) add their operations to
``Core``; none of them knows D-Bus, and none asks which data path it has: what a path cannot do
is in its ``caps``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ptcopy import engine as eng
from ptcopy.daemon.errors import ServiceError, not_found
from ptcopy.daemon.state import GroupRow, OverflowRow, SetRow, Store
from ptcopy.datapath import select
from ptcopy.datapath.base import Copy, DataPath, HeldPoint, Served
from ptcopy.engine import Direction, Kind
from ptcopy.errnames import ErrorName

log = logging.getLogger(__name__)

KINDS = {"independent": Kind.INDEPENDENT, "dependent": Kind.DEPENDENT}
DIRECTIONS = {"shadow": Direction.TO_SHADOW, "master": Direction.TO_MASTER}
SET_ROLES = ("master", "shadow", "bitmap")

Listener = Callable[[str, str, str], None]   # (event, kind, id): added/removed/changed
# builds a data path on the service's engine and run directory (tests give their own)
PathFactory = Callable[[eng.Engine, str], DataPath]


@dataclass
class ManagedSet:
    row: SetRow
    set: eng.Set | None          # None when the set could not be brought back
    served: Served | None = None   # what the data path serves for it (None: not served)
    error: str = ""
    locked_by: str = ""          # the bus name holding the lock
    missing: list[str] = field(default_factory=list)   # roles whose device udev saw removed


@dataclass
class ManagedOverflow:
    row: OverflowRow
    ov: eng.Overflow | None
    error: str = ""
    sets: list[str] = field(default_factory=list)


@dataclass
class GroupHold:
    """A group point in time held across calls for a coordinator (``GroupOps.group_hold``)."""

    token: str
    group_id: str
    set_ids: list[str]
    owner: str                   # the bus name that made it: the only one that may release it
    point: HeldPoint
    timeout: float
    full: bool                   # a copy (True) or an update
    direction: str               # 'shadow' or 'master'
    expired: bool = False        # thawed unchanged at its timeout; Release reports it


def owner_id(bus_name: str) -> int:
    """A stable positive 63-bit engine lock owner for a bus name."""
    return (uuid.uuid5(uuid.NAMESPACE_URL, bus_name).int >> 65) or 1


class Core:
    """What ptcopyd manages, without D-Bus. Every method is synchronous and may block on I/O:
    the D-Bus layer calls mutations from worker threads, one at a time (``self.lock``), and
    reads straight from the engine's counters, so reads never wait behind a running operation.
    """

    def __init__(self, state_dir: str, run_dir: str, file_dirs: Sequence[str],
                 data_path: str | PathFactory = "userspace") -> None:
        """``data_path``: a name ``select.build`` knows, or a factory for another path."""
        self.state_dir = state_dir
        self.run_dir = run_dir
        self.file_dirs = [os.path.realpath(d) for d in file_dirs]
        self.engine = eng.Engine()
        self.datapath: DataPath = (data_path(self.engine, run_dir) if callable(data_path)
                                   else select.build(data_path, self.engine, run_dir))
        self.store = Store(state_dir)
        self.sets: dict[str, ManagedSet] = {}
        self.groups: dict[str, GroupRow] = {}
        self.overflows: dict[str, ManagedOverflow] = {}
        self.lock = threading.RLock()
        self.listeners: list[Listener] = []
        self.holds: dict[str, GroupHold] = {}   # by token; changed under holds_lock
        self.holds_lock = threading.Lock()
        # (set or overflow id, role) -> (block?, st_rdev or st_ino) of the descriptor the
        # engine was given
        self._bound: dict[tuple[str, str], tuple[bool, int]] = {}

    @property
    def data_path(self) -> str:
        """The data path's name (``caps.name``), as the DataPath property shows it."""
        return self.datapath.caps.name

    # ---- events ----------------------------------------------------------------------------

    def _emit(self, event: str, kind: str, ident: str) -> None:
        for fn in self.listeners:
            fn(event, kind, ident)

    # ---- look-ups --------------------------------------------------------------------------

    def get_set(self, set_id: str) -> ManagedSet:
        ms = self.sets.get(set_id)
        if ms is None:
            raise not_found(f"no set {set_id}")
        return ms

    def live(self, set_id: str) -> eng.Set:
        ms = self.get_set(set_id)
        if ms.set is None:
            raise ServiceError(ErrorName.OFFLINE,
                               f"set {ms.row.name} is not available: {ms.error}")
        return ms.set

    def _no_group_hold(self, set_id: str, what: str) -> None:
        """Refuse ``what`` on a set a group hold has frozen (writes wait for its release)."""
        for h in list(self.holds.values()):
            if not h.expired and set_id in h.set_ids:
                raise ServiceError(ErrorName.BUSY, f"set {self.sets[set_id].row.name} is held "
                                   f"for a point in time of group {self.groups[h.group_id].name}"
                                   f"; {what} waits for that hold to be released (at most "
                                   f"{h.timeout:g} s)")

    def find(self, name: str) -> tuple[str, str] | None:
        """A set, group or overflow by name or path (a set also by its shadow, as iiadm)."""
        for sid, ms in self.sets.items():
            if name in (ms.row.name, ms.row.shadow):
                return "set", sid
        for gid, g in self.groups.items():
            if g.name == name:
                return "group", gid
        for oid, mo in self.overflows.items():
            if mo.row.path == name:
                return "overflow", oid
        return None

    def _name_free(self, name: str) -> None:
        if any(ms.row.name == name for ms in self.sets.values()) or any(
                g.name == name for g in self.groups.values()):
            raise ServiceError(ErrorName.EXISTS,
                               f"the name {name!r} is already used by a set or group")

    # ---- copies as users see them ----------------------------------------------------------

    def copier(self, set_id: str) -> Copy | None:
        """What a job follows for a set's copy: the data path's for a served set (the kernel
        path merges in the kernel, not in the engine), else the engine set (None: offline)."""
        ms = self.get_set(set_id)
        if ms.served is not None:
            return self.datapath.copier(ms.row.name)
        return ms.set

    def copying(self, ms: ManagedSet) -> bool:
        p = self.progress(ms)
        return p is not None and p.active

    def progress(self, ms: ManagedSet) -> eng.Progress | None:
        if ms.set is None:
            return None
        if ms.served is not None:
            return self.datapath.progress(ms.row.name)
        return ms.set.progress()

    # ---- stop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop serving and close everything; running copies suspend and resume next start."""
        with self.lock:
            with self.holds_lock:
                holds = list(self.holds.values())
                self.holds.clear()
            for h in holds:   # thawed unchanged before anything stops serving
                if not h.expired:
                    with contextlib.suppress(eng.PtcopyError, OSError):
                        h.point.release(False)
            with contextlib.suppress(eng.PtcopyError, OSError):
                self.datapath.stop(force=True)
            for ms in self.sets.values():
                if ms.set is not None:
                    with contextlib.suppress(eng.PtcopyError):
                        ms.set.close()
            for mo in self.overflows.values():
                if mo.ov is not None:
                    with contextlib.suppress(eng.PtcopyError):
                        mo.ov.close()
            with contextlib.suppress(eng.PtcopyError):
                self.engine.close()
            self.store.close()
