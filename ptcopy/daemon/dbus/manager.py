"""org.ptcopy.Imaging1.Manager, the root object: creates sets, groups and overflow volumes,
finds them, and reconciles. It holds the Service and the narrow contexts it calls."""

import asyncio

from ptcopy import __version__

# dbus-fast's decorators and annotations, also under Debian 12's dbus-fast 1.84
from ptcopy._dbus_compat import DBusObjectPath, DBusStr, DBusUInt32, dbus_property, method
from ptcopy.daemon import options as opt
from ptcopy.daemon.candidates import candidates
from ptcopy.daemon.dbus.args import NO_OPTS, Options, Paths, R, TwoPaths
from ptcopy.daemon.dbus.bus import IFACE, caller
from ptcopy.daemon.dbus.context import Context, HostContext
from ptcopy.daemon.dbus.errors import translated
from ptcopy.daemon.dbus.host import HostObjects
from ptcopy.daemon.dbus.interface import Interface
from ptcopy.daemon.dbus.paths import (
    NONE,
    group_path,
    id_of,
    overflow_path,
    set_path,
    volume_path,
)
from ptcopy.daemon.dbus.schedule import schedule_path
from ptcopy.daemon.errors import invalid
from ptcopy.daemon.scheduler import Scheduler
from ptcopy.daemon.service import Service


class Manager(Interface):
    """The root object: creates sets, groups and overflow volumes, and finds them."""

    def __init__(self, service: Service, ctx: Context, host: HostContext,
                 scheduler: Scheduler | None = None, hosts: HostObjects | None = None) -> None:
        super().__init__(IFACE + ".Manager")
        self.service = service
        self.ctx = ctx
        self.host = host
        self.scheduler = scheduler
        self.hosts = hosts

    @dbus_property(access=R)
    def Version(self) -> DBusStr:
        """ptcopy's version."""
        return __version__

    @dbus_property(access=R)
    def DataPath(self) -> DBusStr:
        """How volumes are served: 'kernel' (device-mapper), 'userspace' (FUSE + loop devices)
        or 'none'."""
        return self.service.data_path

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
        uid = await self.ctx.auth.check("create sets")
        set_id = await asyncio.to_thread(self.service.create_set, name, kind, master, shadow,
                                         bitmap, o)
        job = NONE
        ms = self.service.sets[set_id]
        if self.service.copying(ms):
            job = self.ctx.start_job("copy-to-shadow", [set_path(set_id)], [set_id], uid)
        return (set_path(set_id), job)

    @method()
    @translated
    async def ImportShadow(self, shadow: DBusStr, bitmap: DBusStr,
                           options: Options) -> DBusObjectPath:
        """Import a shadow another host exported: serve it here (kind 'imported', flag
        'imported') and mark every chunk written to it in a new bitmap on the bitmap volume,
        durable before the write, for Join on the exporting host; Disable releases it.
        Options: name s, chunk_size u (the exporting set's; the shadow's size gives the chunk
        count), loop b."""
        o = opt.parse(options, {
            "name": opt.Opt("s", "the imported set's name"),
            "chunk_size": opt.Opt("u", "bytes, as the exporting set's"),
            "loop": opt.Opt("b", "attach a loop device to the served shadow"),
        })
        opt.chunk_size(int(o.get("chunk_size", 0)))
        await self.ctx.auth.check("import shadows")
        set_id = await asyncio.to_thread(self.service.import_shadow, shadow, bitmap, o)
        return set_path(set_id)

    @method()
    @translated
    async def CreateGroup(self, name: DBusStr, sets: Paths,
                          options: Options) -> DBusObjectPath:
        """Create a group of sets that copy and update at one point in time. Options: hosts as
        (the other hosts the group spans, as IIGroup.Hosts)."""
        o = opt.parse(options, {"hosts": opt.Opt("as", "the other hosts the group spans")})
        ids = [id_of(p, "sets") for p in sets]
        await self.ctx.auth.check("create groups")
        gid = await asyncio.to_thread(self.service.create_group, name, ids,
                                      list(o.get("hosts", [])))
        return group_path(gid)

    @method()
    @translated
    async def CreateOverflow(self, path: DBusStr,
                             options: Options) -> DBusObjectPath:
        """Initialise a volume as an overflow volume for compact dependent sets.
        Options: chunk_size u."""
        o = opt.parse(options, {"chunk_size": opt.Opt("u", "bytes, as the sets using it")})
        opt.chunk_size(int(o.get("chunk_size", 0)))
        await self.ctx.auth.check("create overflow volumes")
        oid = await asyncio.to_thread(self.service.create_overflow, path,
                                      int(o.get("chunk_size", 0)))
        return overflow_path(oid)

    @method()
    @translated
    async def CreateSchedule(self, name: DBusStr, spec: DBusStr, targets: Paths,
                             options: Options) -> DBusObjectPath:
        """Create a schedule: when spec elapses (a systemd calendar expression such as
        'hourly' or 'Mon..Fri 02:00', or 'every <time span>' such as 'every 15min'), take a
        new point in time onto targets: sets of one master (each run updates the one whose
        point in time is the oldest), one set, or one group. Runs missed while ptcopyd was
        down run once at its start."""
        opt.parse(options, NO_OPTS)
        set_ids = [id_of(p, "sets") for p in targets if not p.startswith(group_path(""))]
        groups = [id_of(p, "groups") for p in targets if p.startswith(group_path(""))]
        if len(groups) > 1:
            raise invalid("a schedule updates one group; make one schedule per group")
        if self.scheduler is None:
            raise invalid("this ptcopyd runs no scheduler")
        await self.ctx.auth.check("create schedules")
        sid = await self.scheduler.create(name, spec, set_ids, groups[0] if groups else "")
        return schedule_path(sid)

    @method()
    @translated
    async def LookUp(self, name: DBusStr) -> DBusObjectPath:
        """A set (by name or shadow path), group (by name) or overflow volume (by path);
        '/' when there is none."""
        found = self.service.find(name)
        if found is None:
            return NONE
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
        uid = await self.ctx.auth.uid_of(sender) if sender else -1
        views = self.host.candidate_views()   # on the loop, which owns what it reads
        found = await asyncio.to_thread(candidates, views, master, role, kind, chunk, shadow,
                                        uid, self.service.file_dirs)
        return [volume_path(vid) for vid in found]

    @method()
    @translated
    async def Refresh(self, options: Options) -> DBusUInt32:
        """Reconcile with the state store and the engine from scratch; how many things changed
        (0 after any normal operation)."""
        opt.parse(options, NO_OPTS)
        await self.ctx.auth.check("refresh")
        n = await asyncio.to_thread(self.service.refresh)
        n += await self.host.rediscover()
        self.host.sync_objects()
        return n

    @method()
    @translated
    async def AddHost(self, name: DBusStr, target: DBusStr,
                      options: Options) -> DBusObjectPath:
        """Register a remote host under a name (letters, digits, '_', '.', '-'; ptcopy --host
        NAME then reaches it): target is its SSH destination [USER@]HOST[:PORT] or an
        ssh_config alias. Returns its Host object; adding the same name and target again
        returns the same object, another target under a taken name is Exists. ptcopyd then
        probes it (read-only) in the background."""
        opt.parse(options, NO_OPTS)
        if self.hosts is None:
            raise invalid("this ptcopyd keeps no host registry")
        await self.ctx.auth.check("add hosts")
        return await self.hosts.add(name, target)
