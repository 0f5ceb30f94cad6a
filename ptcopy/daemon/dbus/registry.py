"""The exported objects: kept in step with the Service (added, removed, refreshed on its
events), the Volume objects with the inventory's views, and the jobs that follow copies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from ptcopy.daemon.background import Background
from ptcopy.daemon.candidates import Key
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

SWEEP_SLICE = 50   # objects a sweep looks at between two turns of the loop


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
        self._volume_keys: dict[str, Key] = {}   # what each Volume object shows, by id
        self._volumes_of: dict[Key, set[str]] = {}   # and the other way round
        self.jobs: dict[int, Job] = {}
        # told (job path, its properties) when a job ends: the scheduler records its runs
        self.job_listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._next_job = 1
        self._sweeping = False
        self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()

    # ---- exports ---------------------------------------------------------------------------

    def export(self, path: str, obj: Interface) -> bool:
        """Export one object; one that cannot be (a bad path) is logged, never stops the
        daemon nor the export of the others."""
        obj.refresh()   # the snapshot InterfacesAdded carries
        try:
            self.bus.export(path, obj)
        except Exception as e:  # dbus-fast raises several types for a path it refuses
            log.error("cannot export %s: %s", path, e)
            return False
        return True

    def sync_objects(self) -> None:
        """Export what the Service has and unexport what it no longer has."""
        s, ctx = self.service, self.context
        self._sync_table(self.sets, s.sets, lambda i: IISet(s, i, ctx), set_path)
        self._sync_table(self.groups, s.groups, lambda i: IIGroup(s, i, ctx), group_path)
        self._sync_table(self.overflows, s.overflows, lambda i: IIOverflow(s, i, ctx),
                         overflow_path)
        self.sync_volumes()

    def _sync_set(self, ident: str) -> None:
        """One set's object follows the Service, and the Volume objects of the volumes whose
        users changed (the set added or removed): the others are as they were."""
        s = self.service
        if ident in s.sets and ident not in self.sets:
            obj = IISet(s, ident, self.context)
            if self.export(set_path(ident), obj):
                self.sets[ident] = obj
        elif ident not in s.sets and ident in self.sets:
            self.bus.unexport(set_path(ident))
            del self.sets[ident]
        self._sync_views(self.inventory.take_dirty(ident))

    def _sync_table(self, table: dict[str, T], have: Iterable[str], make: Callable[[str], T],
                    path_of: Callable[[str], str]) -> None:
        wanted = set(have)
        for ident in [i for i in table if i not in wanted]:
            self.bus.unexport(path_of(ident))
            del table[ident]
        for ident in sorted(i for i in wanted if i not in table):
            obj = make(ident)
            if self.export(path_of(ident), obj):
                table[ident] = obj

    def sync_volumes(self) -> None:
        """The Volume objects follow the inventory's views."""
        self.inventory.take_dirty()   # everything is looked at
        self._sync_views(None)

    def _sync_views(self, keys: set[Key] | None) -> None:
        """The Volume objects of these volumes (None: of all) follow the inventory's views."""
        if keys is not None and not keys:
            return
        got = self.inventory.keyed_views(keys=keys)
        views = got.views
        if keys is None:
            gone = [v for v in self.volumes if v not in views]
        else:
            gone = [v for k in got.considered for v in self._volumes_of.get(k, ())
                    if v not in views]
        for vid in gone:
            self.bus.unexport(volume_path(vid))
            del self.volumes[vid]
            self._forget_key(vid)
        for vid in sorted(views):
            obj = self.volumes.get(vid)
            if obj is None:
                obj = Volume(views[vid])
                if self.export(volume_path(vid), obj):
                    self.volumes[vid] = obj
            else:
                obj.update(views[vid])
        for vid, key in got.keys.items():
            if self._volume_keys.get(vid) != key:
                self._forget_key(vid)
                self._volume_keys[vid] = key
                self._volumes_of.setdefault(key, set()).add(vid)

    def _forget_key(self, vid: str) -> None:
        key = self._volume_keys.pop(vid, None)
        if key is not None:
            self._volumes_of[key].discard(vid)
            if not self._volumes_of[key]:
                del self._volumes_of[key]

    def set_status(self, set_id: str) -> str:
        """A set's Status as its object shows it; 'error' when it has none."""
        obj = self.sets.get(set_id)
        return obj.Status if obj is not None else "error"

    def refresh_all(self) -> None:
        """Emit what changed on every set, group, overflow and job object (the sweep: changes
        nobody announced, such as I/O errors and copy ends), unless a sweep still runs. The
        sweep runs in slices between which the loop answers calls: with thousands of sets it
        would otherwise hold every call up for tens of milliseconds."""
        if not self._sweeping:
            self._sweeping = True
            self.background.spawn(self._sweep())

    async def _sweep(self) -> None:
        try:
            objs: list[Interface] = [*self.sets.values(), *self.groups.values(),
                                     *self.overflows.values(), *self.jobs.values()]
            for n, obj in enumerate(objs, 1):
                try:
                    if obj.changed():   # one engine call for a set
                        obj.refresh()
                except Exception:  # an object that vanished mid-sweep
                    log.debug("sweep", exc_info=True)
                if n % SWEEP_SLICE == 0:
                    await asyncio.sleep(0)
        finally:
            self._sweeping = False

    # ---- Service events --------------------------------------------------------------------

    def on_event(self, event: str, kind: str, ident: str) -> None:
        """Service listener. Events may come from worker threads: hop onto the loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply_event, event, kind, ident)

    def close(self) -> None:
        """No more Service events onto the bus (the daemon is stopping)."""
        self._loop = None

    def _apply_event(self, event: str, kind: str, ident: str) -> None:
        if kind == "set" and event in ("added", "removed"):
            self._sync_set(ident)
            return
        if event in ("added", "removed"):
            self.sync_objects()
            return
        obj: Interface | None
        if kind == "set":
            obj = self.sets.get(ident)
            self._sync_views(self.inventory.take_dirty(ident))   # a rename: volumes name it
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
        if self.job_listeners:
            values = job.values()
            for fn in self.job_listeners:
                fn(job.path, values)

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
