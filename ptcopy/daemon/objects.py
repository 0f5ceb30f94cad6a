"""The D-Bus objects: Manager, IISet, IIGroup, IIOverflow and Volume. Method bodies are thin:
they validate, check authorization, and hand the work to the Service in a worker thread."""


import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from dbus_fast import Variant
from dbus_fast.constants import PropertyAccess

from ptcopy import __version__

# dbus-fast's decorators and annotations, also under Debian 12's dbus-fast 1.84
from ptcopy._dbus_compat import (
    DBusBool,
    DBusDouble,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
    dbus_property,
    method,
)
from ptcopy.daemon import options as opt
from ptcopy.daemon.bus import IFACE, ROOT, Interface, caller
from ptcopy.daemon.discovery import VolumeView
from ptcopy.daemon.errors import ServiceError, invalid, translated
from ptcopy.engine import Flag

if TYPE_CHECKING:
    from ptcopy.daemon.app import Daemon

R = PropertyAccess.READ
Options = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
Paths = Annotated[list[str], DBusSignature("ao")]
Strings = Annotated[list[str], DBusSignature("as")]
TwoPaths = Annotated[tuple[str, str], DBusSignature("oo")]

NO_OPTS: dict[str, opt.Opt] = {}
CONFIRM = {"confirm": opt.Opt("b", "true to allow writing the master")}
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
]
OFFLINE = Flag.MASTER_OFFLINE | Flag.SHADOW_OFFLINE | Flag.BITMAP_OFFLINE | \
    Flag.OVERFLOW_OFFLINE


def set_path(set_id: str) -> str:
    return f"{ROOT}/sets/{set_id}"


def group_path(group_id: str) -> str:
    return f"{ROOT}/groups/{group_id}"


def overflow_path(ov_id: str) -> str:
    return f"{ROOT}/overflow/{ov_id}"


def id_of(path: str, kind: str) -> str:
    prefix = f"{ROOT}/{kind}/"
    if not path.startswith(prefix) or "/" in path[len(prefix):] or len(path) == len(prefix):
        raise invalid(f"{path!r} is not a {kind.rstrip('s')} object path")
    return path[len(prefix):]


class Manager(Interface):
    """The root object: creates sets, groups and overflow volumes, and finds them."""

    def __init__(self, d: "Daemon") -> None:
        super().__init__(IFACE + ".Manager")
        self.d = d

    @dbus_property(access=R)
    def Version(self) -> DBusStr:
        """ptcopy's version."""
        return __version__

    @dbus_property(access=R)
    def DataPath(self) -> DBusStr:
        """How volumes are served: 'kernel' (device-mapper), 'userspace' (FUSE + loop devices)
        or 'none'."""
        return self.d.service.data_path

    @method()
    @translated
    async def CreateSet(self, name: DBusStr, kind: DBusStr, master: DBusStr, shadow: DBusStr,
                        bitmap: DBusStr,
                        options: Options) -> TwoPaths:
        """Enable a set (kind 'independent' or 'dependent'); returns the set and the job of its
        initial copy ('/' when none). Options: chunk_size u, overflow o, group o, copy_delay u,
        copy_units u, bitmap_in_memory b, loop b (attach loop devices, default true)."""
        o = opt.parse(options, {
            "chunk_size": opt.Opt("u", "bytes, a power of two from 4096 to 1048576"),
            "overflow": opt.Opt("o", "an overflow volume object"),
            "group": opt.Opt("o", "a group object"),
            "copy_delay": opt.Opt("u", "milliseconds to pause"),
            "copy_units": opt.Opt("u", "chunks between pauses"),
            "bitmap_in_memory": opt.Opt("b", "keep the bitmaps in memory only"),
            "loop": opt.Opt("b", "attach loop devices to the served volumes"),
        })
        opt.chunk_size(int(o.get("chunk_size", 0)))
        if "overflow" in o:
            o["overflow"] = id_of(o["overflow"], "overflow")
        if "group" in o:
            o["group"] = id_of(o["group"], "groups")
        uid = await self.d.auth.check("create sets")
        set_id = await asyncio.to_thread(self.d.service.create_set, name, kind, master, shadow,
                                         bitmap, o)
        job = "/"
        ms = self.d.service.sets[set_id]
        if self.d.service.copying(ms):
            job = self.d.start_job("copy-to-shadow", [set_path(set_id)], [set_id], uid)
        return (set_path(set_id), job)

    @method()
    @translated
    async def CreateGroup(self, name: DBusStr, sets: Paths,
                          options: Options) -> DBusObjectPath:
        """Create a group of sets that copy and update at one point in time."""
        opt.parse(options, NO_OPTS)
        ids = [id_of(p, "sets") for p in sets]
        await self.d.auth.check("create groups")
        gid = await asyncio.to_thread(self.d.service.create_group, name, ids)
        return group_path(gid)

    @method()
    @translated
    async def CreateOverflow(self, path: DBusStr,
                             options: Options) -> DBusObjectPath:
        """Initialise a volume as an overflow volume for compact dependent sets.
        Options: chunk_size u."""
        o = opt.parse(options, {"chunk_size": opt.Opt("u", "bytes, as the sets using it")})
        opt.chunk_size(int(o.get("chunk_size", 0)))
        await self.d.auth.check("create overflow volumes")
        oid = await asyncio.to_thread(self.d.service.create_overflow, path,
                                      int(o.get("chunk_size", 0)))
        return overflow_path(oid)

    @method()
    @translated
    async def LookUp(self, name: DBusStr) -> DBusObjectPath:
        """A set (by name or shadow path), group (by name) or overflow volume (by path);
        '/' when there is none."""
        found = self.d.service.find(name)
        if found is None:
            return "/"
        kind, ident = found
        return {"set": set_path, "group": group_path, "overflow": overflow_path}[kind](ident)

    @method()
    @translated
    async def Candidates(self, master: DBusStr, role: DBusStr, options: Options) -> Paths:
        """Volumes that could be the 'shadow' or 'bitmap' of a set with this master: available
        now and large enough (an independent shadow at least as large as the master, a bitmap
        at least the engine's bitmap size), smallest first. Options: kind s ('independent',
        the default, or 'dependent': any size, smaller ones are compact), chunk_size u,
        shadow s (the shadow, to size a bitmap exactly; default: as large as the master)."""
        o = opt.parse(options, {
            "kind": opt.Opt("s", "'independent' or 'dependent'"),
            "chunk_size": opt.Opt("u", "bytes, a power of two from 4096 to 1048576"),
            "shadow": opt.Opt("s", "the shadow volume (sizes the bitmap)"),
        })
        if role not in ("shadow", "bitmap"):
            raise invalid(f"role {role!r} must be 'shadow' or 'bitmap'")
        kind = str(o.get("kind", "independent"))
        if kind not in ("independent", "dependent"):
            raise invalid(f"kind {kind!r} must be 'independent' or 'dependent'")
        chunk = opt.chunk_size(int(o.get("chunk_size", 0)))
        opt.path(master, "master")
        shadow = str(o.get("shadow", ""))
        if shadow:
            opt.path(shadow, "shadow")
        sender = caller.get()
        uid = await self.d.auth.uid_of(sender) if sender else -1
        views = self.d.candidate_views()   # on the loop, which owns what it reads
        return await asyncio.to_thread(self.d.candidates, views, master, role, kind, chunk,
                                       shadow, uid)

    @method()
    @translated
    async def Refresh(self, options: Options) -> DBusUInt32:
        """Reconcile with the state store and the engine from scratch; how many things changed
        (0 after any normal operation)."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("refresh")
        n = await asyncio.to_thread(self.d.service.refresh)
        n += await self.d.rediscover()
        self.d.sync_objects()
        return n


class IISet(Interface):
    """A set: master, shadow and bitmap volume."""

    def __init__(self, d: "Daemon", set_id: str) -> None:
        super().__init__(IFACE + ".IISet")
        self.d = d
        self.id = set_id
        self.job = "/"
        self._memo: Any = None
        self._seen: tuple[Any, ...] = ()

    def _ms(self) -> Any:
        return self.d.service.get_set(self.id)

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
        """One engine call tells whether the counters moved since the snapshot."""
        self._memo = None
        return self._key(self._status()) != self._seen

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
        """'independent' or 'dependent'."""
        return str(self._ms().row.kind)

    @dbus_property(access=R)
    def Master(self) -> DBusStr:
        """The master volume."""
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
        """The block device (or file) applications use for the master."""
        served = self._ms().served
        if served is None:
            return ""
        return str(served.master_device or served.master_file)

    @dbus_property(access=R)
    def ShadowDevice(self) -> DBusStr:
        """The block device (or file) applications use for the shadow."""
        served = self._ms().served
        if served is None:
            return ""
        return str(served.shadow_device or served.shadow_file)

    @dbus_property(access=R)
    def Overflow(self) -> DBusObjectPath:
        """The attached overflow volume, '/' if none."""
        ov = self._ms().row.overflow
        return overflow_path(ov) if ov else "/"

    @dbus_property(access=R)
    def Group(self) -> DBusObjectPath:
        """The group the set belongs to, '/' if none."""
        g = self._ms().row.grp
        return group_path(g) if g else "/"

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
        incomplete, recovered, bitmap-lost, changes-unrecorded."""
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
        p = self.d.service.progress(ms)
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
        o = opt.parse(options, CONFIRM)
        opt.direction(direction)
        uid = await self.d.auth.check("copy or update sets")
        await asyncio.to_thread(self.d.service.copy, [self.id], direction, full,
                                bool(o.get("confirm", False)), caller.get())
        what = f"{'copy' if full else 'update'}-to-{direction}"
        return self.d.start_job(what, [set_path(self.id)], [self.id], uid)

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
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("abort copies")
        await asyncio.to_thread(self.d.service.abort, self.id)

    @method()
    @translated
    async def Reset(self, options: Options) -> DBusObjectPath:
        """Bring offline volumes back and start the resync they need; returns its job or '/'."""
        opt.parse(options, NO_OPTS)
        uid = await self.d.auth.check("reset sets")
        await asyncio.to_thread(self.d.service.reset, self.id, caller.get())
        ms = self._ms()
        if self.d.service.copying(ms):
            return self.d.start_job("reset", [set_path(self.id)], [self.id], uid)
        return "/"

    @method()
    @translated
    async def Disable(self, options: Options) -> None:
        """End the set (refused while it copies). The volumes keep their data."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("disable sets")
        await asyncio.to_thread(self.d.service.disable_set, self.id)

    @method()
    @translated
    async def SetCopyParameters(self, delay: DBusUInt32, units: DBusUInt32,
                                options: Options) -> None:
        """Throttle copies: pause delay ms after every units chunks; applies at once."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("change copy parameters")
        await asyncio.to_thread(self.d.service.set_params, self.id, delay, units)

    @method()
    @translated
    async def AttachOverflow(self, overflow: DBusObjectPath, options: Options) -> None:
        """Attach an overflow volume (compact dependent sets only)."""
        opt.parse(options, NO_OPTS)
        oid = id_of(overflow, "overflow")
        await self.d.auth.check("attach overflow volumes")
        await asyncio.to_thread(self.d.service.attach_overflow, self.id, oid)

    @method()
    @translated
    async def DetachOverflow(self, options: Options) -> None:
        """Detach the overflow volume (refused while chunks of the set live there)."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("detach overflow volumes")
        await asyncio.to_thread(self.d.service.detach_overflow, self.id)

    @method()
    @translated
    async def Export(self, options: Options) -> None:
        """Mark the shadow as handed to another host (independent sets only)."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("export shadows")
        await asyncio.to_thread(self.d.service.export_set, self.id)

    @method()
    @translated
    async def Join(self, bitmap: DBusStr, options: Options) -> DBusObjectPath:
        """Take the exported shadow back: OR the bitmap the other host kept while it used the
        shadow into this set's shadow bitmap, so the next update resyncs those chunks.
        Returns '/' (no work starts; run Update when ready)."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("join shadows")
        await asyncio.to_thread(self.d.service.join_set, self.id, bitmap)
        return "/"

    @method()
    @translated
    async def Rename(self, name: DBusStr, options: Options) -> None:
        """Give the set another name (not while it is served)."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("rename sets")
        await asyncio.to_thread(self.d.service.rename_set, self.id, name)

    @method()
    @translated
    async def Lock(self, options: Options) -> None:
        """Lock the set for the caller: copies by others are refused until Unlock or until the
        caller leaves the bus."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("lock sets")
        who = caller.get()
        await asyncio.to_thread(self.d.service.lock_set, self.id, who)
        await self.d.release_if_gone(who)

    @method()
    @translated
    async def Unlock(self, options: Options) -> None:
        """Release the caller's lock."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("unlock sets")
        await asyncio.to_thread(self.d.service.unlock_set, self.id, caller.get())


class IIGroup(Interface):
    """A group of sets that copy and update at one point in time."""

    def __init__(self, d: "Daemon", group_id: str) -> None:
        super().__init__(IFACE + ".IIGroup")
        self.d = d
        self.id = group_id
        self.job = "/"

    @dbus_property(access=R)
    def Name(self) -> DBusStr:
        """The group's name."""
        return self.d.service.groups[self.id].name

    @dbus_property(access=R)
    def Sets(self) -> Paths:
        """The member sets."""
        return [set_path(s) for s in self.d.service.group_sets(self.id)]

    @dbus_property(access=R)
    def Status(self) -> DBusStr:
        """The worst of the members' statuses ('normal' for an empty group)."""
        worst = "normal"
        for sid in self.d.service.group_sets(self.id):
            obj = self.d.set_objects.get(sid)
            st = obj.Status if obj is not None else "error"
            if st == "error" or (st == "degraded" and worst == "normal"):
                worst = st
        return worst

    @dbus_property(access=R)
    def Job(self) -> DBusObjectPath:
        """The job of the group's running (or last) copy, '/' if none."""
        return self.job

    async def _copy(self, direction: DBusStr, options: Options, full: bool) -> str:
        o = opt.parse(options, CONFIRM)
        opt.direction(direction)
        ids = self.d.service.group_sets(self.id)
        if not ids:
            raise ServiceError("InvalidArgument", f"group {self.Name} has no sets")
        uid = await self.d.auth.check("copy or update groups")
        await asyncio.to_thread(self.d.service.copy, ids, direction, full,
                                bool(o.get("confirm", False)), caller.get())
        what = f"group-{'copy' if full else 'update'}-to-{direction}"
        self.job = self.d.start_job(what, [group_path(self.id)] + [set_path(i) for i in ids],
                                    ids, uid)
        self.refresh()
        return self.job

    @method()
    @translated
    async def Copy(self, direction: DBusStr, options: Options) -> DBusObjectPath:
        """Full copy of every member at one point in time, all or nothing; returns the job."""
        return await self._copy(direction, options, True)

    @method()
    @translated
    async def Update(self, direction: DBusStr, options: Options) -> DBusObjectPath:
        """Update every member at one point in time, all or nothing; returns the job."""
        return await self._copy(direction, options, False)

    @method()
    @translated
    async def Abort(self, options: Options) -> None:
        """Stop every member's running copy."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("abort copies")
        for sid in self.d.service.group_sets(self.id):
            ms = self.d.service.sets[sid]
            if self.d.service.copying(ms):
                await asyncio.to_thread(self.d.service.abort, sid)

    @method()
    @translated
    async def AddSet(self, member: DBusObjectPath, options: Options) -> None:
        """Add a set (which must not be in another group)."""
        opt.parse(options, NO_OPTS)
        sid = id_of(member, "sets")
        await self.d.auth.check("change groups")
        await asyncio.to_thread(self.d.service.group_add, self.id, sid)

    @method()
    @translated
    async def RemoveSet(self, member: DBusObjectPath, options: Options) -> None:
        """Remove a set from the group."""
        opt.parse(options, NO_OPTS)
        sid = id_of(member, "sets")
        await self.d.auth.check("change groups")
        await asyncio.to_thread(self.d.service.group_remove, self.id, sid)

    @method()
    @translated
    async def Rename(self, name: DBusStr, options: Options) -> None:
        """Give the group another name."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("rename groups")
        await asyncio.to_thread(self.d.service.group_rename, self.id, name)

    @method()
    @translated
    async def Delete(self, options: Options) -> None:
        """Delete the group; its sets stay, without a group."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("delete groups")
        await asyncio.to_thread(self.d.service.group_delete, self.id)


class IIOverflow(Interface):
    """An overflow volume shared by compact dependent sets."""

    def __init__(self, d: "Daemon", ov_id: str) -> None:
        super().__init__(IFACE + ".IIOverflow")
        self.d = d
        self.id = ov_id

    def _st(self) -> Any:
        mo = self.d.service.overflows[self.id]
        return mo.ov.status() if mo.ov is not None and not mo.ov.closed else None

    @dbus_property(access=R)
    def Path(self) -> DBusStr:
        """The volume."""
        return self.d.service.overflows[self.id].row.path

    @dbus_property(access=R)
    def Sets(self) -> Paths:
        """The sets attached to it."""
        return [set_path(s) for s in sorted(self.d.service.overflows[self.id].sets)]

    @dbus_property(access=R)
    def ChunksTotal(self) -> DBusUInt64:
        """Chunks it can hold."""
        st = self._st()
        return int(st.chunks_total) if st is not None else 0

    @dbus_property(access=R)
    def ChunksUsed(self) -> DBusUInt64:
        """Chunks in use."""
        st = self._st()
        return int(st.chunks_used) if st is not None else 0

    @dbus_property(access=R)
    def CountersValid(self) -> DBusBool:
        """False after an unclean stop until every attached set has been reopened."""
        st = self._st()
        return bool(st.counters_valid) if st is not None else False

    @method()
    @translated
    async def Delete(self, options: Options) -> None:
        """Wipe the overflow volume's header (refused while sets are attached)."""
        opt.parse(options, NO_OPTS)
        await self.d.auth.check("delete overflow volumes")
        await asyncio.to_thread(self.d.service.delete_overflow, self.id)


class Volume(Interface):
    """A volume of this host: a block device udev knows, or a file a set or overflow uses."""

    def changed(self) -> bool:
        return False   # the daemon pushes new views (udev events, set changes, mounts)

    def __init__(self, d: "Daemon", path: str, used_by: str = "/", role: str = "") -> None:
        super().__init__(IFACE + ".Volume")
        self.d = d
        self.view = VolumeView(path, used_by=used_by,
                               unsuitable=f"it is the {role} of {used_by}" if role else "")

    def update(self, view: VolumeView) -> None:
        """Take the new view and emit what changed."""
        if view != self.view:
            self.view = view
            self.refresh()

    @dbus_property(access=R)
    def Path(self) -> DBusStr:
        """The device node (/dev/mapper/NAME for device-mapper devices) or the file."""
        return self.view.path

    @dbus_property(access=R)
    def Size(self) -> DBusUInt64:
        """Size in bytes (0 if it cannot be read)."""
        return self.view.size

    @dbus_property(access=R)
    def Type(self) -> DBusStr:
        """'disk', 'part', 'loop' (with a backing file), 'lvm', 'dm', 'md' or 'file'."""
        return self.view.type

    @dbus_property(access=R)
    def FsType(self) -> DBusStr:
        """File system or other signature found on it (ID_FS_TYPE or blkid; '' if none)."""
        return self.view.fstype

    @dbus_property(access=R)
    def Mounted(self) -> DBusBool:
        """Whether the volume itself is mounted."""
        return self.view.mounted

    @dbus_property(access=R)
    def Holders(self) -> Strings:
        """Devices stacked on it (device-mapper, md), as /dev/NAME."""
        return [f"/dev/{h}" for h in self.view.holders]

    @dbus_property(access=R)
    def UsedBy(self) -> DBusObjectPath:
        """The set or overflow volume using it, '/' if none."""
        return self.view.used_by

    @dbus_property(access=R)
    def Available(self) -> DBusBool:
        """Whether it could be a volume of a new set now."""
        return self.view.available

    @dbus_property(access=R)
    def Unsuitable(self) -> DBusStr:
        """Why it cannot be a volume of a new set ('' if it can): used by a set, mounted at
        a place, holds the root file system, has partitions, held by, read-only, served by
        ptcopy, removed."""
        return self.view.unsuitable


Unused = (DBusBool, DBusDouble)
