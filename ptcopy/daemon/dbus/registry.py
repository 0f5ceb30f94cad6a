"""The exported objects: kept in step with the Service (added, removed, refreshed on its
events), the Volume objects with the inventory's views, and the jobs that follow copies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from ptcopy.daemon.background import Background
from ptcopy.daemon.dbus.auth import Authorizer
from ptcopy.daemon.dbus.bus import PtcopyBus
from ptcopy.daemon.dbus.context import Context
from ptcopy.daemon.dbus.iigroup import IIGroup
from ptcopy.daemon.dbus.iioverflow import IIOverflow
from ptcopy.daemon.dbus.iiset import IISet
from ptcopy.daemon.dbus.interface import Interface
from ptcopy.daemon.dbus.job import Job
from ptcopy.daemon.dbus.paths import NONE, group_path, overflow_path, set_path, volume_path
from ptcopy.daemon.dbus.volume import Volume
from ptcopy.daemon.inventory import Inventory
from ptcopy.daemon.service import Service

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Interface)


class Registry:
    """Every object ptcopyd exports below the root, by id."""

    def __init__(self, bus: PtcopyBus, service: Service, inventory: Inventory,
                 background: Background, auth: Authorizer,
                 release_if_gone: Callable[[str], Awaitable[None]], *,
                 job_retention: float) -> None:
        self.bus = bus
        self.service = service
        self.inventory = inventory
        self.background = background
        self.auth = auth
        self.job_retention = job_retention
        self.context = Context(auth, self.start_job, self.set_status, release_if_gone)
        self.sets: dict[str, IISet] = {}
        self.groups: dict[str, IIGroup] = {}
        self.overflows: dict[str, IIOverflow] = {}
        self.volumes: dict[str, Volume] = {}
        self.jobs: dict[int, Job] = {}
        self._next_job = 1
        self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()

    # ---- exports ---------------------------------------------------------------------------

    def export(self, path: str, obj: Interface) -> bool:
        """Export one object; one that cannot be (a bad path) is logged, never stops the
        daemon nor the export of the others."""
        try:
            self.bus.export(path, obj)
        except Exception as e:  # dbus-fast raises several types for a path it refuses
            log.error("cannot export %s: %s", path, e)
            return False
        obj.refresh()
        return True

    def sync_objects(self) -> None:
        """Export what the Service has and unexport what it no longer has."""
        s, ctx = self.service, self.context
        self._sync_table(self.sets, s.sets, lambda i: IISet(s, i, ctx), set_path)
        self._sync_table(self.groups, s.groups, lambda i: IIGroup(s, i, ctx), group_path)
        self._sync_table(self.overflows, s.overflows, lambda i: IIOverflow(s, i, ctx),
                         overflow_path)
        self.sync_volumes()

    def _sync_table(self, table: dict[str, T], have: Iterable[str], make: Callable[[str], T],
                    path_of: Callable[[str], str]) -> None:
        wanted = set(have)
        for ident in list(table):
            if ident not in wanted:
                self.bus.unexport(path_of(ident))
                del table[ident]
        for ident in sorted(wanted):
            if ident not in table:
                obj = make(ident)
                if self.export(path_of(ident), obj):
                    table[ident] = obj

    def sync_volumes(self) -> None:
        """The Volume objects follow the inventory's views."""
        views = self.inventory.views()
        for vid in list(self.volumes):
            if vid not in views:
                self.bus.unexport(volume_path(vid))
                del self.volumes[vid]
        for vid in sorted(views):
            obj = self.volumes.get(vid)
            if obj is None:
                obj = Volume(views[vid])
                if self.export(volume_path(vid), obj):
                    self.volumes[vid] = obj
            else:
                obj.update(views[vid])

    def set_status(self, set_id: str) -> str:
        """A set's Status as its object shows it; 'error' when it has none."""
        obj = self.sets.get(set_id)
        return obj.Status if obj is not None else "error"

    def refresh_all(self) -> None:
        """Emit what changed on every set, group and overflow object (the sweep: changes
        nobody announced, such as I/O errors and copy ends)."""
        for obj in [*self.sets.values(), *self.groups.values(), *self.overflows.values()]:
            try:
                obj.refresh()
            except Exception:  # an object that vanished mid-sweep
                log.debug("sweep", exc_info=True)

    # ---- Service events --------------------------------------------------------------------

    def on_event(self, event: str, kind: str, ident: str) -> None:
        """Service listener. Events may come from worker threads: hop onto the loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply_event, event, kind, ident)

    def close(self) -> None:
        """No more Service events onto the bus (the daemon is stopping)."""
        self._loop = None

    def _apply_event(self, event: str, kind: str, ident: str) -> None:
        if event in ("added", "removed"):
            self.sync_objects()
            return
        obj: Interface | None
        if kind == "set":
            obj = self.sets.get(ident)
        elif kind == "group":
            obj = self.groups.get(ident)
        else:
            obj = self.overflows.get(ident)
        if obj is not None:
            obj.refresh()

    # ---- jobs ------------------------------------------------------------------------------

    def start_job(self, operation: str, objects: Sequence[str], set_ids: Sequence[str],
                  uid: int) -> str:
        """Export a Job that follows the copies of these sets; returns its path."""
        sets = [self.service.copier(i) for i in set_ids]
        number = self._next_job
        self._next_job += 1
        job = Job(number, operation, objects, [s for s in sets if s is not None], uid,
                  self.auth, self._job_done)
        self.jobs[number] = job
        self.export(job.path, job)
        for i in set_ids:
            obj = self.sets.get(i)
            if obj is not None:
                obj.job = job.path
                obj.refresh()
        self.background.spawn(job.follow())
        return job.path

    def _job_done(self, job: Job) -> None:
        for obj in self.sets.values():
            if obj.job == job.path:
                obj.refresh()

    def expire_jobs(self) -> None:
        """Unexport the jobs that ended longer than the retention time ago."""
        now = time.monotonic()
        for number, job in list(self.jobs.items()):
            if job.ended_at and now - job.ended_at > self.job_retention:
                self.bus.unexport(job.path)
                del self.jobs[number]
                # a set or group must not name a job that is gone: a client would wait on it
                # and get UnknownObject (seen in the reliability load figure)
                objs: list[IISet | IIGroup] = [*self.sets.values(), *self.groups.values()]
                for obj in objs:
                    if obj.job == job.path:
                        obj.job = NONE
                        obj.refresh()
