"""org.ptcopy.Imaging1.IISet: a set (master, shadow and bitmap volume). The object holds the
Service and the set's id; its methods validate, check authorization and hand the work to the
Service in a worker thread."""

import asyncio
from typing import Any

# dbus-fast's decorators and annotations, also under Debian 12's dbus-fast 1.84
from ptcopy._dbus_compat import (
    DBusDouble,
    DBusObjectPath,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
    dbus_property,
    method,
)
from ptcopy.daemon import options as opt
from ptcopy.daemon.dbus.args import NO_OPTS, Options, R, Strings
from ptcopy.daemon.dbus.bus import IFACE, caller
from ptcopy.daemon.dbus.calls import authorized, copy
from ptcopy.daemon.dbus.context import Context
from ptcopy.daemon.dbus.errors import translated
from ptcopy.daemon.dbus.interface import Interface
from ptcopy.daemon.dbus.paths import NONE, group_path, id_of, overflow_path, set_path
from ptcopy.daemon.service import Service
from ptcopy.engine import Flag

FLAG_NAMES = [
    (Flag.COPYING, "copying"), (Flag.TO_MASTER, "to-master"),
    (Flag.ABORT_REQUESTED, "abort-requested"), (Flag.COMPACT, "compact"),
    (Flag.OUT_OF_SPACE, "out-of-space"), (Flag.SPILLED, "spilled"),
    (Flag.MASTER_OFFLINE, "master-offline"), (Flag.SHADOW_OFFLINE, "shadow-offline"),
    (Flag.BITMAP_OFFLINE, "bitmap-offline"), (Flag.OVERFLOW_OFFLINE, "overflow-offline"),
    (Flag.INCOMPLETE, "incomplete"), (Flag.RECOVERED, "recovered"),
    # the bitmap was lost while offline before a crash: a reset makes the full copy it needs
    (Flag.BITMAP_LOST, "bitmap-lost"),
    # the bitmap is offline and no fallback record took its place: a crash would lose changes
    (Flag.UNRECORDED, "changes-unrecorded"),
    # the copy stopped and keeps its place until Resume (also across a restart)
    (Flag.SUSPENDED, "suspended"),
    # a restore with other sets on the master, held at open until an update to the master
    # (ptcopyd resumes it once every set is open)
    (Flag.RESTORE_HELD, "restore-held"),
]
OFFLINE = Flag.MASTER_OFFLINE | Flag.SHADOW_OFFLINE | Flag.BITMAP_OFFLINE | \
    Flag.OVERFLOW_OFFLINE


class IISet(Interface):
    """A set: master, shadow and bitmap volume."""

    def __init__(self, service: Service, set_id: str, ctx: Context) -> None:
        super().__init__(IFACE + ".IISet")
        self.service = service
        self.id = set_id
        self.ctx = ctx
        self.job = NONE
        self._memo: Any = None
        self._seen: tuple[Any, ...] = ()

    def _ms(self) -> Any:
        return self.service.get_set(self.id)

    def _status(self) -> Any:
        if self._memo is not None:
            return self._memo
        ms = self._ms()
        return ms.set.status() if ms.set is not None and not ms.set.closed else None

    def _stat(self, pick: Any) -> Any:
        """A figure from the engine's status; 0 when the set is not available."""
        st = self._status()
        return pick(st) if st is not None else 0

    @staticmethod
    def _key(st: Any) -> tuple[Any, ...]:
        if st is None:
            return ()
        return (st.generation, st.last_modified_ns, st.flags, st.diff_chunks, st.copy_chunks,
                st.shadow_slots_used, st.overflow_used)

    def changed(self) -> bool:
        """One engine call tells whether the counters moved since the snapshot; a set that
        copies always may have (its progress may come from the data path, not the engine)."""
        self._memo = None
        st = self._status()
        return self._key(st) != self._seen or (st is not None and bool(st.flags & Flag.COPYING))

    def values(self) -> dict[str, Any]:
        self._memo = None
        self._memo = self._status()   # one engine call for all the properties
        self._seen = self._key(self._memo)
        try:
            return super().values()
        finally:
            self._memo = None

    @dbus_property(access=R)
    def Name(self) -> DBusStr:
        """The set's name."""
        return str(self._ms().row.name)

    @dbus_property(access=R)
    def Kind(self) -> DBusStr:
        """'independent', 'dependent' or 'imported' (a shadow another host exported, served
        here with a bitmap of what is written to it; no master)."""
        return str(self._ms().row.kind)

    @dbus_property(access=R)
    def Master(self) -> DBusStr:
        """The master volume ('' for an imported shadow)."""
        return str(self._ms().row.master)

    @dbus_property(access=R)
    def Shadow(self) -> DBusStr:
        """The shadow volume."""
        return str(self._ms().row.shadow)

    @dbus_property(access=R)
    def Bitmap(self) -> DBusStr:
        """The bitmap volume ('' when the bitmaps live in memory)."""
        return str(self._ms().row.bitmap)

    @dbus_property(access=R)
    def MasterDevice(self) -> DBusStr:
        """The block device (or file) applications use for the master ('' for an imported
        shadow)."""
        ms = self._ms()
        served = ms.served
        if served is None or ms.row.imported:
            return ""
        return str(served.master_device or served.master_file)

    @dbus_property(access=R)
    def ShadowDevice(self) -> DBusStr:
        """The block device (or file) applications use for the shadow ('' while it is
        exported)."""
        ms = self._ms()
        served = ms.served
        if served is None or ms.row.exported:
            return ""
        return str(served.shadow_device or served.shadow_file)

    @dbus_property(access=R)
    def Overflow(self) -> DBusObjectPath:
        """The attached overflow volume, '/' if none."""
        ov = self._ms().row.overflow
        return overflow_path(ov) if ov else NONE

    @dbus_property(access=R)
    def Group(self) -> DBusObjectPath:
        """The group the set belongs to, '/' if none."""
        g = self._ms().row.grp
        return group_path(g) if g else NONE

    @dbus_property(access=R)
    def Status(self) -> DBusStr:
        """'normal', 'degraded' (a volume offline, out of space, incomplete) or 'error'
        (the set could not be opened)."""
        st = self._status()
        if st is None:
            return "error"
        bad = OFFLINE | Flag.OUT_OF_SPACE | Flag.INCOMPLETE
        return "degraded" if st.flags & bad or self._ms().missing else "normal"

    @dbus_property(access=R)
    def Flags(self) -> Strings:
        """State flags: copying, to-shadow, to-master, abort-requested, compact, out-of-space,
        spilled, exported, master-offline, shadow-offline, bitmap-offline, overflow-offline,
        incomplete, recovered, bitmap-lost, changes-unrecorded, suspended (with copying: the
        copy waits for Resume), restore-held (a restore with other sets on the master, waiting
        for an update to the master)."""
        st = self._status()
        ms = self._ms()
        out = [n for f, n in FLAG_NAMES if st is not None and st.flags & f]
        if st is not None and st.flags & Flag.COPYING and not st.flags & Flag.TO_MASTER:
            out.insert(1, "to-shadow")
        for role in ms.missing:   # removed devices (udev) the engine may not have noticed
            if f"{role}-offline" not in out:
                out.append(f"{role}-offline")
        if ms.row.exported:
            out.append("exported")
        if ms.row.imported:
            out.append("imported")
        return out

    @dbus_property(access=R)
    def Job(self) -> DBusObjectPath:
        """The job of the running (or last) copy, '/' if none."""
        return self.job

    @dbus_property(access=R)
    def DifferencePercent(self) -> DBusDouble:
        """Share of chunks that differ between master and shadow, in percent."""
        return float(self._stat(lambda st: st.difference_percent))

    @dbus_property(access=R)
    def CopyPercent(self) -> DBusDouble:
        """How far the running (or last) copy got, in percent."""
        ms = self._ms()
        if ms.set is None or ms.set.closed:
            return 0.0
        p = self.service.progress(ms)
        return float(round(100.0 * p.fraction, 1)) if p is not None else 0.0

    @dbus_property(access=R)
    def Size(self) -> DBusUInt64:
        """The master's size in bytes."""
        return int(self._stat(lambda st: st.master_size))

    @dbus_property(access=R)
    def ChunkSize(self) -> DBusUInt32:
        """Bytes per chunk."""
        return int(self._ms().row.chunk_size)

    @dbus_property(access=R)
    def ShadowChunksTotal(self) -> DBusUInt64:
        """Chunks the shadow volume can hold."""
        return int(self._stat(lambda st: st.shadow_slots))

    @dbus_property(access=R)
    def ShadowChunksUsed(self) -> DBusUInt64:
        """Chunks of the shadow in use (compact shadows: allocated ones)."""
        return int(self._stat(lambda st: st.shadow_slots_used + st.overflow_used))

    @dbus_property(access=R)
    def CopyDelay(self) -> DBusUInt32:
        """Copy throttle: milliseconds to pause after every CopyUnits chunks."""
        return int(self._ms().row.copy_delay)

    @dbus_property(access=R)
    def CopyUnits(self) -> DBusUInt32:
        """Copy throttle: chunks between pauses."""
        return int(self._ms().row.copy_units)

    @dbus_property(access=R)
    def LastModified(self) -> DBusUInt64:
        """Last write through the set, microseconds since the epoch (0: none yet)."""
        return int(self._stat(lambda st: st.last_modified_ns // 1000))

    @dbus_property(access=R)
    def LockedBy(self) -> DBusStr:
        """The bus name holding the set's lock ('' if none)."""
        return str(self._ms().locked_by)

    async def _copy(self, direction: DBusStr, options: Options, full: bool) -> str:
        uid = await copy(self.ctx, self.service, [self.id], direction, options, full,
                         "copy or update sets")
        what = f"{'copy' if full else 'update'}-to-{direction}"
        return self.ctx.start_job(what, [set_path(self.id)], [self.id], uid)

    @method()
    @translated
    async def Copy(self, direction: DBusStr, options: Options) -> DBusObjectPath:
        """Full copy to 'shadow' or 'master' (writing the master needs confirm=true); returns
        the job."""
        return await self._copy(direction, options, True)

    @method()
    @translated
    async def Update(self, direction: DBusStr, options: Options) -> DBusObjectPath:
        """Update (only the chunks that differ) to 'shadow' or 'master'; returns the job."""
        return await self._copy(direction, options, False)

    @method()
    @translated
    async def Abort(self, options: Options) -> None:
        """Stop the running copy; the target is left consistent but incomplete."""
        await authorized(self.ctx, options, "abort copies",
                         self.service.abort, self.id)

    @method()
    @translated
    async def Suspend(self, options: Options) -> None:
        """Suspend the running copy: it keeps its place (what was copied stays copied) and the
        set stays copying (the target's missing chunks still come from the source) until
        Resume, also across a daemon restart. The copy's job ends, saying so."""
        await authorized(self.ctx, options, "suspend copies",
                         self.service.suspend, self.id)

    @method()
    @translated
    async def Resume(self, options: Options) -> DBusObjectPath:
        """Resume the suspended copy where it stopped; returns its job."""
        opt.parse(options, NO_OPTS)
        uid = await self.ctx.auth.check("resume copies")
        await asyncio.to_thread(self.service.resume, self.id)
        direction = "master" if self._stat(lambda st: st.flags & Flag.TO_MASTER) else "shadow"
        return self.ctx.start_job(f"resume-to-{direction}", [set_path(self.id)], [self.id], uid)

    @method()
    @translated
    async def Reset(self, options: Options) -> DBusObjectPath:
        """Bring offline volumes back and start the resync they need; returns its job or '/'."""
        opt.parse(options, NO_OPTS)
        uid = await self.ctx.auth.check("reset sets")
        await asyncio.to_thread(self.service.reset, self.id, caller.get())
        ms = self._ms()
        if self.service.copying(ms):
            return self.ctx.start_job("reset", [set_path(self.id)], [self.id], uid)
        return NONE

    @method()
    @translated
    async def Disable(self, options: Options) -> None:
        """End the set (refused while it copies). The volumes keep their data. On an imported
        shadow this is the release: it stops serving, flushes, and leaves its bitmap
        'released' for Join on the host that exported it (no host opens it as a set again)."""
        await authorized(self.ctx, options, "disable sets",
                         self.service.disable_set, self.id)

    @method()
    @translated
    async def SetCopyParameters(self, delay: DBusUInt32, units: DBusUInt32,
                                options: Options) -> None:
        """Throttle copies: pause delay ms after every units chunks; applies at once."""
        await authorized(self.ctx, options, "change copy parameters",
                         self.service.set_params, self.id, delay, units)

    @method()
    @translated
    async def AttachOverflow(self, overflow: DBusObjectPath, options: Options) -> None:
        """Attach an overflow volume (compact dependent sets only)."""
        opt.parse(options, NO_OPTS)
        oid = id_of(overflow, "overflow")
        await self.ctx.auth.check("attach overflow volumes")
        await asyncio.to_thread(self.service.attach_overflow, self.id, oid)

    @method()
    @translated
    async def DetachOverflow(self, options: Options) -> None:
        """Detach the overflow volume (refused while chunks of the set live there)."""
        await authorized(self.ctx, options, "detach overflow volumes",
                         self.service.detach_overflow, self.id)

    @method()
    @translated
    async def Export(self, options: Options) -> None:
        """Hand the shadow to another host (independent sets whose copy is complete and whose
        shadow is not incomplete): its device goes away, and it is neither read, written,
        copied nor updated here until Join. Idempotent; survives a restart."""
        await authorized(self.ctx, options, "export shadows",
                         self.service.export_set, self.id)

    @method()
    @translated
    async def Join(self, bitmap: DBusStr, options: Options) -> DBusObjectPath:
        """Take the exported shadow back: OR the bitmap the other host kept while it used the
        shadow (released there: refused while still imported) into this set's shadow bitmap,
        so the next update resyncs those chunks, and serve the shadow again. Returns '/' (no
        work starts; run Update when ready)."""
        await authorized(self.ctx, options, "join shadows",
                         self.service.join_set, self.id, bitmap)
        return NONE

    @method()
    @translated
    async def Rename(self, name: DBusStr, options: Options) -> None:
        """Give the set another name. Its devices keep serving: on the userspace path the
        FUSE files move to the new name (same inodes; loop devices are numbered), on the
        kernel path its device-mapper devices are renamed (same devices, same openers)."""
        await authorized(self.ctx, options, "rename sets",
                         self.service.rename_set, self.id, name)

    @method()
    @translated
    async def Lock(self, options: Options) -> None:
        """Lock the set for the caller: copies by others are refused until Unlock or until the
        caller leaves the bus."""
        opt.parse(options, NO_OPTS)
        await self.ctx.auth.check("lock sets")
        who = caller.get()
        await asyncio.to_thread(self.service.lock_set, self.id, who)
        await self.ctx.release_if_gone(who)

    @method()
    @translated
    async def Unlock(self, options: Options) -> None:
        """Release the caller's lock."""
        await authorized(self.ctx, options, "unlock sets",
                         self.service.unlock_set, self.id, caller.get())
