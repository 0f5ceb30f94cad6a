"""org.ptcopy.Imaging1.IIGroup: a group of sets that copy and update at one point in time,
and the two-phase hold a coordinator spanning several hosts drives (Hold on every host, then
Release on every host). The object holds the Service and the group's id."""

import asyncio
from typing import Annotated

# dbus-fast's decorators and annotations, also under Debian 12's dbus-fast 1.84
from ptcopy._dbus_compat import (
    DBusBool,
    DBusDouble,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    dbus_property,
    method,
)
from ptcopy.daemon import options as opt
from ptcopy.daemon.dbus.args import CONFIRM, NO_OPTS, Options, Paths, R, Strings
from ptcopy.daemon.dbus.bus import IFACE, caller
from ptcopy.daemon.dbus.calls import authorized, copy
from ptcopy.daemon.dbus.context import Context
from ptcopy.daemon.dbus.errors import translated
from ptcopy.daemon.dbus.interface import Interface
from ptcopy.daemon.dbus.paths import NONE, group_path, id_of, set_path
from ptcopy.daemon.service import Service

JobAndFrozen = Annotated[tuple[str, int], DBusSignature("ot")]
# after a hold's timeout the daemon drops the engine's handle (the engine thawed it already)
EXPIRE_GRACE = 0.5


class IIGroup(Interface):
    """A group of sets that copy and update at one point in time."""

    def __init__(self, service: Service, group_id: str, ctx: Context) -> None:
        super().__init__(IFACE + ".IIGroup")
        self.service = service
        self.id = group_id
        self.ctx = ctx
        self.job = NONE
        self._timers: set[asyncio.Task[None]] = set()

    @dbus_property(access=R)
    def Name(self) -> DBusStr:
        """The group's name."""
        return self.service.groups[self.id].name

    @dbus_property(access=R)
    def Sets(self) -> Paths:
        """The member sets."""
        return [set_path(s) for s in self.service.group_sets(self.id)]

    @dbus_property(access=R)
    def Status(self) -> DBusStr:
        """The worst of the members' statuses ('normal' for an empty group)."""
        worst = "normal"
        for sid in self.service.group_sets(self.id):
            st = self.ctx.set_status(sid)
            if st == "error" or (st == "degraded" and worst == "normal"):
                worst = st
        return worst

    @dbus_property(access=R)
    def Hosts(self) -> Strings:
        """The other hosts the group spans (ssh targets or registered host names); empty for a
        group of this host only. A coordinator takes the group's point in time on all of them
        with Hold and Release."""
        return list(self.service.groups[self.id].hosts)

    @dbus_property(access=R)
    def Job(self) -> DBusObjectPath:
        """The job of the group's running (or last) copy, '/' if none."""
        return self.job

    async def _copy(self, direction: DBusStr, options: Options, full: bool) -> str:
        ids = self.service.group_sets(self.id)
        uid = await copy(self.ctx, self.service, ids, direction, options, full,
                         "copy or update groups", lambda: f"group {self.Name} has no sets")
        what = f"group-{'copy' if full else 'update'}-to-{direction}"
        self.job = self.ctx.start_job(what, [group_path(self.id)] + [set_path(i) for i in ids],
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
        await self.ctx.auth.check("abort copies")
        for sid in self.service.group_sets(self.id):
            ms = self.service.sets[sid]
            if self.service.copying(ms):
                await asyncio.to_thread(self.service.abort, sid)

    @method()
    @translated
    async def AddSet(self, member: DBusObjectPath, options: Options) -> None:
        """Add a set (which must not be in another group)."""
        opt.parse(options, NO_OPTS)
        sid = id_of(member, "sets")
        await self.ctx.auth.check("change groups")
        await asyncio.to_thread(self.service.group_add, self.id, sid)

    @method()
    @translated
    async def RemoveSet(self, member: DBusObjectPath, options: Options) -> None:
        """Remove a set from the group."""
        opt.parse(options, NO_OPTS)
        sid = id_of(member, "sets")
        await self.ctx.auth.check("change groups")
        await asyncio.to_thread(self.service.group_remove, self.id, sid)

    @method()
    @translated
    async def Rename(self, name: DBusStr, options: Options) -> None:
        """Give the group another name."""
        await authorized(self.ctx, options, "rename groups",
                         self.service.group_rename, self.id, name)

    @method()
    @translated
    async def Delete(self, options: Options) -> None:
        """Delete the group; its sets stay, without a group."""
        await authorized(self.ctx, options, "delete groups",
                         self.service.group_delete, self.id)

    @method()
    @translated
    async def SetHosts(self, hosts: Strings, options: Options) -> None:
        """Record the other hosts the group spans (empty: this host only)."""
        await authorized(self.ctx, options, "change groups",
                         self.service.group_set_hosts, self.id, list(hosts))

    @method()
    @translated
    async def Hold(self, operation: DBusStr, direction: DBusStr, timeout: DBusDouble,
                   options: Options) -> DBusStr:
        """Freeze writes to every member's source ('shadow': the masters) and check that every
        member can take part in a copy or update ('copy'|'update'), all or nothing; returns a
        token for Release while writes stay frozen. Not released within timeout seconds (at
        most 30), the hold is thawed unchanged. Only this connection may release it; if it
        leaves the bus, the hold is thawed unchanged at once. Options: confirm b (writing the
        masters)."""
        o = opt.parse(options, CONFIRM)
        await self.ctx.auth.check("copy or update groups")
        who = caller.get()
        h = await asyncio.to_thread(self.service.group_hold, self.id, operation, direction,
                                    float(timeout), bool(o.get("confirm", False)), who)
        self.refresh()
        timer = asyncio.get_running_loop().create_task(self._expire(h.token, h.timeout))
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)
        await self.ctx.release_if_gone(who)
        return h.token

    async def _expire(self, token: str, timeout: float) -> None:
        await asyncio.sleep(timeout + EXPIRE_GRACE)
        await asyncio.to_thread(self.service.group_expire, token)

    @method()
    @translated
    async def Release(self, token: DBusStr, commit: DBusBool,
                      options: Options) -> JobAndFrozen:
        """End a hold this connection made: commit takes the point in time (the instant of the
        hold) on every member and starts the copies, returning their job; otherwise nothing
        changes (job '/'). Writes are thawed either way. frozen_usec: how long writes were
        frozen. A hold that had expired is refused (Timeout): nothing changed."""
        opt.parse(options, NO_OPTS)
        uid = await self.ctx.auth.check("copy or update groups")
        h, frozen = await asyncio.to_thread(self.service.group_release, self.id, token,
                                            bool(commit), caller.get())
        job = NONE
        if commit:
            ids = [i for i in h.set_ids if i in self.service.sets]
            what = f"group-{'copy' if h.full else 'update'}-to-{h.direction}"
            job = self.ctx.start_job(what, [group_path(self.id)] + [set_path(i) for i in ids],
                                     ids, uid)
            self.job = job
        self.refresh()
        return (job, int(frozen * 1e6))
