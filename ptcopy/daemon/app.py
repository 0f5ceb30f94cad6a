"""ptcopyd's wiring: connects to the bus, builds the parts (registry of exported objects,
discovery hookup, clients watch), hooks them to the Service, runs until told to stop, and stops
in order. Nothing here decides anything about sets, volumes or jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from dbus_fast import BusType
from dbus_fast.constants import RequestNameReply

from ptcopy.daemon.background import Background
from ptcopy.daemon.clock import Clock, SystemClock
from ptcopy.daemon.dbus.auth import Authorizer
from ptcopy.daemon.dbus.bus import BUS_NAME, ROOT, PtcopyBus, record_caller
from ptcopy.daemon.dbus.clients import Clients
from ptcopy.daemon.dbus.context import HostContext
from ptcopy.daemon.dbus.errors import CALLS
from ptcopy.daemon.dbus.host import HostObjects
from ptcopy.daemon.dbus.manager import Manager
from ptcopy.daemon.dbus.paths import set_path
from ptcopy.daemon.dbus.registry import Registry
from ptcopy.daemon.dbus.schedule import ScheduleObjects
from ptcopy.daemon.discovery import Discovery
from ptcopy.daemon.hotplug import Exports, Hotplug
from ptcopy.daemon.inventory import Inventory
from ptcopy.daemon.scheduler import Scheduler
from ptcopy.daemon.service import Service
from ptcopy.daemon.service.schedules import Schedules

log = logging.getLogger(__name__)

SWEEP = 2.0   # seconds between sweeps for changes nobody announced (I/O errors, copy ends)


class Daemon:
    """One ptcopyd: the Service served on a bus until SIGTERM, SIGINT or the bus goes."""

    def __init__(self, service: Service, bus_address: str | None, *,
                 job_retention: float = 900.0, volumes: str = "host",
                 clock: Clock | None = None, host_probe_interval: float = 60.0) -> None:
        self.service = service
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.bus_address = bus_address
        self.job_retention = job_retention
        self.host_probe_interval = host_probe_interval
        self.discovery = Discovery(service.run_dir)
        self.inventory = Inventory(service, self.discovery, all_volumes=volumes == "host")
        self.background = Background()
        self._stop = asyncio.Event()

    async def _connect(self) -> PtcopyBus:
        if self.bus_address:
            bus = PtcopyBus(bus_address=self.bus_address)
        else:
            bus = PtcopyBus(bus_type=BusType.SYSTEM)
        await bus.connect()
        bus.add_message_handler(record_caller)
        return bus

    async def _sweep(self, registry: Registry) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SWEEP)
            registry.refresh_all()
            if self.discovery.mounts_changed():   # mounts send no uevent
                registry.sync_volumes()
            registry.expire_jobs()

    async def run(self) -> None:
        """Serve until stopped; copies in flight suspend and resume at the next start."""
        loop = asyncio.get_running_loop()
        bus = await self._connect()
        clients = Clients(bus, self.service, self.background)
        await clients.watch()
        registry = Registry(bus, self.service, self.inventory, self.background,
                            Authorizer(bus), clients.release_if_gone,
                            job_retention=self.job_retention)
        hotplug = Hotplug(self.service, self.discovery, self.inventory, self.background,
                          Exports(registry.sync_volumes, registry.sync_objects,
                                  registry.start_job))
        scheduler = Scheduler(self.service, Schedules(self.service), self.clock,
                              registry.start_job, self.background)
        ScheduleObjects(scheduler, registry.auth, registry.export, bus.unexport)
        registry.job_listeners.append(scheduler.job_ended)
        hosts = HostObjects(self.service.store, self.background, registry.auth,
                            registry.export, bus.unexport,
                            probe_interval=self.host_probe_interval)
        bus.export(ROOT, Manager(self.service, registry.context,
                                 HostContext(hotplug.rediscover, registry.sync_objects,
                                             self.inventory.candidate_views), scheduler,
                                 hosts))
        self.service.listeners.append(registry.on_event)
        hotplug.start()
        registry.sync_objects()
        for sid, ms in self.service.sets.items():   # copies resumed on start get their jobs
            if self.service.copying(ms):
                registry.start_job("resume", [set_path(sid)], [sid], 0)
        await scheduler.prepare()   # whoever sees ptcopyd on the bus sees its schedules
        hosts.start()               # and its hosts
        reply = await bus.request_name(BUS_NAME)
        if reply is not RequestNameReply.PRIMARY_OWNER:
            raise SystemExit(f"ptcopyd: the bus name {BUS_NAME} is taken ({reply.name}); "
                             "is another ptcopyd running?")
        scheduler.start()   # after the resumed copies' jobs: a catch-up run sees them
        log.info("ptcopyd serving %s on %s", BUS_NAME, self.bus_address or "the system bus")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        sweep = asyncio.ensure_future(self._sweep(registry))
        disconnected = asyncio.ensure_future(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait([stop, disconnected], return_when=asyncio.FIRST_COMPLETED)
        self._stop.set()
        await sweep
        log.info("stopping: copies suspend and resume at the next start")
        await CALLS.drain(10.0)   # answer the calls in flight, refuse new ones
        hotplug.stop()
        registry.close()          # no more events onto the bus
        self.background.cancel_all()   # jobs: the copies suspend when the sets close
        bus.disconnect()
