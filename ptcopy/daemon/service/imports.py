"""Shadows that move between hosts: export a set's shadow, import a shadow another host
exported (served with a bitmap of every chunk written here), release it, join it back.

An imported shadow is a set of kind ``imported`` (flag ``imported``): one volume (its
``shadow``), a bitmap, no master. Disable on it is the release: it stops serving, flushes and
leaves the bitmap "released" for the exporting host's join (no host opens it as a set again).
No D-Bus here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from typing import Any

from ptcopy import engine as eng
from ptcopy.daemon import options
from ptcopy.daemon.errors import ServiceError, invalid
from ptcopy.daemon.service.core import ManagedSet
from ptcopy.daemon.service.sets import SetOps
from ptcopy.daemon.service.volumes import _expect, _find_again, _record, ident_json
from ptcopy.daemon.state import SetRow
from ptcopy.daemon.volumes import opened
from ptcopy.datapath.base import SetVolumes
from ptcopy.errnames import ErrorName

log = logging.getLogger(__name__)

IMPORTED = "imported"
ROLES = ("shadow", "bitmap")


class ImportOps(SetOps):
    """Export, import, release and join; an imported set's open and serving."""

    def _one_side(self, what: str) -> None:
        caps = self.datapath.caps
        if not caps.serve_one_side:
            raise ServiceError(ErrorName.DATA_PATH, f"the {caps.name} data path cannot {what}: "
                               "it serves a set's master and shadow together, and an imported "
                               "shadow's writes would reach the disk before their bits "
                               "(docs/kernel-path.md)")

    # ---- import ---------------------------------------------------------------------------

    def import_shadow(self, shadow: str, bitmap: str, opts: dict[str, Any]) -> str:
        """Serve a shadow another host exported, tracking every chunk written here in a new
        bitmap on ``bitmap``. Options: name, chunk_size (as the exporting set's; the shadow's
        size gives the chunk count), loop. Nothing is left behind when a step fails."""
        self._one_side("import a shadow")
        if not shadow or not bitmap:
            raise invalid("give the shadow volume and a bitmap volume")
        chunk = int(opts.get("chunk_size", 0))
        with self.lock:
            base = re.sub(r"[^A-Za-z0-9._-]", "-", os.path.basename(shadow))[:55]
            name = str(opts.get("name", "")) or f"imported-{base}"
            options.name(name, "set")
            self._name_free(name)
            with opened([(shadow, "shadow"), (bitmap, "bitmap")], self.file_dirs,
                        exclusive=self.datapath.caps.exclusive_volumes) as got:
                s, b = got
                new = self.engine.import_shadow((s.given, s.fd), (b.given, b.fd),
                                                chunk_size=chunk)
                st = new.status()
                self._bind(st.uuid.hex, got, ROLES)
                row = SetRow(id=st.uuid.hex, name=name, kind=IMPORTED, master="",
                             shadow=shadow, bitmap=bitmap, chunk_size=st.chunk_size,
                             loop=bool(opts.get("loop", True)), imported=True,
                             shadow_ident=ident_json(s), bitmap_ident=ident_json(b))
                ms = ManagedSet(row, new)
                try:
                    self._serve(ms)
                    self.store.put_set(row)
                except BaseException:
                    if ms.served is not None:
                        with contextlib.suppress(Exception):
                            self.datapath.unserve(name, force=True)
                    # a bitmap nobody will join: ended for good
                    with contextlib.suppress(eng.PtcopyError):
                        new.disable()
                    raise
            self.sets[row.id] = ms
        self._emit("added", "set", row.id)
        return row.id

    def _open_set(self, row: SetRow) -> tuple[eng.Set, SetRow]:
        """Open a recorded set; an imported one from its shadow and bitmap, each checked
        against its recorded identity first."""
        if row.kind != IMPORTED:
            new, row = super()._open_set(row)
            if new.status().flags & eng.Flag.EXPORTED and not row.exported:
                # a stop between the header's export and the store's: the header is the truth
                row = row.with_(exported=True)
                self._store_moved(lambda: self.store.put_set(row), f"set {row.name}")
            return new, row
        what = f"set {row.name}"
        expect = [_expect(row, r) for r in ROLES]
        paths = [_find_again(what, r, str(getattr(row, r)), e)[0]
                 for r, e in zip(ROLES, expect, strict=True)]
        with opened(list(zip(paths, ROLES, strict=True)), self.file_dirs,
                    exclusive=self.datapath.caps.exclusive_volumes, expect=expect) as got:
            s, b = got
            new = self.engine.open_imported((s.given, s.fd), (b.given, b.fd))
            self._bind(row.id, got, ROLES)
        changes = _record(what, dict(zip(ROLES, got, strict=True)), row)
        if changes:
            row = row.with_(**changes)
            self._store_moved(lambda: self.store.put_set(row), what)
        return new, row

    def _serve(self, ms: ManagedSet) -> None:
        """Serve a set; an imported one without a master, an exported one without its
        shadow."""
        if ms.set is None:
            return
        row = ms.row
        if row.kind != IMPORTED:
            super()._serve(ms)
            return
        keys = [(row.id, r) for r in ROLES]
        with opened([(row.shadow, "shadow"), (row.bitmap, "bitmap")], self.file_dirs,
                    exclusive=False, held=self._held(keys)) as got:
            for v, key in zip(got, keys, strict=True):
                st = os.fstat(v.fd)
                if self._bound.get(key, (v.block, st.st_rdev if v.block else st.st_ino)) != (
                        v.block, st.st_rdev if v.block else st.st_ino):
                    raise ServiceError(ErrorName.WRONG_VOLUME,
                                       f"{key[1]} volume {v.given} of set {row.name} changed "
                                       "since it was opened; nothing was served")
            s, b = ((v.given, v.fd) for v in got)
            ms.served = self.datapath.serve(row.name, ms.set, SetVolumes(s, s, b),
                                            loop=row.loop)

    # ---- release (Disable of an imported set) ---------------------------------------------

    def disable_set(self, set_id: str) -> None:
        """End a set; an imported one is released (its bitmap goes to the exporting host)."""
        ms = self.get_set(set_id)
        if ms.row.kind != IMPORTED:
            super().disable_set(set_id)
            return
        with self.lock:
            if ms.set is not None:
                if ms.served is not None:
                    self.datapath.unserve(ms.row.name)
                    ms.served = None
                try:
                    ms.set.release()
                except eng.PtcopyError:
                    if not ms.set.closed:
                        self._serve_again(ms)   # put back what users had
                    raise
            self.store.delete_set(set_id)
            del self.sets[set_id]
        log.info("imported shadow %s released: join %s on the host that exported it",
                 ms.row.name, ms.row.bitmap)
        self._emit("removed", "set", set_id)

    # ---- export and join (the exporting host) ---------------------------------------------

    def export_set(self, set_id: str) -> None:
        """Hand the shadow to another host: refused unless the set is independent and its
        shadow holds its point in time whole. The shadow device goes away and the shadow is
        neither read, written, copied nor updated here until it is joined back."""
        with self.lock:
            ms = self.get_set(set_id)
            if ms.row.exported:
                return
            if ms.row.kind != "independent":
                raise ServiceError(ErrorName.WRONG_TYPE, f"set {ms.row.name} is {ms.row.kind}; "
                                   "only independent shadows can be exported")
            self._one_side("export a shadow")
            self._no_group_hold(set_id, "an export")
            self._not_missing(set_id)
            s = self.live(set_id)
            if ms.served is not None:   # refused while the shadow device is in use
                self.datapath.serve_shadow(ms.row.name, False)
            try:
                s.export()
                ms.row = ms.row.with_(exported=True)
                self.store.put_set(ms.row)
            except BaseException:
                if ms.served is not None and not s.status().flags & eng.Flag.EXPORTED:
                    self.datapath.serve_shadow(ms.row.name, True)
                raise
        self._emit("changed", "set", set_id)

    def join_set(self, set_id: str, bitmap: str) -> None:
        """Take an exported shadow back: OR the bitmap the other host kept (released there)
        into the set's shadow bitmap, and serve the shadow again; the next update makes it
        equal to the master."""
        with self.lock:
            ms = self.get_set(set_id)
            if not ms.row.exported:
                raise ServiceError(ErrorName.NOT_EXPORTED,
                                   f"the shadow of set {ms.row.name} is not exported")
            s = self.live(set_id)
            with opened([(bitmap, "joined bitmap")], self.file_dirs) as (b,):
                s.join((b.given, b.fd))
            ms.row = ms.row.with_(exported=False)
            self.store.put_set(ms.row)
            if ms.served is not None:   # the shadow device comes back
                try:
                    self.datapath.serve_shadow(ms.row.name, True)
                except (eng.PtcopyError, OSError) as e:
                    log.error("set %s: its shadow device could not be served again: %s",
                              ms.row.name, e)
                    ms.error = f"shadow not served: {e}"
        self._emit("changed", "set", set_id)
