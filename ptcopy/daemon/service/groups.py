"""Groups: sets copied together at one point in time, by name; the hosts a group spans, and
the hold a coordinator spanning them drives (freeze every member on every host first, then
take the point in time on each). No D-Bus here."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import uuid
from collections.abc import Sequence

from ptcopy import engine as eng
from ptcopy.daemon import options
from ptcopy.daemon.errors import ServiceError, invalid, not_found
from ptcopy.daemon.service.core import DIRECTIONS, GroupHold, owner_id
from ptcopy.daemon.service.volumes import VolumeOps
from ptcopy.daemon.state import GroupRow
from ptcopy.datapath.base import HeldPoint
from ptcopy.engine import Direction
from ptcopy.errnames import ErrorName

HOLD_TIMEOUT_MAX = 30.0   # seconds: the longest writers may be frozen waiting for a coordinator
OPERATIONS = {"copy": True, "update": False}   # -> full
# a registered host name or [USER@]HOST[:PORT] (IPv6 in brackets)
_HOST = re.compile(r"[A-Za-z0-9._%+-]+@?[A-Za-z0-9._\[\]:-]*")


def check_hosts(hosts: Sequence[str]) -> tuple[str, ...]:
    """The hosts a group spans, checked: ssh targets or registered names, no duplicates."""
    out: list[str] = []
    for h in hosts:
        if not h or len(h) > 255 or not _HOST.fullmatch(h) or h.startswith("-"):
            raise invalid(f"{h!r} is not a host: give a registered host name or "
                          "[USER@]HOST[:PORT]")
        if h in out:
            raise invalid(f"host {h} is named twice")
        out.append(h)
    return tuple(out)


class GroupOps(VolumeOps):
    """What the service does with groups (a group's copy is ``SetOps.copy`` of its sets)."""

    def create_group(self, name: str, set_ids: Sequence[str],
                     hosts: Sequence[str] = ()) -> str:
        options.name(name, "group")
        spans = check_hosts(hosts)
        with self.lock:
            self._name_free(name)
            for sid in set_ids:
                ms = self.get_set(sid)
                if ms.row.grp:
                    raise ServiceError(ErrorName.IN_USE, f"set {ms.row.name} is already in group "
                                                f"{self.groups[ms.row.grp].name}")
            row = GroupRow(uuid.uuid4().hex, name, spans)
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
            self._group_not_held(group_id, "adding a set")
            if ms.row.grp:
                raise ServiceError(ErrorName.IN_USE, f"set {ms.row.name} is in group "
                                            f"{self.groups[ms.row.grp].name}; remove it first")
            self._set_group(set_id, group_id)
        self._emit("changed", "group", group_id)

    def group_remove(self, group_id: str, set_id: str) -> None:
        with self.lock:
            ms = self.get_set(set_id)
            if ms.row.grp != group_id:
                raise not_found(f"set {ms.row.name} is not in this group")
            self._group_not_held(group_id, "removing a set")
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
            self.groups[group_id] = dataclasses.replace(g, name=name)
            self.store.put_group(self.groups[group_id])
        self._emit("changed", "group", group_id)

    def group_delete(self, group_id: str) -> None:
        with self.lock:
            if group_id not in self.groups:
                raise not_found(f"no group {group_id}")
            self._group_not_held(group_id, "deleting it")
            for sid in self.group_sets(group_id):
                self._set_group(sid, "")
            self.store.delete_group(group_id)
            del self.groups[group_id]
        self._emit("removed", "group", group_id)

    def group_set_hosts(self, group_id: str, hosts: Sequence[str]) -> None:
        """Record the other hosts the group spans (empty: a group of this host only)."""
        spans = check_hosts(hosts)
        with self.lock:
            g = self.groups.get(group_id)
            if g is None:
                raise not_found(f"no group {group_id}")
            if g.hosts == spans:
                return
            row = dataclasses.replace(g, hosts=spans)
            self.store.put_group(row)
            self.groups[group_id] = row
        self._emit("changed", "group", group_id)

    # ---- a point in time held for a coordinator ------------------------------------------

    def _group_not_held(self, group_id: str, what: str) -> None:
        for h in list(self.holds.values()):
            if h.group_id == group_id and not h.expired:
                raise ServiceError(ErrorName.BUSY, f"group {self.groups[group_id].name} is held "
                                   f"for a point in time; {what} waits for the hold to be "
                                   f"released (at most {h.timeout:g} s)")

    def group_hold(self, group_id: str, operation: str, direction: str, timeout: float,
                   confirm: bool, owner: str) -> GroupHold:
        """Freeze writes to every member's source and check every member can take part (all
        or nothing); the point in time is taken (or not) by ``group_release``. Thawed unchanged
        by the engine after ``timeout`` seconds if not released."""
        if operation not in OPERATIONS:
            raise invalid(f"operation {operation!r} is neither 'copy' nor 'update'")
        options.direction(direction)
        d = DIRECTIONS[direction]
        if d is Direction.TO_MASTER and not confirm:
            raise ServiceError(ErrorName.NOT_CONFIRMED, "writing the master replaces its data; "
                                                        "pass the option confirm=true")
        if not 0 < timeout <= HOLD_TIMEOUT_MAX:
            raise invalid(f"a hold's timeout is {timeout:g} s; it must be above 0 and at most "
                          f"{HOLD_TIMEOUT_MAX:g}")
        with self.lock:
            g = self.groups.get(group_id)
            if g is None:
                raise not_found(f"no group {group_id}")
            self._group_not_held(group_id, "another hold")
            ids = self.group_sets(group_id)
            if not ids:
                raise invalid(f"group {g.name} has no sets")
            sets = [self.live(i) for i in ids]
            for i in ids:
                ms = self.sets[i]
                if ms.row.exported and d is Direction.TO_SHADOW:
                    raise ServiceError(ErrorName.EXPORTED, f"the shadow of set {ms.row.name} "
                                                           "is exported; join it back first")
                self._not_missing(i)
                self._no_group_hold(i, "another hold")
            full = OPERATIONS[operation]
            who = owner_id(owner) if owner else 0
            point: HeldPoint
            if all(self.sets[i].served is not None for i in ids):
                # a path without caps.group_hold refuses in its own words
                point = self.datapath.hold([self.sets[i].row.name for i in ids], d, full=full,
                                           owner=who, timeout=timeout)
            else:   # a set its data path could not serve: the engine holds it alone
                point = self.engine.group_hold(sets, d, full=full, owner=who, timeout=timeout)
            h = GroupHold(uuid.uuid4().hex, group_id, ids, owner, point, timeout, full,
                          direction)
            with self.holds_lock:
                self.holds[h.token] = h
        self._emit("changed", "group", group_id)
        return h

    # Ending a hold takes holds_lock, never self.lock: an operation holding self.lock may wait
    # at a frozen master's gate (a sibling set's copy), and only the release thaws it.

    def group_release(self, group_id: str, token: str, commit: bool,
                      owner: str) -> tuple[GroupHold, float]:
        """End a hold of the group: take the point in time (``commit``: the instant of the
        hold; copies start) or not, and thaw. Only its maker may. Returns it and the seconds
        writes were frozen."""
        with self.holds_lock:
            h = self.holds.get(token)
            if h is None or h.group_id != group_id:
                raise not_found(f"no hold {token} on this group (released already, or its "
                                "maker left)")
            if h.owner != owner:
                raise ServiceError(ErrorName.NOT_AUTHORIZED, "only the client that made a hold "
                                                             "may release it")
            del self.holds[token]
        if h.expired:
            raise ServiceError(ErrorName.TIMEOUT, f"the hold was not released within "
                               f"{h.timeout:g} s: every member was thawed without a new point "
                               "in time")
        try:
            frozen = h.point.release(commit)
        finally:
            self._hold_ended(h)
        return h, frozen

    def group_expire(self, token: str) -> None:
        """At a hold's timeout: the engine has thawed it unchanged; drop the engine's handle and
        keep the record so that its maker's Release says what happened."""
        with self.holds_lock:
            h = self.holds.get(token)
            if h is None or h.expired:
                return
            h.expired = True
        with contextlib.suppress(eng.PtcopyError):   # Timeout: thawed already, as expected
            h.point.release(False)
        self._hold_ended(h)

    def release_holds_of(self, bus_name: str) -> None:
        """A client went away: its holds are thawed unchanged at once."""
        with self.holds_lock:
            gone = [self.holds.pop(t) for t, h in list(self.holds.items()) if h.owner == bus_name]
        for h in gone:
            if not h.expired:
                with contextlib.suppress(eng.PtcopyError):   # thawed already by a close
                    h.point.release(False)
                self._hold_ended(h)

    def _hold_ended(self, h: GroupHold) -> None:
        self._emit("changed", "group", h.group_id)
        for i in h.set_ids:
            if i in self.sets:
                self._emit("changed", "set", i)
