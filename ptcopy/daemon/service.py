"""What ptcopyd manages, without D-Bus: sets, groups and overflow volumes, their state store,
the engine and the data path. Every method here is synchronous and may block on I/O: the D-Bus
layer calls mutations from worker threads, one at a time (``self.lock``), and reads straight
from the engine's counters, so reads never wait behind a running operation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ptcopy import engine as eng
from ptcopy.daemon import identity, options
from ptcopy.daemon.errors import ServiceError, invalid, not_found
from ptcopy.daemon.identity import Identity
from ptcopy.daemon.state import (
    GroupRow,
    OverflowRow,
    SetRow,
    Store,
    open_fallback,
    remove_fallback,
)
from ptcopy.daemon.volumes import Expect, Opened, open_volume, opened
from ptcopy.datapath.base import SetVolumes
from ptcopy.datapath.kernel import KernelCopy, KernelPath, KernelSet
from ptcopy.datapath.kernel import tables as dm
from ptcopy.engine import Direction, Kind
from ptcopy.userspace import Served, UserspacePath

log = logging.getLogger(__name__)

KINDS = {"independent": Kind.INDEPENDENT, "dependent": Kind.DEPENDENT}
DIRECTIONS = {"shadow": Direction.TO_SHADOW, "master": Direction.TO_MASTER}
SET_ROLES = ("master", "shadow", "bitmap")

Listener = Callable[[str, str, str], None]   # (event, kind, id): added/removed/changed


@dataclass
class ManagedSet:
    row: SetRow
    set: eng.Set | None          # None when the set could not be brought back
    served: Served | KernelSet | None = None
    error: str = ""
    locked_by: str = ""          # the bus name holding the lock
    missing: list[str] = field(default_factory=list)   # roles whose device udev saw removed


@dataclass
class ManagedOverflow:
    row: OverflowRow
    ov: eng.Overflow | None
    error: str = ""
    sets: list[str] = field(default_factory=list)


def _owner_id(bus_name: str) -> int:
    """A stable positive 63-bit engine lock owner for a bus name."""
    return (uuid.uuid5(uuid.NAMESPACE_URL, bus_name).int >> 65) or 1


def _ident_attr(role: str) -> tuple[str, str]:
    """The row attributes holding a role's path and identity."""
    return ("path", "ident") if role == "overflow" else (role, f"{role}_ident")


def _ident_json(v: Opened) -> str:
    """What is recorded for a volume at enable (the header is not: enable writes it)."""
    return v.identity.without_header().to_json() if v.identity is not None else ""


def _expect(row: SetRow, role: str) -> Expect:
    return Expect(Identity.from_json(str(getattr(row, f"{role}_ident"))),
                  row.id if role == "bitmap" else "")


def _find_again(what: str, role: str, path: str, want: Expect) -> tuple[str, str]:
    """Where to open a recorded volume: its recorded path when it holds the volume (or
    nothing is recorded to look for), else the one block device of the host that has its
    identity. The second value explains, for a refusal, why it was not found elsewhere."""
    rec = want.identity
    if rec is None:
        return path, ""
    here = identity.at_path(path, role)
    if here is not None and identity.compare(rec, here, want.header).ok:
        return path, ""
    if rec.kind != "block":
        return path, ("; file volumes are not looked for under other names (rename it back, "
                      "or disable the set and enable it again)")
    if not identity.strong_enough(rec, want.header):
        return path, "; it has no stable identifier to be found by under another name"
    hits = identity.find_block(rec, role, want.header)
    if len(hits) == 1:
        log.warning("%s: the %s volume recorded at %s is now %s (found again by its "
                    "identity: %s)", what, role, path, hits[0], rec.describe())
        return hits[0], ""
    if not hits:
        return path, "; no other block device of this host has its identity"
    return path, (f"; {len(hits)} block devices have its identity ({', '.join(hits)}), so "
                  "none is used")


def _with_notes(e: ServiceError, notes: dict[str, str]) -> ServiceError:
    """The refusal, with what the search for each volume elsewhere found."""
    extra = "".join(n for r, n in notes.items() if n and f"{r} volume" in e.message)
    return ServiceError(e.name, e.message + extra) if extra else e


def _record(what: str, got: dict[str, Opened], row: SetRow | OverflowRow) -> dict[str, str]:
    """The row changes after a successful open: new paths (found again) and identities
    recorded for the first time (a state store from before they were kept) or with
    identifiers that could not be read before (udev came up)."""
    changes: dict[str, str] = {}
    for role, v in got.items():
        path_attr, ident_attr = _ident_attr(role)
        if v.given != getattr(row, path_attr):
            changes[path_attr] = v.given
        assert v.identity is not None
        rec = Identity.from_json(str(getattr(row, ident_attr)))
        if rec is None:
            log.info("%s: recorded the identity of its %s volume %s: %s (first open since "
                     "volume identities are kept)", what, role, v.given, v.identity.describe())
            changes[ident_attr] = v.identity.without_header().to_json()
            continue
        # (the header is not recorded: it is checked against the set's or overflow's id)
        merged = Identity(rec.kind, {**rec.strong, **v.identity.strong},
                          {**rec.weak, **v.identity.weak})
        if merged != rec:
            if merged.strong != rec.strong:
                log.info("%s: the identity of its %s volume %s now also has %s", what, role,
                         v.given, ", ".join(sorted(set(merged.strong) - set(rec.strong))))
            changes[ident_attr] = merged.to_json()
    return changes


class Service:
    def __init__(self, state_dir: str, run_dir: str, file_dirs: Sequence[str],
                 data_path: str = "userspace") -> None:
        self.state_dir = state_dir
        self.run_dir = run_dir
        self.file_dirs = [os.path.realpath(d) for d in file_dirs]
        self.engine = eng.Engine()
        if data_path == "auto":
            why = dm.probe()
            data_path = "userspace" if why else "kernel"
            log.info("data path: %s%s", data_path, f" ({why})" if why else "")
        self.datapath: UserspacePath | KernelPath | None = None
        if data_path == "userspace":
            self.datapath = UserspacePath(self.engine, run_dir)
        elif data_path == "kernel":
            self.datapath = KernelPath(self.engine, run_dir)
        self.data_path = data_path
        self.store = Store(state_dir)
        self.sets: dict[str, ManagedSet] = {}
        self.groups: dict[str, GroupRow] = {}
        self.overflows: dict[str, ManagedOverflow] = {}
        self.lock = threading.RLock()
        self.listeners: list[Listener] = []
        # (set id, role) -> (block?, st_rdev or st_ino) of the descriptor the engine was given
        self._bound: dict[tuple[str, str], tuple[bool, int]] = {}

    # ---- events ----------------------------------------------------------------------------

    def _emit(self, event: str, kind: str, ident: str) -> None:
        for fn in self.listeners:
            fn(event, kind, ident)

    # ---- start and stop --------------------------------------------------------------------

    def restore(self) -> None:
        """Bring back everything the state store records (after a restart or a crash)."""
        with self.lock:
            for ov_row in self.store.overflows():
                mo = ManagedOverflow(ov_row, None)
                try:
                    mo.ov, mo.row = self._open_overflow(ov_row)
                except (eng.PtcopyError, ServiceError) as e:
                    mo.error = str(e)
                    log.error("overflow volume %s did not come back: %s", ov_row.path, e)
                self.overflows[ov_row.id] = mo
            for g in self.store.groups():
                self.groups[g.id] = g
            for row in self.store.sets():
                ms = ManagedSet(row, None)
                try:
                    ms.set, ms.row = self._open_set(row)
                    self._serve(ms)
                    self._resume_kernel_copy(ms)
                except (eng.PtcopyError, ServiceError, OSError) as e:
                    ms.error = str(e)
                    log.error("set %s did not come back: %s", row.name, e)
                self.sets[row.id] = ms
                if row.overflow in self.overflows:
                    self.overflows[row.overflow].sets.append(row.id)
            log.info("restored %d set(s), %d group(s), %d overflow volume(s)", len(self.sets),
                     len(self.groups), len(self.overflows))

    def _open_set(self, row: SetRow) -> tuple[eng.Set, SetRow]:
        """Open a recorded set, each volume checked against its recorded identity before the
        engine touches it (the engine's open writes the bitmap header). A block device that
        moved to another name is found again there. The row comes back with new paths and
        newly recorded identities (already stored)."""
        ov = self.overflows[row.overflow].ov if row.overflow in self.overflows else None
        if row.overflow and ov is None:
            raise ServiceError("Offline", f"overflow volume of set {row.name} is missing")
        if not row.bitmap:
            raise ServiceError("Offline", f"set {row.name} kept its bitmaps in memory only; "
                                          "they did not survive the restart")
        what = f"set {row.name}"
        expect = [_expect(row, r) for r in SET_ROLES]
        paths: dict[str, str] = {}
        notes: dict[str, str] = {}
        for r, want in zip(SET_ROLES, expect, strict=True):
            paths[r], notes[r] = _find_again(what, r, str(getattr(row, r)), want)
        vols = [(paths[r], r) for r in SET_ROLES]
        try:
            with opened(vols, self.file_dirs, exclusive=self.kernel is None,
                        expect=expect) as got:
                m, s, b = got
                new = self.engine.open((m.given, m.fd), (s.given, s.fd), (b.given, b.fd),
                                       overflow=ov)
                self._bind(row.id, got)
        except ServiceError as e:
            raise _with_notes(e, notes) from e
        try:
            self._fallback(new, row.id, row.name)
        except BaseException:
            # unreadable, it may hide a lost bitmap: the set must not come back as if whole
            with contextlib.suppress(eng.PtcopyError):
                new.close()
            raise
        changes = _record(what, dict(zip(SET_ROLES, got, strict=True)), row)
        if changes:
            row = row.with_(**changes)
            self._store_moved(lambda: self.store.put_set(row), what)
        return new, row

    def _fallback(self, s: eng.Set, set_id: str, name: str, fresh: bool = False) -> None:
        """Give the engine the set's fallback record before the set is served: where it says,
        should the bitmap volume go offline, that the bitmap is lost before any master write
        whose change the bitmap missed is acknowledged. If ptcopyd stopped or crashed with the
        bitmap in that state, the set comes back with every chunk marked changed and its shadow
        offline until a reset, whose full copy is the only safe answer."""
        try:
            fd = open_fallback(self.state_dir, set_id, fresh)
            try:
                lost = s.set_fallback(fd)
            finally:
                os.close(fd)
        except (OSError, ValueError) as e:
            raise ServiceError("Failed", f"set {name}: cannot use its fallback record in "
                                         f"{self.state_dir}: {e}") from e
        if lost:
            log.warning("set %s: its bitmap volume was lost while offline before ptcopyd last "
                        "stopped (crash or stop); changes made then are recorded nowhere else, "
                        "so every chunk counts as changed and the shadow stays offline until "
                        "a reset makes a full copy", name)

    def _bind(self, set_id: str, got: Sequence[Opened]) -> None:
        for r, v in zip(SET_ROLES, got, strict=False):
            st = os.fstat(v.fd)
            self._bound[(set_id, r)] = (v.block, st.st_rdev if v.block else st.st_ino)

    def _open_overflow(self, row: OverflowRow) -> tuple[eng.Overflow, OverflowRow]:
        """Open a recorded overflow volume, checked and found again as a set's volumes."""
        what = f"overflow volume {row.id}"
        want = Expect(Identity.from_json(row.ident), row.id)
        path, note = _find_again(what, "overflow", row.path, want)
        try:
            with opened([(path, "overflow")], self.file_dirs, expect=[want]) as (v,):
                ov = self.engine.open_overflow((v.given, v.fd))
        except ServiceError as e:
            raise _with_notes(e, {"overflow": note}) from e
        changes = _record(what, {"overflow": v}, row)
        if changes:
            row = OverflowRow(row.id, changes.get("path", row.path),
                              changes.get("ident", row.ident))
            self._store_moved(lambda: self.store.put_overflow(row), what)
        return ov, row

    def _store_moved(self, put: Callable[[], None], what: str) -> None:
        """A new path or identity is stored; if the store fails the volume is found again at
        the next open, so the open stands."""
        try:
            put()
        except sqlite3.Error as e:
            log.error("%s: could not store its volumes' new paths or identities: %s", what, e)

    def _resume_kernel_copy(self, ms: ManagedSet) -> None:
        """A copy the kernel path lost to a crash starts again from a new frozen view, as the
        userspace path resumes it (the engine folded what it had left into the bitmap)."""
        if self.kernel is not None and ms.set is not None:
            self.kernel.started(ms.row.name, new=False)

    @property
    def kernel(self) -> KernelPath | None:
        return self.datapath if isinstance(self.datapath, KernelPath) else None

    def _serve(self, ms: ManagedSet) -> None:
        if ms.set is None:
            return
        if isinstance(self.datapath, KernelPath):
            ov = self.overflows.get(ms.row.overflow)
            vols = [(ms.row.master, "master"), (ms.row.shadow, "shadow"),
                    (ms.row.bitmap, "bitmap")] + ([(ov.row.path, "overflow")] if ov else [])
            # Served from descriptors checked as the engine's were (a file only under
            # --file-volumes, never the root disk or a device ptcopy serves), each the very
            # volume the engine has open; the kernel path resolves no path again.
            with opened(vols, self.file_dirs, exclusive=False) as got:
                for v, (_, role) in zip(got, vols, strict=True):
                    st = os.fstat(v.fd)
                    bound = self._bound.get((ms.row.id, role))
                    if bound is not None and bound != (v.block,
                                                       st.st_rdev if v.block else st.st_ino):
                        raise ServiceError("WrongVolume", f"{role} volume {v.given} of set "
                                                          f"{ms.row.name} changed since it was "
                                                          "opened; nothing was served")
                spec = [(v.given, v.fd) for v in got]
                ms.served = self.datapath.serve(ms.row.name, ms.set, SetVolumes(
                    spec[0], spec[1], spec[2], spec[3] if ov else None))
        elif self.datapath is not None:
            ms.served = self.datapath.serve(ms.row.name, ms.set, loop=ms.row.loop)

    def copier(self, set_id: str) -> eng.Set | KernelCopy | None:
        """What follows a set's copy: its engine set, or on the kernel path its kernel copy
        (merges run in the kernel, not in the engine)."""
        ms = self.get_set(set_id)
        if self.kernel is not None and ms.served is not None:
            return self.kernel.copier(ms.row.name)
        return ms.set

    def copying(self, ms: ManagedSet) -> bool:
        p = self.progress(ms)
        return p is not None and p.active

    def progress(self, ms: ManagedSet) -> eng.Progress | None:
        if ms.set is None:
            return None
        if self.kernel is not None and ms.served is not None:
            return self.kernel.progress(ms.row.name)
        return ms.set.progress()

    def stop(self) -> None:
        """Stop serving and close everything; running copies suspend and resume next start."""
        with self.lock:
            if self.datapath is not None:
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

    # ---- look-ups --------------------------------------------------------------------------

    def get_set(self, set_id: str) -> ManagedSet:
        ms = self.sets.get(set_id)
        if ms is None:
            raise not_found(f"no set {set_id}")
        return ms

    def live(self, set_id: str) -> eng.Set:
        ms = self.get_set(set_id)
        if ms.set is None:
            raise ServiceError("Offline", f"set {ms.row.name} is not available: {ms.error}")
        return ms.set

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
            raise ServiceError("Exists", f"the name {name!r} is already used by a set or group")

    # ---- sets ------------------------------------------------------------------------------

    def create_set(self, name: str, kind: str, master: str, shadow: str, bitmap: str,
                   opts: dict[str, Any]) -> str:
        """Enable a set. Nothing is left behind when any step fails."""
        options.name(name, "set")
        if kind not in KINDS:
            raise invalid(f"kind {kind!r} must be 'independent' or 'dependent'")
        in_memory = bool(opts.get("bitmap_in_memory", False))
        if in_memory and bitmap:
            raise invalid("give either a bitmap volume or bitmap_in_memory, not both")
        if not in_memory and not bitmap:
            raise invalid("no bitmap volume given (or set bitmap_in_memory)")
        if in_memory and self.kernel is not None:
            raise invalid("the kernel data path keeps each set's era metadata and store record "
                          "on its bitmap volume: bitmap_in_memory is not available there")
        with self.lock:
            self._name_free(name)
            ov = None
            ov_id = str(opts.get("overflow", ""))
            if ov_id:
                mo = self.overflows.get(ov_id)
                if mo is None or mo.ov is None:
                    raise not_found(f"no overflow volume {ov_id}")
                ov = mo.ov
            grp = str(opts.get("group", ""))
            if grp and grp not in self.groups:
                raise not_found(f"no group {grp}")
            vols = [(master, "master"), (shadow, "shadow")]
            if not in_memory:
                vols.append((bitmap, "bitmap"))
            with opened(vols, self.file_dirs, exclusive=self.kernel is None) as got:
                m, s = got[0], got[1]
                b = (got[2].given, got[2].fd) if not in_memory else None
                if self.kernel is not None:   # before the engine writes the bitmap volume
                    self.kernel.check_new(
                        KINDS[kind], int(opts.get("chunk_size", 0)) or eng.CHUNK_DEFAULT,
                        m.size, (s.given, s.size),
                        (got[2].given, got[2].size) if not in_memory else None)
                new = self.engine.enable(
                    (m.given, m.fd), (s.given, s.fd), b, KINDS[kind],
                    chunk_size=int(opts.get("chunk_size", 0)), overflow=ov,
                    copy_delay_ms=int(opts.get("copy_delay", 0)),
                    copy_units=int(opts.get("copy_units", 0)))
                self._bind(new.status().uuid.hex, got)
            st = new.status()
            row = SetRow(id=st.uuid.hex, name=name, kind=kind, master=master, shadow=shadow,
                         bitmap=bitmap, chunk_size=st.chunk_size, overflow=ov_id, grp=grp,
                         copy_delay=st.copy_delay_ms, copy_units=st.copy_units,
                         loop=bool(opts.get("loop", True)),
                         master_ident=_ident_json(got[0]), shadow_ident=_ident_json(got[1]),
                         bitmap_ident=_ident_json(got[2]) if not in_memory else "")
            ms = ManagedSet(row, new)
            try:
                if not in_memory:
                    self._fallback(new, row.id, name, fresh=True)
                self._serve(ms)
                if self.kernel is not None:
                    self.kernel.started(name, new=True)
                self.store.put_set(row)
            except BaseException:
                if ms.served is not None and self.datapath is not None:
                    with contextlib.suppress(Exception):
                        self.datapath.unserve(name, force=True)
                with contextlib.suppress(eng.PtcopyError):
                    if new.progress().active:
                        new.abort()
                    new.disable()
                raise
            self.sets[row.id] = ms
            if ov_id:
                self.overflows[ov_id].sets.append(row.id)
        self._emit("added", "set", row.id)
        if grp:
            self._emit("changed", "group", grp)
        if ov_id:
            self._emit("changed", "overflow", ov_id)
        return row.id

    def disable_set(self, set_id: str) -> None:
        with self.lock:
            ms = self.get_set(set_id)
            if ms.set is not None:
                if ms.set.progress().active:
                    raise ServiceError("Busy", f"set {ms.row.name} is copying; wait for it or "
                                               "abort it first")
                if ms.served is not None and self.datapath is not None:
                    self.datapath.unserve(ms.row.name)
                    ms.served = None
                try:
                    ms.set.disable()
                except eng.PtcopyError:
                    self._serve(ms)   # put back what users had
                    raise
            self.store.delete_set(set_id)
            try:
                remove_fallback(self.state_dir, set_id)
            except OSError as e:   # a stale record names a UUID no set will have again
                log.warning("set %s: could not remove its fallback record: %s", ms.row.name, e)
            del self.sets[set_id]
            if ms.row.overflow in self.overflows:
                with contextlib.suppress(ValueError):
                    self.overflows[ms.row.overflow].sets.remove(set_id)
        self._emit("removed", "set", set_id)
        if ms.row.grp:
            self._emit("changed", "group", ms.row.grp)
        if ms.row.overflow:
            self._emit("changed", "overflow", ms.row.overflow)

    def copy(self, set_ids: Sequence[str], direction: str, full: bool, confirm: bool,
             owner: str) -> None:
        """Copy or update one set, or several at one point in time (all or nothing)."""
        options.direction(direction)
        d = DIRECTIONS[direction]
        if d is Direction.TO_MASTER and not confirm:
            raise ServiceError("NotConfirmed", "writing the master replaces its data; pass the "
                                               "option confirm=true")
        with self.lock:
            sets = [self.live(i) for i in set_ids]
            names = [self.sets[i].row.name for i in set_ids]
            for i in set_ids:
                ms = self.sets[i]
                if ms.row.exported and d is Direction.TO_SHADOW:
                    raise ServiceError("Exported", f"the shadow of set {ms.row.name} is "
                                                   "exported; join it back first")
            for i in set_ids:
                self._not_missing(i)
            owner_id = _owner_id(owner) if owner else 0
            served = self.datapath is not None and all(
                self.sets[i].served is not None for i in set_ids)
            if served and self.datapath is not None:
                self.datapath.copy(names, d, full=full, owner=owner_id)
            else:
                self.engine.group_copy(sets, d, full=full, owner=owner_id)
        for i in set_ids:
            self._emit("changed", "set", i)
            if self.sets[i].row.overflow:   # a new point in time frees overflow chunks
                self._emit("changed", "overflow", self.sets[i].row.overflow)

    def abort(self, set_id: str) -> None:
        s = self.live(set_id)
        if self.kernel is not None and self.sets[set_id].served is not None:
            self.kernel.abort(self.sets[set_id].row.name)
        else:
            s.abort()
        self._emit("changed", "set", set_id)

    def reset(self, set_id: str, owner: str) -> None:
        with self.lock:
            self._not_missing(set_id)
            s = self.live(set_id)
            ms = self.sets[set_id]
            for role in SET_ROLES:   # a reset resyncs onto what the devices hold now
                why = self._not_the_same(ms, role)
                if why:
                    raise ServiceError("WrongVolume", f"set {ms.row.name}: {why}")
            s.reset(owner=_owner_id(owner) if owner else 0)
        self._emit("changed", "set", set_id)

    # ---- volumes that come and go (udev) ---------------------------------------------------

    def _not_missing(self, set_id: str) -> None:
        ms = self.get_set(set_id)
        if ms.missing:
            vols = ", ".join(f"{r} {getattr(ms.row, r)}" for r in ms.missing)
            raise ServiceError("Offline", f"set {ms.row.name} has a volume that was removed "
                                          f"({vols}); plug it back in (the set resumes by "
                                          "itself) or run Refresh"
                                          + (f" ({ms.error})" if ms.error else ""))

    def volume_missing(self, set_id: str, role: str) -> None:
        """The device of this volume was removed: the set is degraded until it returns. The
        engine keeps its open descriptor: it notices nothing until I/O to it fails."""
        with self.lock:
            ms = self.get_set(set_id)
            if role in ms.missing:
                return
            ms.missing.append(role)
        log.warning("set %s: the %s volume %s was removed; the set is degraded", ms.row.name,
                    role, getattr(ms.row, role))
        self._emit("changed", "set", set_id)

    def volume_back(self, set_id: str, role: str) -> bool:
        """The device came back; when nothing else is missing, reset the set so the resync it
        needs starts. Whether it resumed (False: still missing something, or the reset failed
        and ``ms.error`` says why)."""
        with self.lock:
            ms = self.get_set(set_id)
            if role not in ms.missing:
                return False
            why = self._not_the_same(ms, role)
            if why:
                # a media change or another device under the old device number: a reset
                # would resync onto it (finding 15); it stays missing
                ms.error = why
                log.error("set %s: %s", ms.row.name, why)
                self._emit("changed", "set", set_id)
                return False
            ms.missing.remove(role)
            ms.error = ""
            log.info("set %s: the %s volume %s is back", ms.row.name, role,
                     getattr(ms.row, role))
            resumed = False
            if not ms.missing and ms.set is not None:
                try:
                    ms.set.reset(owner=0)
                    resumed = True
                except eng.PtcopyError as e:
                    log.error("set %s: reset after the %s volume came back failed: %s",
                              ms.row.name, role, e)
        self._emit("changed", "set", set_id)
        return resumed

    def _not_the_same(self, ms: ManagedSet, role: str) -> str:
        """Why the device now at the number the engine's descriptor was opened on is not the
        recorded volume ('' when it is, or when nothing was recorded to compare)."""
        rec = Identity.from_json(str(getattr(ms.row, f"{role}_ident")))
        bound = self._bound.get((ms.row.id, role))
        if rec is None or bound is None or not bound[0]:
            return ""
        found = identity.of_devnum(bound[1], role)
        if found is None:
            return f"the {role} volume {getattr(ms.row, role)} is not there"
        verdict = identity.compare(rec, found, ms.row.id if role == "bitmap" else "")
        if verdict.ok:
            return ""
        dev = f"{os.major(bound[1])}:{os.minor(bound[1])}"
        return (f"the device now at the {role} volume {getattr(ms.row, role)} (device {dev}) "
                f"is not the volume recorded for it: {verdict.why}; the set was neither "
                "resumed nor reset and nothing was written to it")

    def volumes_appeared(self, devnums: Sequence[int]) -> list[str]:
        """Block devices appeared (udev): bring back the sets waiting for one of them. A set
        that could not be opened is opened now if a device has the identity of one of its
        volumes (found again under whatever name it has); a set with a removed volume that
        came back under another name is reopened there. The ids of the sets brought back."""
        if not any((ms.set is None and ms.row.bitmap) or ms.missing
                   for ms in list(self.sets.values())):
            return []   # nothing waits: not one device is opened
        # ptcopy's own served loop devices are never a set's volume: not even opened to look
        run = os.path.join(os.path.realpath(self.run_dir), "")
        found = {d: identity.of_devnum(d, "") for d in devnums
                 if not identity.loop_backing(d).startswith(run)}
        log.debug("devices appeared: %s", {f"{os.major(d)}:{os.minor(d)}": i
                                           for d, i in found.items()})
        if not any(found.values()):
            return []
        back: list[str] = []
        with self.lock:
            for sid, ms in list(self.sets.items()):
                if not ms.row.bitmap or not self._wanted(ms, found):
                    continue
                if ms.set is not None and not self._reopen(ms):
                    continue
                try:
                    if ms.set is None:
                        opened_set, row = self._open_set(ms.row)
                        staged = ManagedSet(row, opened_set)
                        try:
                            self._serve(staged)
                        finally:   # readers on the loop see the set once it is served
                            ms.row, ms.served, ms.set = row, staged.served, opened_set
                    ms.error = ""
                    ms.missing.clear()
                    back.append(sid)
                    log.info("set %s is back (a volume of it appeared)", ms.row.name)
                except (eng.PtcopyError, ServiceError, OSError) as e:
                    ms.error = str(e)
                    log.error("set %s: a device with the identity of one of its volumes "
                              "appeared, but the set did not come back: %s", ms.row.name, e)
                self._emit("changed", "set", sid)
        return back

    def _wanted(self, ms: ManagedSet, found: dict[int, Identity | None]) -> bool:
        """Whether one of these devices is a volume the set waits for: any of its volumes
        when it could not be opened; a removed one that is back under another device number
        (back under its own, ``volume_back`` resumes it)."""
        waiting = SET_ROLES if ms.set is None else tuple(ms.missing)
        for r in waiting:
            rec = Identity.from_json(str(getattr(ms.row, f"{r}_ident")))
            if rec is None or rec.kind != "block" or not rec.strong:
                continue
            bound = self._bound.get((ms.row.id, r))
            for devnum, ident in found.items():
                if ms.set is not None and bound is not None and bound == (True, devnum):
                    continue
                if ident is not None and identity.compare(rec, ident).ok:
                    return True
        return False

    def _reopen(self, ms: ManagedSet) -> bool:
        """Close a set whose volume came back under another name (the engine's descriptor
        is on the old device), so it can be opened on the new one. False (and ``ms.error``
        says why) when its served devices are in use or it is copying."""
        assert ms.set is not None
        if self.copying(ms):
            ms.error = "a volume came back under another name while the set was copying"
            return False
        log.info("set %s: a removed volume is back under another device; the set is closed "
                 "to be opened there", ms.row.name)
        try:
            if ms.served is not None and self.datapath is not None:
                self.datapath.unserve(ms.row.name)
                ms.served = None
            try:
                ms.set.close()
            except eng.PtcopyError as e:
                # a volume on a device that is gone cannot be synced: the header stays
                # dirty, which the open on the new device recovers from
                if not ms.set.closed:
                    raise
                log.warning("set %s: closed with an error: %s", ms.row.name, e)
        except (eng.PtcopyError, ServiceError, OSError) as e:
            ms.error = (f"a volume came back under another name; the set must be reopened "
                        f"there, which needs its served devices unused: {e}")
            log.error("set %s: %s", ms.row.name, ms.error)
            if ms.served is None and not ms.set.closed:
                with contextlib.suppress(eng.PtcopyError, ServiceError, OSError):
                    self._serve(ms)
            return False
        ms.set = None
        return True

    def set_params(self, set_id: str, delay: int, units: int) -> None:
        with self.lock:
            ms = self.get_set(set_id)
            self.live(set_id).set_copy_params(delay, units)
            ms.row = ms.row.with_(copy_delay=delay, copy_units=units)
            self.store.put_set(ms.row)
        self._emit("changed", "set", set_id)

    def rename_set(self, set_id: str, name: str) -> None:
        options.name(name, "set")
        with self.lock:
            ms = self.get_set(set_id)
            if ms.row.name == name:
                return
            self._name_free(name)
            if ms.served is not None:
                raise ServiceError("InUse", f"set {ms.row.name} is served under its name; "
                                            "renaming a served set comes with the next "
                                            "data-path release")
            ms.row = ms.row.with_(name=name)
            self.store.put_set(ms.row)
        self._emit("changed", "set", set_id)

    def lock_set(self, set_id: str, owner: str) -> None:
        with self.lock:
            ms = self.get_set(set_id)
            self.live(set_id).lock(_owner_id(owner))
            ms.locked_by = owner
        self._emit("changed", "set", set_id)

    def unlock_set(self, set_id: str, owner: str) -> None:
        with self.lock:
            ms = self.get_set(set_id)
            if ms.locked_by and ms.locked_by != owner:
                raise ServiceError("InUse", f"set {ms.row.name} is locked by {ms.locked_by}")
            self.live(set_id).unlock(_owner_id(owner))
            ms.locked_by = ""
        self._emit("changed", "set", set_id)

    def release_locks_of(self, bus_name: str) -> None:
        """A client went away: its locks go with it."""
        with self.lock:
            for sid, ms in self.sets.items():
                if ms.locked_by == bus_name and ms.set is not None:
                    with contextlib.suppress(eng.PtcopyError):
                        ms.set.unlock(_owner_id(bus_name))
                    ms.locked_by = ""
                    self._emit("changed", "set", sid)

    def attach_overflow(self, set_id: str, ov_id: str) -> None:
        with self.lock:
            ms = self.get_set(set_id)
            mo = self.overflows.get(ov_id)
            if mo is None or mo.ov is None:
                raise not_found(f"no overflow volume {ov_id}")
            if ms.row.overflow == ov_id:
                return
            self.live(set_id).attach_overflow(mo.ov)
            if self.kernel is not None and ms.served is not None:
                with opened([(mo.row.path, "overflow")], self.file_dirs,
                            exclusive=False) as (v,):   # checked, and served from that descriptor
                    self.kernel.attach_overflow(ms.row.name, (v.given, v.fd))
            ms.row = ms.row.with_(overflow=ov_id)
            self.store.put_set(ms.row)
            mo.sets.append(set_id)
        self._emit("changed", "set", set_id)
        self._emit("changed", "overflow", ov_id)

    def detach_overflow(self, set_id: str) -> None:
        with self.lock:
            ms = self.get_set(set_id)
            ov_id = ms.row.overflow
            if not ov_id:
                raise not_found(f"set {ms.row.name} has no overflow volume")
            if self.kernel is not None and ms.served is not None:
                self.kernel.detach_overflow(ms.row.name)   # refused while extents are in use
            self.live(set_id).detach_overflow()
            ms.row = ms.row.with_(overflow="")
            self.store.put_set(ms.row)
            with contextlib.suppress(ValueError):
                self.overflows[ov_id].sets.remove(set_id)
        self._emit("changed", "set", set_id)
        self._emit("changed", "overflow", ov_id)

    def export_set(self, set_id: str) -> None:
        """Hand the shadow to another host (bookkeeping: the shadow is no longer updated here)."""
        with self.lock:
            ms = self.get_set(set_id)
            if ms.row.kind != "independent":
                raise ServiceError("WrongType", f"set {ms.row.name} is dependent; only "
                                                "independent shadows can be exported")
            if ms.row.exported:
                return
            if ms.set is not None and ms.set.progress().active:
                raise ServiceError("Busy", f"set {ms.row.name} is copying")
            ms.row = ms.row.with_(exported=True)
            self.store.put_set(ms.row)
        self._emit("changed", "set", set_id)

    def join_set(self, set_id: str, bitmap: str) -> None:
        """Take an exported shadow back: merge the bitmap the other host kept for it."""
        with self.lock:
            ms = self.get_set(set_id)
            if not ms.row.exported:
                raise ServiceError("NotExported", f"the shadow of set {ms.row.name} is not "
                                                  "exported")
            with opened([(bitmap, "joined bitmap")], self.file_dirs) as (b,):
                self.live(set_id).join((b.given, b.fd))
            ms.row = ms.row.with_(exported=False)
            self.store.put_set(ms.row)
        self._emit("changed", "set", set_id)

    # ---- groups ----------------------------------------------------------------------------

    def create_group(self, name: str, set_ids: Sequence[str]) -> str:
        options.name(name, "group")
        with self.lock:
            self._name_free(name)
            for sid in set_ids:
                ms = self.get_set(sid)
                if ms.row.grp:
                    raise ServiceError("InUse", f"set {ms.row.name} is already in group "
                                                f"{self.groups[ms.row.grp].name}")
            row = GroupRow(uuid.uuid4().hex, name)
            self.store.put_group(row)
            self.groups[row.id] = row
            for sid in set_ids:
                self._set_group(sid, row.id)
        self._emit("added", "group", row.id)
        return row.id

    def _set_group(self, set_id: str, group_id: str) -> None:
        ms = self.sets[set_id]
        ms.row = ms.row.with_(grp=group_id)
        self.store.put_set(ms.row)
        self._emit("changed", "set", set_id)

    def group_sets(self, group_id: str) -> list[str]:
        return sorted(sid for sid, ms in self.sets.items() if ms.row.grp == group_id)

    def group_add(self, group_id: str, set_id: str) -> None:
        with self.lock:
            if group_id not in self.groups:
                raise not_found(f"no group {group_id}")
            ms = self.get_set(set_id)
            if ms.row.grp == group_id:
                return
            if ms.row.grp:
                raise ServiceError("InUse", f"set {ms.row.name} is in group "
                                            f"{self.groups[ms.row.grp].name}; remove it first")
            self._set_group(set_id, group_id)
        self._emit("changed", "group", group_id)

    def group_remove(self, group_id: str, set_id: str) -> None:
        with self.lock:
            ms = self.get_set(set_id)
            if ms.row.grp != group_id:
                raise not_found(f"set {ms.row.name} is not in this group")
            self._set_group(set_id, "")
        self._emit("changed", "group", group_id)

    def group_rename(self, group_id: str, name: str) -> None:
        options.name(name, "group")
        with self.lock:
            g = self.groups.get(group_id)
            if g is None:
                raise not_found(f"no group {group_id}")
            if g.name == name:
                return
            self._name_free(name)
            self.groups[group_id] = GroupRow(group_id, name)
            self.store.put_group(self.groups[group_id])
        self._emit("changed", "group", group_id)

    def group_delete(self, group_id: str) -> None:
        with self.lock:
            if group_id not in self.groups:
                raise not_found(f"no group {group_id}")
            for sid in self.group_sets(group_id):
                self._set_group(sid, "")
            self.store.delete_group(group_id)
            del self.groups[group_id]
        self._emit("removed", "group", group_id)

    # ---- overflow volumes ------------------------------------------------------------------

    def create_overflow(self, path: str, chunk_size: int) -> str:
        with self.lock:
            for mo in self.overflows.values():
                if mo.row.path == path:
                    raise ServiceError("Exists", f"{path} is already an overflow volume")
            with opened([(path, "overflow")], self.file_dirs) as (v,):
                ov = self.engine.init_overflow((v.given, v.fd), chunk_size)
            ident = v.identity.without_header() if v.identity is not None else None
            row = OverflowRow(ov.status().uuid.hex, path,
                              ident.to_json() if ident is not None else "")
            try:
                self.store.put_overflow(row)
            except BaseException:
                ov.delete()
                raise
            self.overflows[row.id] = ManagedOverflow(row, ov)
        self._emit("added", "overflow", row.id)
        return row.id

    def delete_overflow(self, ov_id: str) -> None:
        with self.lock:
            mo = self.overflows.get(ov_id)
            if mo is None:
                raise not_found(f"no overflow volume {ov_id}")
            if mo.sets:
                names = ", ".join(self.sets[s].row.name for s in mo.sets if s in self.sets)
                raise ServiceError("Dependency", f"overflow volume {mo.row.path} is attached "
                                                 f"to {names}; detach them first")
            if mo.ov is not None:
                mo.ov.delete()
            self.store.delete_overflow(ov_id)
            del self.overflows[ov_id]
        self._emit("removed", "overflow", ov_id)

    # ---- reconcile -------------------------------------------------------------------------

    def refresh(self) -> int:
        """Reconcile the registry with the state store and the engine; how many things changed."""
        changes = 0
        with self.lock:
            stored = {r.id: r for r in self.store.sets()}
            for sid in list(self.sets):
                if sid not in stored:
                    del self.sets[sid]
                    self._emit("removed", "set", sid)
                    changes += 1
            for sid, row in stored.items():
                ms = self.sets.get(sid)
                if ms is None:
                    ms = ManagedSet(row, None)
                    self.sets[sid] = ms
                    self._emit("added", "set", sid)
                    changes += 1
                if ms.row != row:
                    ms.row = row
                    changes += 1
                if ms.set is None:
                    try:
                        ms.set, ms.row = self._open_set(row)
                        self._serve(ms)
                        ms.error = ""
                        changes += 1
                        self._emit("changed", "set", sid)
                    except (eng.PtcopyError, ServiceError, OSError) as e:
                        ms.error = str(e)
            groups = {g.id: g for g in self.store.groups()}
            if groups != self.groups:
                changes += len(set(groups.items()) ^ set(self.groups.items()))
                self.groups = groups
        return changes


def open_check(path: str, role: str, file_dirs: Sequence[str]) -> None:
    """Would this volume be accepted? (Used to explain refusals early.)"""
    v = open_volume(path, role, file_dirs)
    os.close(v.fd)
