"""Groups: sets copied together at one point in time, by name. No D-Bus here."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from ptcopy.daemon import options
from ptcopy.daemon.errors import ServiceError, not_found
from ptcopy.daemon.service.core import Core
from ptcopy.daemon.state import GroupRow
from ptcopy.errnames import ErrorName


class GroupOps(Core):
    """What the service does with groups (a group's copy is ``SetOps.copy`` of its sets)."""

    def create_group(self, name: str, set_ids: Sequence[str]) -> str:
        options.name(name, "group")
        with self.lock:
            self._name_free(name)
            for sid in set_ids:
                ms = self.get_set(sid)
                if ms.row.grp:
                    raise ServiceError(ErrorName.IN_USE, f"set {ms.row.name} is already in group "
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
                raise ServiceError(ErrorName.IN_USE, f"set {ms.row.name} is in group "
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
