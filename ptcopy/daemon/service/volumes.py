"""A set's volumes as the service sees them: opened and checked against their recorded
identities, found again under another name, bound to the descriptors the engine was given,
handed to the data path, and followed as udev sees them go and come back. No D-Bus here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence

from ptcopy import engine as eng
from ptcopy.daemon import identity
from ptcopy.daemon.errors import ServiceError
from ptcopy.daemon.identity import Identity
from ptcopy.daemon.service.core import SET_ROLES, Core, ManagedSet
from ptcopy.daemon.state import OverflowRow, SetRow, open_fallback
from ptcopy.daemon.volumes import Expect, Opened, open_volume, opened
from ptcopy.datapath.base import SetVolumes
from ptcopy.errnames import ErrorName

log = logging.getLogger(__name__)


def _ident_attr(role: str) -> tuple[str, str]:
    """The row attributes holding a role's path and identity."""
    return ("path", "ident") if role == "overflow" else (role, f"{role}_ident")


def ident_json(v: Opened) -> str:
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

class VolumeOps(Core):
    """Opening recorded sets and overflow volumes, serving sets, and volumes that come and go."""

    def _open_set(self, row: SetRow) -> tuple[eng.Set, SetRow]:
        """Open a recorded set, each volume checked against its recorded identity before the
        engine touches it (the engine's open writes the bitmap header). A block device that
        moved to another name is found again there. The row comes back with new paths and
        newly recorded identities (already stored)."""
        ov = self.overflows[row.overflow].ov if row.overflow in self.overflows else None
        if row.overflow and ov is None:
            raise ServiceError(ErrorName.OFFLINE,
                               f"overflow volume of set {row.name} is missing")
        if not row.bitmap:
            raise ServiceError(ErrorName.OFFLINE, f"set {row.name} kept its bitmaps in memory "
                                                  "only; they did not survive the restart")
        what = f"set {row.name}"
        expect = [_expect(row, r) for r in SET_ROLES]
        paths: dict[str, str] = {}
        notes: dict[str, str] = {}
        for r, want in zip(SET_ROLES, expect, strict=True):
            paths[r], notes[r] = _find_again(what, r, str(getattr(row, r)), want)
        vols = [(paths[r], r) for r in SET_ROLES]
        try:
            with opened(vols, self.file_dirs, exclusive=self.datapath.caps.exclusive_volumes,
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

    def _resume_held(self) -> None:
        """Resume the restores the engine held at open (a restore from one of several shadows
        that a crash or stop interrupted): only now that every set that came back is open does
        each of them keep its point in time while the restore moves chunks."""
        for ms in self.sets.values():
            if ms.set is None or ms.served is None:
                continue
            try:
                if ms.set.status().flags & eng.Flag.RESTORE_HELD:
                    log.info("set %s: resuming its interrupted restore of the master",
                             ms.row.name)
                    ms.set.update(eng.Direction.TO_MASTER)
            except eng.PtcopyError as e:
                log.error("set %s: its interrupted restore of the master did not resume: %s",
                          ms.row.name, e)

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
            raise ServiceError(ErrorName.FAILED, f"set {name}: cannot use its fallback record "
                                                 f"in {self.state_dir}: {e}") from e
        if lost:
            log.warning("set %s: its bitmap volume was lost while offline before ptcopyd last "
                        "stopped (crash or stop); changes made then are recorded nowhere else, "
                        "so every chunk counts as changed and the shadow stays offline until "
                        "a reset makes a full copy", name)

    def _bind(self, owner: str, got: Sequence[Opened],
              roles: Sequence[str] = SET_ROLES) -> None:
        """Remember which volume the engine was given for each role of a set (or overflow):
        later opens of the same path must find the same one."""
        for r, v in zip(roles, got, strict=False):
            st = os.fstat(v.fd)
            self._bound[(owner, r)] = (v.block, st.st_rdev if v.block else st.st_ino)

    def _open_overflow(self, row: OverflowRow) -> tuple[eng.Overflow, OverflowRow]:
        """Open a recorded overflow volume, checked and found again as a set's volumes."""
        what = f"overflow volume {row.id}"
        want = Expect(Identity.from_json(row.ident), row.id)
        path, note = _find_again(what, "overflow", row.path, want)
        try:
            with opened([(path, "overflow")], self.file_dirs, expect=[want]) as (v,):
                ov = self.engine.open_overflow((v.given, v.fd))
                self._bind(row.id, [v], ("overflow",))
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

    def _serve(self, ms: ManagedSet) -> None:
        """Serve an open set from descriptors checked as the engine's were (a file only under
        --file-volumes, never the root disk or a device ptcopy serves), each the very volume
        the engine has open: the data path resolves no path again."""
        if ms.set is None:
            return
        row = ms.row
        ov = self.overflows.get(row.overflow)
        vols = [(row.master, "master"), (row.shadow, "shadow")]
        keys = [(row.id, "master"), (row.id, "shadow")]
        if row.bitmap:
            vols.append((row.bitmap, "bitmap"))
            keys.append((row.id, "bitmap"))
        if ov is not None:
            vols.append((ov.row.path, "overflow"))
            keys.append((ov.row.id, "overflow"))
        with opened(vols, self.file_dirs, exclusive=False, held=self._held(keys)) as got:
            for v, (_, role), key in zip(got, vols, keys, strict=True):
                st = os.fstat(v.fd)
                bound = self._bound.get(key)
                if bound is not None and bound != (v.block,
                                                   st.st_rdev if v.block else st.st_ino):
                    raise ServiceError(ErrorName.WRONG_VOLUME,
                                       f"{role} volume {v.given} of set {row.name} changed "
                                       "since it was opened; nothing was served")
            spec = {role: (v.given, v.fd) for v, (_, role) in zip(got, vols, strict=True)}
            volumes = SetVolumes(spec["master"], spec["shadow"], spec.get("bitmap"),
                                 spec.get("overflow"))
            ms.served = self.datapath.serve(row.name, ms.set, volumes, loop=row.loop,
                                            shadow=not row.exported)

    def _serve_again(self, ms: ManagedSet) -> None:
        """Put back what users had after a step that unserved the set failed; the failure
        that step reports stays the one the caller sees (logged when serving fails too)."""
        try:
            self._serve(ms)
        except (eng.PtcopyError, ServiceError, OSError) as e:
            log.error("set %s: could not be served again: %s", ms.row.name, e)
            ms.error = f"not served: {e}"

    def _held(self, keys: Sequence[tuple[str, str]]) -> list[int | None]:
        """The block devices the engine holds exclusively for these volumes (a path with
        exclusive volumes): opened shared again to be served."""
        if not self.datapath.caps.exclusive_volumes:
            return [None] * len(keys)
        out: list[int | None] = []
        for key in keys:
            bound = self._bound.get(key)
            out.append(bound[1] if bound is not None and bound[0] else None)
        return out

    # ---- volumes that come and go (udev) ---------------------------------------------------

    def _not_missing(self, set_id: str) -> None:
        ms = self.get_set(set_id)
        if ms.missing:
            vols = ", ".join(f"{r} {getattr(ms.row, r)}" for r in ms.missing)
            raise ServiceError(ErrorName.OFFLINE,
                               f"set {ms.row.name} has a volume that was removed ({vols}); "
                               "plug it back in (the set resumes by itself) or run Refresh"
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
            self._resume_held()
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
            if ms.served is not None:
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


def open_check(path: str, role: str, file_dirs: Sequence[str]) -> None:
    """Would this volume be accepted? (Used to explain refusals early.)"""
    v = open_volume(path, role, file_dirs)
    os.close(v.fd)
