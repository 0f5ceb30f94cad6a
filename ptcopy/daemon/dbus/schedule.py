"""org.ptcopy.Imaging1.Schedule: rotating points in time (ptcopy.daemon.scheduler runs them),
and the exports that keep the Schedule objects in step with the schedules."""

from collections.abc import Callable
from typing import Annotated

# dbus-fast's decorators and annotations, also under Debian 12's dbus-fast 1.84
from ptcopy._dbus_compat import (
    DBusBool,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
    dbus_property,
    method,
)
from ptcopy.daemon import options as opt
from ptcopy.daemon.dbus.args import NO_OPTS, Options, Paths, R
from ptcopy.daemon.dbus.auth import Authorizer
from ptcopy.daemon.dbus.bus import IFACE, ROOT
from ptcopy.daemon.dbus.errors import translated
from ptcopy.daemon.dbus.interface import Interface
from ptcopy.daemon.dbus.paths import NONE, group_path, set_path
from ptcopy.daemon.scheduler import Scheduler

Times = Annotated[list[int], DBusSignature("at")]


def schedule_path(schedule_id: str) -> str:
    """The Schedule object of a schedule."""
    return f"{ROOT}/schedules/{schedule_id}"


class Schedule(Interface):
    """A schedule: a new point in time onto its targets when its spec elapses."""

    def __init__(self, scheduler: Scheduler, schedule_id: str, auth: Authorizer) -> None:
        super().__init__(IFACE + ".Schedule")
        self.scheduler = scheduler
        self.id = schedule_id
        self.auth = auth

    @dbus_property(access=R)
    def Name(self) -> DBusStr:
        """The schedule's name."""
        return self.scheduler.schedules.get(self.id).name

    @dbus_property(access=R)
    def Spec(self) -> DBusStr:
        """When it runs: a systemd calendar expression (systemd.time(7)) or 'every <time
        span>'."""
        return self.scheduler.schedules.get(self.id).spec

    @dbus_property(access=R)
    def Targets(self) -> Paths:
        """The sets it rotates over (each run updates the one with the oldest point in time),
        or the one set, or the group it updates."""
        row = self.scheduler.schedules.get(self.id)
        if row.grp:
            return [group_path(row.grp)]
        return [set_path(s) for s in row.sets.split(",") if s]

    @dbus_property(access=R)
    def Enabled(self) -> DBusBool:
        """False while paused."""
        return self.scheduler.schedules.get(self.id).enabled

    @dbus_property(access=R)
    def NextRun(self) -> DBusUInt64:
        """When it runs next, in microseconds since the epoch (0: paused, or never again)."""
        return self.scheduler.next_run.get(self.id, 0)

    @dbus_property(access=R)
    def LastRun(self) -> DBusUInt64:
        """When its last run started, in microseconds since the epoch (0: never)."""
        return self.scheduler.schedules.get(self.id).last_run

    @dbus_property(access=R)
    def LastJob(self) -> DBusObjectPath:
        """The job of its last run since ptcopyd started ('/' if none)."""
        return self.scheduler.last_job.get(self.id, NONE)

    @dbus_property(access=R)
    def LastResult(self) -> DBusStr:
        """How its last run went (or why it was skipped), in words; '' before the first."""
        return self.scheduler.schedules.get(self.id).last_result

    @method()
    @translated
    async def NextRuns(self, count: DBusUInt32) -> Times:
        """Its next count (1 to 100) runs, in microseconds since the epoch (none while
        paused)."""
        return await self.scheduler.next_runs(self.id, count)

    @method()
    @translated
    async def Pause(self, options: Options) -> None:
        """Stop running it (a run in progress goes on)."""
        opt.parse(options, NO_OPTS)
        await self.auth.check("pause schedules")
        await self.scheduler.set_enabled(self.id, False)

    @method()
    @translated
    async def Resume(self, options: Options) -> None:
        """Run it again; its next run counts from now (runs missed while paused are not made
        up)."""
        opt.parse(options, NO_OPTS)
        await self.auth.check("resume schedules")
        await self.scheduler.set_enabled(self.id, True)

    @method()
    @translated
    async def RunNow(self, options: Options) -> DBusObjectPath:
        """Run it now (paused or not); returns the job. Refused (Busy) while a copy of its
        targets runs."""
        opt.parse(options, NO_OPTS)
        uid = await self.auth.check("run schedules")
        return await self.scheduler.run_now(self.id, uid)

    @method()
    @translated
    async def Delete(self, options: Options) -> None:
        """Delete the schedule (a run in progress goes on; the sets stay)."""
        opt.parse(options, NO_OPTS)
        await self.auth.check("delete schedules")
        await self.scheduler.delete(self.id)


class ScheduleObjects:
    """The Schedule objects follow the schedules (the scheduler's ``publish``)."""

    def __init__(self, scheduler: Scheduler, auth: Authorizer,
                 export: Callable[[str, Interface], bool],
                 unexport: Callable[[str], None]) -> None:
        self.scheduler = scheduler
        self.auth = auth
        self._export = export
        self._unexport = unexport
        self.objects: dict[str, Schedule] = {}
        scheduler.publish = self.publish

    def publish(self, schedule_id: str) -> None:
        """Export a new schedule's object, refresh one's properties, or unexport a deleted
        one's."""
        obj = self.objects.get(schedule_id)
        if schedule_id not in self.scheduler.schedules.rows:
            if obj is not None:
                self._unexport(schedule_path(schedule_id))
                del self.objects[schedule_id]
            return
        if obj is None:
            obj = Schedule(self.scheduler, schedule_id, self.auth)
            if self._export(schedule_path(schedule_id), obj):
                self.objects[schedule_id] = obj
        else:
            obj.refresh()
