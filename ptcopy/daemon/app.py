"""ptcopyd: wires the Service to the bus, keeps the exported objects in step with it, runs jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from dbus_fast import BusType, Message, MessageType
from dbus_fast.constants import RequestNameReply

from ptcopy.daemon import objects as ob
from ptcopy.daemon.bus import BUS_NAME, ROOT, Authorizer, Interface, PtcopyBus, record_caller
from ptcopy.daemon.errors import CALLS
from ptcopy.daemon.jobs import Job
from ptcopy.daemon.service import Service

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Interface)
SWEEP = 2.0   # seconds between sweeps for changes nobody announced (I/O errors, copy ends)


class Daemon:
    def __init__(self, service: Service, bus_address: str | None, *,
                 job_retention: float = 900.0) -> None:
        self.service = service
        self.bus_address = bus_address
        self.job_retention = job_retention
        self.bus: PtcopyBus | None = None
        self.auth: Authorizer
        self.manager: ob.Manager
        self.set_objects: dict[str, ob.IISet] = {}
        self.group_objects: dict[str, ob.IIGroup] = {}
        self.overflow_objects: dict[str, ob.IIOverflow] = {}
        self.volume_objects: dict[str, ob.Volume] = {}
        self.jobs: dict[int, Job] = {}
        self._next_job = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Future[None]] = set()

    # ---- exports ---------------------------------------------------------------------------

    def _bus(self) -> PtcopyBus:
        assert self.bus is not None
        return self.bus

    def _export(self, path: str, obj: Interface) -> None:
        self._bus().export(path, obj)
        obj.refresh()

    def sync_objects(self) -> None:
        """Export what the Service has and unexport what it no longer has."""
        s = self.service
        self._sync_table(self.set_objects, s.sets, lambda i: ob.IISet(self, i), ob.set_path)
        self._sync_table(self.group_objects, s.groups, lambda i: ob.IIGroup(self, i),
                         ob.group_path)
        self._sync_table(self.overflow_objects, s.overflows, lambda i: ob.IIOverflow(self, i),
                         ob.overflow_path)
        self._sync_volumes()

    def _sync_table(self, table: dict[str, T], have: Iterable[str], make: Callable[[str], T],
                    path_of: Callable[[str], str]) -> None:
        wanted = set(have)
        for ident in list(table):
            if ident not in wanted:
                self._bus().unexport(path_of(ident))
                del table[ident]
        for ident in sorted(wanted):
            if ident not in table:
                table[ident] = make(ident)
                self._export(path_of(ident), table[ident])

    def _sync_volumes(self) -> None:
        want: dict[str, tuple[str, str]] = {}
        for sid, ms in self.service.sets.items():
            for role, p in (("master", ms.row.master), ("shadow", ms.row.shadow),
                            ("bitmap", ms.row.bitmap)):
                if p:
                    want.setdefault(p, (ob.set_path(sid), role))
        for oid, mo in self.service.overflows.items():
            want.setdefault(mo.row.path, (ob.overflow_path(oid), "overflow"))
        keyed = {self._volume_id(p): (p, *v) for p, v in want.items()}
        for vid in list(self.volume_objects):
            if vid not in keyed:
                self._bus().unexport(f"{ROOT}/volumes/{vid}")
                del self.volume_objects[vid]
        for vid, (p, used_by, role) in keyed.items():
            if vid not in self.volume_objects:
                obj = ob.Volume(self, p, used_by, role)
                self.volume_objects[vid] = obj
                self._export(f"{ROOT}/volumes/{vid}", obj)

    @staticmethod
    def _volume_id(path: str) -> str:
        return "".join(c if c.isalnum() else "_" for c in path.strip("/"))[:200] or "_"

    def _on_event(self, event: str, kind: str, ident: str) -> None:
        """Service events may come from worker threads: hop onto the loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply_event, event, kind, ident)

    def _apply_event(self, event: str, kind: str, ident: str) -> None:
        if event in ("added", "removed"):
            self.sync_objects()
            return
        obj: Interface | None
        if kind == "set":
            obj = self.set_objects.get(ident)
        elif kind == "group":
            obj = self.group_objects.get(ident)
        else:
            obj = self.overflow_objects.get(ident)
        if obj is not None:
            obj.refresh()

    # ---- jobs ------------------------------------------------------------------------------

    def start_job(self, operation: str, objects: Sequence[str], set_ids: Sequence[str],
                  uid: int) -> str:
        """Export a Job that follows the copies of these sets; returns its path."""
        sets = [self.service.sets[i].set for i in set_ids]
        number = self._next_job
        self._next_job += 1
        job = Job(number, operation, objects, [s for s in sets if s is not None], uid,
                  self.auth, self._job_done)
        self.jobs[number] = job
        self._export(job.path, job)
        for i in set_ids:
            obj = self.set_objects.get(i)
            if obj is not None:
                obj.job = job.path
                obj.refresh()
        self._tasks.add(task := asyncio.ensure_future(job.follow()))
        task.add_done_callback(self._tasks.discard)
        return job.path

    def _job_done(self, job: Job) -> None:
        for obj in self.set_objects.values():
            if obj.job == job.path:
                obj.refresh()

    def _expire_jobs(self) -> None:
        now = time.monotonic()
        for number, job in list(self.jobs.items()):
            if job.ended_at and now - job.ended_at > self.job_retention:
                self._bus().unexport(job.path)
                del self.jobs[number]

    # ---- clients leaving -------------------------------------------------------------------

    def _watch_names(self, msg: Message) -> bool:
        if (msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged"
                and msg.sender == "org.freedesktop.DBus"):
            name, _old, new = msg.body
            if name.startswith(":") and not new:
                asyncio.get_running_loop().run_in_executor(
                    None, self.service.release_locks_of, name)
        return False

    # ---- running ---------------------------------------------------------------------------

    async def _sweep(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SWEEP)
            for obj in [*self.set_objects.values(), *self.group_objects.values(),
                        *self.overflow_objects.values()]:
                try:
                    obj.refresh()
                except Exception:  # an object that vanished mid-sweep
                    log.debug("sweep", exc_info=True)
            self._expire_jobs()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.bus_address:
            self.bus = PtcopyBus(bus_address=self.bus_address)
        else:
            self.bus = PtcopyBus(bus_type=BusType.SYSTEM)
        await self.bus.connect()
        self.auth = Authorizer(self.bus)
        self.bus.add_message_handler(record_caller)
        self.bus.add_message_handler(self._watch_names)
        await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=["type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"]))
        self.manager = ob.Manager(self)
        self.bus.export(ROOT, self.manager)
        self.service.listeners.append(self._on_event)
        self.sync_objects()
        for sid, ms in self.service.sets.items():   # copies resumed on start get their jobs
            if ms.set is not None and ms.set.progress().active:
                self.start_job("resume", [ob.set_path(sid)], [sid], 0)
        reply = await self.bus.request_name(BUS_NAME)
        if reply is not RequestNameReply.PRIMARY_OWNER:
            raise SystemExit(f"ptcopyd: the bus name {BUS_NAME} is taken ({reply.name}); "
                             "is another ptcopyd running?")
        log.info("ptcopyd serving %s on %s", BUS_NAME, self.bus_address or "the system bus")
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self._stop.set)
        sweep = asyncio.ensure_future(self._sweep())
        disconnected = asyncio.ensure_future(self.bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait([stop, disconnected], return_when=asyncio.FIRST_COMPLETED)
        self._stop.set()
        await sweep
        log.info("stopping: copies suspend and resume at the next start")
        await CALLS.drain(10.0)   # answer the calls in flight, refuse new ones
        self._loop = None         # no more events onto the bus
        for task in list(self._tasks):
            task.cancel()         # jobs: the copies themselves suspend when the sets close
        self.bus.disconnect()
