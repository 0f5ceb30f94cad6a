"""Discovery hooked to the daemon: udev events change the device table off the loop, a
volume of a set that disappears marks the set degraded and one that comes back resumes it,
and Manager.Refresh re-enumerates from scratch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ptcopy.daemon.background import Background
from ptcopy.daemon.dbus.context import StartJob
from ptcopy.daemon.dbus.paths import set_path
from ptcopy.daemon.discovery import Discovery
from ptcopy.daemon.inventory import Inventory
from ptcopy.daemon.service import Service

log = logging.getLogger(__name__)

Events = list[tuple[str, str, Mapping[str, str]]]


@dataclass(frozen=True)
class Exports:
    """What a device change makes the exported objects do."""

    sync_volumes: Callable[[], None]   # the Volume objects follow the views
    sync_objects: Callable[[], None]   # every object follows the Service
    start_job: StartJob                # a resumed set's copy gets its job


class Hotplug:
    """Applies udev events and rescans in worker threads, one batch at a time, in order."""

    def __init__(self, service: Service, discovery: Discovery, inventory: Inventory,
                 background: Background, exports: Exports) -> None:
        self.service = service
        self.discovery = discovery
        self.inventory = inventory
        self.background = background
        self.exports = exports
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uevent_fd: int | None = None
        self._rediscovering = asyncio.Lock()   # one Refresh scan at a time holds uevents back

    def start(self) -> None:
        """On the loop: enumerate the devices and follow udev's events."""
        self._loop = asyncio.get_running_loop()
        self.discovery.scan()
        self._uevent_fd = self.discovery.start_monitor()
        self._loop.add_reader(self._uevent_fd, self._on_uevents)

    def stop(self) -> None:
        """Stop following events and close discovery."""
        if self._loop is not None and self._uevent_fd is not None:
            self._loop.remove_reader(self._uevent_fd)
        self._uevent_fd = None
        self.discovery.close()

    def _devices_changed(self, before: dict[str, int], after: dict[str, int]) -> None:
        """Automation: a volume of a set that disappeared marks the set degraded; one that
        comes back resumes it (reset: the resync it needs starts)."""
        gone = set(before.values()) - set(after.values())
        came = set(after.values()) - set(before.values())
        if not gone and not came:
            return
        users = self.inventory.users()
        for devnum in gone:
            for _obj, role, _n, _p, sid in users.get((1, devnum, 0), []):
                if sid:   # takes service.lock, which a long operation may hold: not here
                    self.background.spawn(self._volume_missing(sid, role))
        for devnum in came:
            for _obj, role, _n, _p, sid in users.get((1, devnum, 0), []):
                if self.inventory.missing(sid, role):
                    self.background.spawn(self._volume_back(sid, role))
        if came:   # a volume back under another name is found by its identity (issue 11)
            self.background.spawn(self._volumes_appeared(sorted(came)))

    async def _volume_missing(self, sid: str, role: str) -> None:
        await asyncio.to_thread(self.service.volume_missing, sid, role)
        self.exports.sync_volumes()   # the volume's view says "(removed)" now

    async def _volumes_appeared(self, devnums: list[int]) -> None:
        if await asyncio.to_thread(self.service.volumes_appeared, devnums):
            self.exports.sync_objects()

    async def _volume_back(self, sid: str, role: str) -> None:
        resumed = await asyncio.to_thread(self.service.volume_back, sid, role)
        ms = self.service.sets.get(sid)
        if resumed and ms is not None and self.service.copying(ms):
            self.exports.start_job("reset", [set_path(sid)], [sid], 0)
        self.exports.sync_volumes()

    def _devnums(self) -> dict[str, int]:
        return {n: d.devnum for n, d in self.discovery.devices.items()}

    async def _apply_devices(self, apply: Callable[[], set[str]]) -> int:
        """Run apply (which probes devices: blkid where udevd does not run, reads of a failing
        device) in a worker thread; the table it builds replaces the old one in one assignment,
        which readers on the loop see whole."""
        before = self._devnums()
        changed = await asyncio.to_thread(apply)
        self._devices_changed(before, self._devnums())
        if changed:
            self.exports.sync_volumes()
        return len(changed)

    def _watch_uevents(self, on: bool) -> None:
        if self._uevent_fd is None or self._loop is None:
            return
        if on:
            self._loop.add_reader(self._uevent_fd, self._on_uevents)
        else:
            self._loop.remove_reader(self._uevent_fd)

    def _on_uevents(self) -> None:
        """Reader callback: the events are taken here and applied off the loop, with further
        events held back until then, so batches apply in order."""
        events = self.discovery.pending()
        if events:
            self._watch_uevents(False)
            self.background.spawn(self._handle_uevents(events))

    async def _handle_uevents(self, events: Events) -> None:
        try:
            async with self._rediscovering:
                await self._take_uevents(events)
        finally:
            self._watch_uevents(True)

    async def _take_uevents(self, events: Events | None = None) -> None:
        events = self.discovery.pending() if events is None else events
        if events:
            log.debug("uevents: %s", [(a, n) for a, n, _ in events])
            await self._apply_devices(lambda: self.discovery.handle(events))

    async def rediscover(self) -> int:
        """Manager.Refresh: take the events in flight, then re-enumerate; how many Volume
        objects the monitor had wrong (0 after normal operation)."""
        async with self._rediscovering:
            return await self._rediscover()

    async def _rediscover(self) -> int:
        self.inventory.forget()
        for _ in range(5):   # udevd may still be working on events for what sysfs shows
            await self._take_uevents()
            found = await asyncio.to_thread(self.discovery.enumerate)
            await self._take_uevents()
            if found == self.discovery.devices:
                break
            await asyncio.sleep(0.1)
        before = self.inventory.views()
        # the scan probes every device again (blkid, where udevd does not run): in a worker
        # thread, with the uevents held back meanwhile so nothing else changes the devices
        # (the scan replaces the table in one assignment, which readers on the loop see whole)
        devices = self._devnums()
        self._watch_uevents(False)
        try:
            changed = await asyncio.to_thread(self.discovery.scan, forget_probes=True)
        finally:
            self._watch_uevents(True)   # what came meanwhile is taken next
        self._devices_changed(devices, self._devnums())
        if changed:
            self.exports.sync_volumes()
        self.discovery.mounts_changed()
        after = self.inventory.views()
        self.exports.sync_volumes()
        return sum(1 for k in before.keys() | after.keys() if before.get(k) != after.get(k))
