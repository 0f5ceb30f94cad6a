"""Sets: enable, disable, copy, abort, reset, lock and rename (export and join: ``imports``),
and bringing the recorded sets back at start (``restore``) and on request (``refresh``). No
D-Bus here; the data path is used only through its protocol and its capabilities.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from ptcopy import engine as eng
from ptcopy.daemon import options
from ptcopy.daemon.errors import ServiceError, invalid, not_found
from ptcopy.daemon.service.core import (
    DIRECTIONS,
    KINDS,
    SET_ROLES,
    ManagedOverflow,
    ManagedSet,
    owner_id,
)
from ptcopy.daemon.service.volumes import VolumeOps, ident_json
from ptcopy.daemon.state import SetRow, remove_fallback
from ptcopy.daemon.volumes import Opened, opened
from ptcopy.datapath.base import SetVolumes
from ptcopy.engine import Direction
from ptcopy.errnames import ErrorName

log = logging.getLogger(__name__)


class SetOps(VolumeOps):
    """What the service does with sets."""

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
                    if ms.served is not None:   # a copy a crash interrupted starts again
                        self.datapath.started(ms.row.name, new=False)
                except (eng.PtcopyError, ServiceError, OSError) as e:
                    ms.error = str(e)
                    log.error("set %s did not come back: %s", row.name, e)
                self.sets[row.id] = ms
                if row.overflow in self.overflows:
                    self.overflows[row.overflow].sets.append(row.id)
            self._resume_held()
            log.info("restored %d set(s), %d group(s), %d overflow volume(s)", len(self.sets),
                     len(self.groups), len(self.overflows))

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
        caps = self.datapath.caps
        if in_memory and not caps.bitmap_in_memory:
            raise invalid(f"the {caps.name} data path keeps each set's era metadata and store "
                          "record on its bitmap volume: bitmap_in_memory is not available there")
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
            with opened(vols, self.file_dirs, exclusive=caps.exclusive_volumes) as got:
                m, s = got[0], got[1]
                b = (got[2].given, got[2].fd) if not in_memory else None
                # before the engine writes the bitmap volume
                self.datapath.check_new(
                    KINDS[kind], int(opts.get("chunk_size", 0)) or eng.CHUNK_DEFAULT,
                    m.size, (s.given, s.size),
                    (got[2].given, got[2].size) if not in_memory else None)
                new = self.engine.enable(
                    (m.given, m.fd), (s.given, s.fd), b, KINDS[kind],
                    chunk_size=int(opts.get("chunk_size", 0)), overflow=ov,
                    copy_delay_ms=int(opts.get("copy_delay", 0)),
                    copy_units=int(opts.get("copy_units", 0)))
                st = new.status()
                self._bind(st.uuid.hex, got)
                row = SetRow(id=st.uuid.hex, name=name, kind=kind, master=master,
                             shadow=shadow, bitmap=bitmap, chunk_size=st.chunk_size,
                             overflow=ov_id, grp=grp, copy_delay=st.copy_delay_ms,
                             copy_units=st.copy_units, loop=bool(opts.get("loop", True)),
                             master_ident=ident_json(got[0]), shadow_ident=ident_json(got[1]),
                             bitmap_ident=ident_json(got[2]) if not in_memory else "")
                ms = ManagedSet(row, new)
                try:
                    if not in_memory:
                        self._fallback(new, row.id, name, fresh=True)
                    self._serve_new(ms, got)
                    # a path that runs copies itself starts a new independent set's first copy
                    self.datapath.started(name, new=True)
                    self.store.put_set(row)
                except BaseException:
                    if ms.served is not None:
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

    def _serve_new(self, ms: ManagedSet, got: Sequence[Opened]) -> None:
        """Serve a new set from the descriptors its engine set was just given: they passed the
        checks ``_serve`` makes and are the very volumes the engine has, so opening and
        checking them all again (``_serve``) would only cost time. Block devices a path holds
        exclusively (``_serve`` opens them shared again) and an overflow volume (not among
        these descriptors) still go through ``_serve``."""
        if ms.set is None or ms.row.overflow or (self.datapath.caps.exclusive_volumes
                                                  and any(v.block for v in got)):
            self._serve(ms)
            return
        vols = [(v.given, v.fd) for v in got]
        ms.served = self.datapath.serve(
            ms.row.name, ms.set, SetVolumes(vols[0], vols[1], vols[2] if len(vols) > 2 else None),
            loop=ms.row.loop)

    def disable_set(self, set_id: str) -> None:
        with self.lock:
            ms = self.get_set(set_id)
            if ms.set is not None:
                self._not_suspended(set_id, "before disabling the set")
                self._no_group_hold(set_id, "disabling it")
                if ms.set.progress().active:
                    raise ServiceError(ErrorName.BUSY, f"set {ms.row.name} is copying; wait for "
                                                       "it or abort it first")
                if ms.served is not None:
                    self.datapath.unserve(ms.row.name)
                    ms.served = None
                try:
                    ms.set.disable()
                except eng.PtcopyError:
                    self._serve_again(ms)   # put back what users had
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
            raise ServiceError(ErrorName.NOT_CONFIRMED, "writing the master replaces its data; "
                                                        "pass the option confirm=true")
        with self.lock:
            sets = [self.live(i) for i in set_ids]
            names = [self.sets[i].row.name for i in set_ids]
            for i in set_ids:
                ms = self.sets[i]
                if ms.row.exported:
                    raise ServiceError(ErrorName.EXPORTED, f"the shadow of set {ms.row.name} "
                                                           "is exported; join it back first")
            for i in set_ids:
                self._not_missing(i)
                self._not_suspended(i, "before another copy")
                self._no_group_hold(i, "a copy or update")
            who = owner_id(owner) if owner else 0
            if all(self.sets[i].served is not None for i in set_ids):
                self.datapath.copy(names, d, full=full, owner=who)
            else:   # a set its data path could not serve: the engine copies it alone
                self.engine.group_copy(sets, d, full=full, owner=who)
        for i in set_ids:
            self._emit("changed", "set", i)
            if self.sets[i].row.overflow:   # a new point in time frees overflow chunks
                self._emit("changed", "overflow", self.sets[i].row.overflow)

    def abort(self, set_id: str) -> None:
        s = self.live(set_id)
        ms = self.sets[set_id]
        if ms.served is not None:
            self.datapath.abort(ms.row.name)
        else:
            s.abort()
        self._emit("changed", "set", set_id)

    def suspend(self, set_id: str) -> None:
        """Suspend the set's running copy: it keeps its place (copy bits, progress), the set
        stays copying (the target's missing chunks still come from the source), and it stays
        suspended across a restart until ``resume``."""
        with self.lock:
            s = self.live(set_id)
            ms = self.sets[set_id]
            if ms.served is not None:
                self.datapath.suspend(ms.row.name)
            else:
                s.suspend()
        self._emit("changed", "set", set_id)

    def resume(self, set_id: str) -> None:
        """Resume the set's suspended copy where it stopped."""
        with self.lock:
            s = self.live(set_id)
            ms = self.sets[set_id]
            if ms.served is not None:
                self.datapath.resume(ms.row.name)
            else:
                s.resume()
        self._emit("changed", "set", set_id)

    def _not_suspended(self, set_id: str, then: str) -> None:
        ms = self.sets[set_id]
        if ms.set is not None and ms.set.suspended:
            raise ServiceError(ErrorName.BUSY, f"the copy of set {ms.row.name} is suspended; "
                                               f"resume it or abort it {then}")

    def reset(self, set_id: str, owner: str) -> None:
        with self.lock:
            self._not_missing(set_id)
            s = self.live(set_id)
            self._not_suspended(set_id, "before a reset")
            self._no_group_hold(set_id, "a reset")
            ms = self.sets[set_id]
            for role in SET_ROLES:   # a reset resyncs onto what the devices hold now
                why = self._not_the_same(ms, role)
                if why:
                    raise ServiceError(ErrorName.WRONG_VOLUME, f"set {ms.row.name}: {why}")
            s.reset(owner=owner_id(owner) if owner else 0)
        self._emit("changed", "set", set_id)

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
            self._no_group_hold(set_id, "a rename")
            before = ms.row
            if ms.served is not None:   # devices keep serving: the path renames what it names
                self.datapath.rename(before.name, name)
            try:
                self.store.put_set(before.with_(name=name))
            except BaseException:
                if ms.served is not None:
                    with contextlib.suppress(Exception):
                        self.datapath.rename(name, before.name)
                raise
            ms.row = before.with_(name=name)
        self._emit("changed", "set", set_id)

    def lock_set(self, set_id: str, owner: str) -> None:
        with self.lock:
            ms = self.get_set(set_id)
            self.live(set_id).lock(owner_id(owner))
            ms.locked_by = owner
        self._emit("changed", "set", set_id)

    def unlock_set(self, set_id: str, owner: str) -> None:
        with self.lock:
            ms = self.get_set(set_id)
            if ms.locked_by and ms.locked_by != owner:
                raise ServiceError(ErrorName.IN_USE,
                                   f"set {ms.row.name} is locked by {ms.locked_by}")
            self.live(set_id).unlock(owner_id(owner))
            ms.locked_by = ""
        self._emit("changed", "set", set_id)

    def release_locks_of(self, bus_name: str) -> None:
        """A client went away: its locks go with it."""
        with self.lock:
            for sid, ms in self.sets.items():
                if ms.locked_by == bus_name and ms.set is not None:
                    with contextlib.suppress(eng.PtcopyError):
                        ms.set.unlock(owner_id(bus_name))
                    ms.locked_by = ""
                    self._emit("changed", "set", sid)

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
