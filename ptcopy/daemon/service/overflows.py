"""Overflow volumes: where compact dependent shadows spill, attached to and detached from
sets. No D-Bus here."""

from __future__ import annotations

import contextlib

from ptcopy.daemon.errors import ServiceError, not_found
from ptcopy.daemon.service.core import ManagedOverflow
from ptcopy.daemon.service.volumes import VolumeOps
from ptcopy.daemon.state import OverflowRow
from ptcopy.daemon.volumes import opened
from ptcopy.errnames import ErrorName


class OverflowOps(VolumeOps):
    """What the service does with overflow volumes."""

    def create_overflow(self, path: str, chunk_size: int) -> str:
        with self.lock:
            for mo in self.overflows.values():
                if mo.row.path == path:
                    raise ServiceError(ErrorName.EXISTS, f"{path} is already an overflow volume")
            with opened([(path, "overflow")], self.file_dirs) as (v,):
                ov = self.engine.init_overflow((v.given, v.fd), chunk_size)
                self._bind(ov.status().uuid.hex, [v], ("overflow",))
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
                raise ServiceError(ErrorName.DEPENDENCY, f"overflow volume {mo.row.path} is "
                                                         f"attached to {names}; detach them "
                                                         "first")
            if mo.ov is not None:
                mo.ov.delete()
            self.store.delete_overflow(ov_id)
            del self.overflows[ov_id]
        self._emit("removed", "overflow", ov_id)

    def attach_overflow(self, set_id: str, ov_id: str) -> None:
        with self.lock:
            ms = self.get_set(set_id)
            mo = self.overflows.get(ov_id)
            if mo is None or mo.ov is None:
                raise not_found(f"no overflow volume {ov_id}")
            if ms.row.overflow == ov_id:
                return
            self._no_group_hold(set_id, "attaching an overflow volume")
            self.live(set_id).attach_overflow(mo.ov)
            if ms.served is not None:
                # checked, and served from that descriptor
                with opened([(mo.row.path, "overflow")], self.file_dirs, exclusive=False,
                            held=self._held([(ov_id, "overflow")])) as (v,):
                    self.datapath.attach_overflow(ms.row.name, (v.given, v.fd))
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
            self._no_group_hold(set_id, "detaching its overflow volume")
            if ms.served is not None:
                self.datapath.detach_overflow(ms.row.name)   # refused while the path uses it
            self.live(set_id).detach_overflow()
            ms.row = ms.row.with_(overflow="")
            self.store.put_set(ms.row)
            with contextlib.suppress(ValueError):
                self.overflows[ov_id].sets.remove(set_id)
        self._emit("changed", "set", set_id)
        self._emit("changed", "overflow", ov_id)
