"""ptcopyd: wires the Service to the bus, keeps the exported objects in step with it, runs jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from dbus_fast import BusType, Message, MessageType
from dbus_fast.constants import RequestNameReply

from ptcopy import engine as eng
from ptcopy.daemon import objects as ob
from ptcopy.daemon.bus import BUS_NAME, ROOT, Authorizer, Interface, PtcopyBus, record_caller
from ptcopy.daemon.discovery import Discovery, VolumeView, volume_id
from ptcopy.daemon.errors import CALLS, ServiceError
from ptcopy.daemon.jobs import Job
from ptcopy.daemon.service import Service
from ptcopy.daemon.volumes import _under

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Interface)
SWEEP = 2.0   # seconds between sweeps for changes nobody announced (I/O errors, copy ends)
KEY_CACHE = 1024   # volume paths whose identity is remembered (least recently used go first)
VISIBLE_TIMEOUT = 10.0   # seconds a "may the caller see this path" check may take
Key = tuple[int, int, int]


class BoundedCache(OrderedDict[str, Key | None]):
    """A least-recently-used map of at most ``limit`` entries."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def get_fresh(self, key: str) -> tuple[bool, Key | None]:
        if key not in self:
            return False, None
        self.move_to_end(key)
        return True, self[key]

    def put(self, key: str, value: Key | None) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


@dataclass(frozen=True)
class CandidateView:
    """What Candidates needs of a Volume object, copied on the loop for a worker thread."""
    vid: str
    size: int
    available: bool
    devnum: int


def path_visible_to(path: str, uid: int) -> bool:
    """Whether the user ``uid`` (with its primary and supplementary groups) can stat ``path``
    itself: checked by a child running as that user, so every directory's permissions, ACLs
    and symbolic links count exactly as they would for the user."""
    try:
        pw = pwd.getpwuid(uid)
        gid, groups = pw.pw_gid, os.getgrouplist(pw.pw_name, pw.pw_gid)
    except (KeyError, OSError):
        gid, groups = 65534, []
    exe = shutil.which("test") or "/usr/bin/test"
    try:
        r = subprocess.run([exe, "-e", path], user=uid, group=gid, extra_groups=groups,
                           capture_output=True, timeout=VISIBLE_TIMEOUT, check=False,
                           env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("cannot check whether uid %d sees %s: %s", uid, path, e)
        return False
    return r.returncode == 0


class Daemon:
    def __init__(self, service: Service, bus_address: str | None, *,
                 job_retention: float = 900.0, volumes: str = "host") -> None:
        self.service = service
        self.all_volumes = volumes == "host"   # else only the volumes in use
        self.bus_address = bus_address
        self.job_retention = job_retention
        self.bus: PtcopyBus | None = None
        self.auth: Authorizer
        self.manager: ob.Manager
        self.set_objects: dict[str, ob.IISet] = {}
        self.group_objects: dict[str, ob.IIGroup] = {}
        self.overflow_objects: dict[str, ob.IIOverflow] = {}
        self.volume_objects: dict[str, ob.Volume] = {}
        self.discovery = Discovery(service.run_dir)
        self._keys = BoundedCache(KEY_CACHE)
        self.jobs: dict[int, Job] = {}
        self._next_job = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Future[None]] = set()
        self._uevent_fd: int | None = None
        self._rediscovering = asyncio.Lock()   # one Refresh scan at a time holds uevents back

    # ---- exports ---------------------------------------------------------------------------

    def _bus(self) -> PtcopyBus:
        assert self.bus is not None
        return self.bus

    def _export(self, path: str, obj: Interface) -> bool:
        """Export one object; one that cannot be (a bad path) is logged, never stops the
        daemon nor the export of the others."""
        try:
            self._bus().export(path, obj)
        except Exception as e:  # dbus-fast raises several types for a path it refuses
            log.error("cannot export %s: %s", path, e)
            return False
        obj.refresh()
        return True

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
                obj = make(ident)
                if self._export(path_of(ident), obj):
                    table[ident] = obj

    # ---- volumes ---------------------------------------------------------------------------

    def _key(self, path: str) -> tuple[int, int, int] | None:
        """What a set's volume path is: ('block', rdev) or ('file', dev, ino); cached (only
        for the paths sets and overflow volumes use, and at most KEY_CACHE of them)."""
        hit, key = self._keys.get_fresh(path)
        if hit:
            return key
        key = _stat_key(path)
        if key is not None:
            self._keys.put(path, key)
        return key

    def _users(self) -> dict[tuple[int, int, int], list[tuple[str, str, str, str, str]]]:
        """Who uses which volume: key -> [(object path, role, name, given path, set id)]."""
        out: dict[tuple[int, int, int], list[tuple[str, str, str, str, str]]] = {}
        # copies: worker threads add and remove sets while the loop reads
        for sid, ms in list(self.service.sets.items()):
            for role in ("master", "shadow", "bitmap"):
                p = str(getattr(ms.row, role))
                key = self._key(p) if p else None
                if key is not None:
                    out.setdefault(key, []).append(
                        (ob.set_path(sid), role, f"set {ms.row.name}", p, sid))
        for oid, mo in list(self.service.overflows.items()):
            key = self._key(mo.row.path)
            if key is not None:
                out.setdefault(key, []).append(
                    (ob.overflow_path(oid), "overflow", "overflow volumes", mo.row.path, ""))
        return out

    def _served_by(self) -> dict[str, str]:
        """Device node -> what ptcopy serves there."""
        out: dict[str, str] = {}
        for ms in list(self.service.sets.values()):
            sv = ms.served
            if sv is not None:
                if sv.master_device:
                    out[str(sv.master_device)] = f"the master device of set {ms.row.name}"
                if sv.shadow_device:
                    out[str(sv.shadow_device)] = f"the shadow device of set {ms.row.name}"
        return out

    def _missing(self, sid: str, role: str) -> bool:
        """Whether set sid waits for its volume in role (False once the set is gone: it may
        be disabled by a worker thread while the loop builds a view)."""
        ms = self.service.sets.get(sid) if sid else None
        return ms is not None and role in ms.missing

    def volume_views(self, everything: bool = False) -> dict[str, VolumeView]:
        """Every volume of the host (with --volumes used, unless everything: only those in
        use) and every file in use, by object id."""
        disc = self.discovery
        users = self._users()
        served = self._served_by()
        views: dict[str, VolumeView] = {}
        seen: set[tuple[int, int, int]] = set()
        for d in disc.devices.values():
            key = (1, d.devnum, 0)
            seen.add(key)
            why: list[str] = []
            used_by = "/"
            for obj, role, name, _p, sid in users.get(key, []):
                used_by = obj if used_by == "/" else used_by
                gone = self._missing(sid, role)
                why.append(f"is the {role} of {name}" + (" (removed)" if gone else ""))
            parent = disc.devices.get(d.parent)
            if parent is not None:
                for _obj, role, name, _p, _sid in users.get((1, parent.devnum, 0), []):
                    why.append(f"its disk {parent.node} is the {role} of {name}")
            if used_by == "/" and not (self.all_volumes or everything):
                continue
            if d.node in served:
                why.append(f"is {served[d.node]} (ptcopy serves it)")
            else:
                why.extend(disc.problems(d))
            views[volume_id(d.node)] = VolumeView(
                d.path, d.size, d.type, d.fstype, bool(disc.host.mounts.get(d.devnum)),
                d.holders, used_by, not why, "; ".join(why), d.devnum)
        for key, uses in users.items():
            if key in seen:
                continue
            obj, role, name, p, sid = uses[0]
            why = [f"is the {r} of {n}" + (" (removed)" if self._missing(s_, r) else "")
                   for _o, r, n, _p, s_ in uses]
            if key[0] == 2:
                try:
                    size = os.stat(p).st_size
                except OSError:
                    size = 0
                views[volume_id(p)] = VolumeView(p, size, "file", used_by=obj,
                                                 unsuitable="; ".join(why))
                continue
            # a block device in use that udev does not show (removed)
            sys_dev = f"/sys/dev/block/{os.major(key[1])}:{os.minor(key[1])}"
            node = f"/dev/{os.path.basename(os.path.realpath(sys_dev))}" \
                if os.path.exists(sys_dev) else p
            views[volume_id(node)] = VolumeView(
                p, 0, "loop" if node.startswith("/dev/loop") else "disk", used_by=obj,
                unsuitable="; ".join(why) + "; the device is not present", devnum=key[1])
        return views

    def _sync_volumes(self) -> None:
        views = self.volume_views()
        for vid in list(self.volume_objects):
            if vid not in views:
                self._bus().unexport(f"{ROOT}/volumes/{vid}")
                del self.volume_objects[vid]
        for vid in sorted(views):
            obj = self.volume_objects.get(vid)
            if obj is None:
                obj = ob.Volume(self, views[vid].path)
                obj.view = views[vid]
                if self._export(f"{ROOT}/volumes/{vid}", obj):
                    self.volume_objects[vid] = obj
            else:
                obj.update(views[vid])

    def _devices_changed(self, before: dict[str, int], after: dict[str, int]) -> None:
        """Automation: a volume of a set that disappeared marks the set degraded; one that
        comes back resumes it (reset: the resync it needs starts)."""
        gone = set(before.values()) - set(after.values())
        came = set(after.values()) - set(before.values())
        if not gone and not came:
            return
        users = self._users()
        for devnum in gone:
            for _obj, role, _n, _p, sid in users.get((1, devnum, 0), []):
                if sid:   # takes service.lock, which a long operation may hold: not here
                    self._background(self._volume_missing(sid, role))
        for devnum in came:
            for _obj, role, _n, _p, sid in users.get((1, devnum, 0), []):
                if self._missing(sid, role):
                    self._background(self._volume_back(sid, role))
        if came:   # a volume back under another name is found by its identity (issue 11)
            self._background(self._volumes_appeared(sorted(came)))

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run work off the loop's path; a failure is logged, never lost silently."""
        fut = asyncio.ensure_future(work)
        self._tasks.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            self._tasks.discard(f)
            if not f.cancelled() and f.exception() is not None:
                log.error("background work failed: %s", f.exception(),
                          exc_info=f.exception())
        fut.add_done_callback(done)

    async def _volume_missing(self, sid: str, role: str) -> None:
        await asyncio.to_thread(self.service.volume_missing, sid, role)
        self._sync_volumes()   # the volume's view says "(removed)" now

    async def _volumes_appeared(self, devnums: list[int]) -> None:
        if await asyncio.to_thread(self.service.volumes_appeared, devnums):
            self.sync_objects()

    async def _volume_back(self, sid: str, role: str) -> None:
        resumed = await asyncio.to_thread(self.service.volume_back, sid, role)
        ms = self.service.sets.get(sid)
        if resumed and ms is not None and self.service.copying(ms):
            self.start_job("reset", [ob.set_path(sid)], [sid], 0)
        self._sync_volumes()

    async def _apply_devices(self, apply: Callable[[], set[str]]) -> int:
        """Run apply (which probes devices: blkid where udevd does not run, reads of a failing
        device) in a worker thread; the table it builds replaces the old one in one assignment,
        which readers on the loop see whole."""
        before = {n: d.devnum for n, d in self.discovery.devices.items()}
        changed = await asyncio.to_thread(apply)
        after = {n: d.devnum for n, d in self.discovery.devices.items()}
        self._devices_changed(before, after)
        if changed:
            self._sync_volumes()
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
            self._background(self._handle_uevents(events))

    async def _handle_uevents(self, events: list[tuple[str, str, Mapping[str, str]]]) -> None:
        try:
            async with self._rediscovering:
                await self._take_uevents(events)
        finally:
            self._watch_uevents(True)

    async def _take_uevents(self, events: list[tuple[str, str, Mapping[str, str]]] | None = None
                            ) -> None:
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
        self._keys.clear()
        for _ in range(5):   # udevd may still be working on events for what sysfs shows
            await self._take_uevents()
            found = await asyncio.to_thread(self.discovery.enumerate)
            await self._take_uevents()
            if found == self.discovery.devices:
                break
            await asyncio.sleep(0.1)
        before = self.volume_views()
        # the scan probes every device again (blkid, where udevd does not run): in a worker
        # thread, with the uevents held back meanwhile so nothing else changes the devices
        # (the scan replaces the table in one assignment, which readers on the loop see whole)
        devices = {n: d.devnum for n, d in self.discovery.devices.items()}
        self._watch_uevents(False)
        try:
            changed = await asyncio.to_thread(self.discovery.scan, forget_probes=True)
        finally:
            self._watch_uevents(True)   # what came meanwhile is taken next
        self._devices_changed(devices, {n: d.devnum for n, d in self.discovery.devices.items()})
        if changed:
            self._sync_volumes()
        self.discovery.mounts_changed()
        after = self.volume_views()
        self._sync_volumes()
        return sum(1 for k in before.keys() | after.keys() if before.get(k) != after.get(k))

    def candidate_views(self) -> list[CandidateView]:
        """On the loop: what Candidates' worker thread needs of the volumes (the dicts behind
        volume_views belong to the loop)."""
        return [CandidateView(vid, v.size, v.available, v.devnum)
                for vid, v in self.volume_views(everything=True).items()]

    def candidates(self, views: Sequence[CandidateView], master: str, role: str, kind: str,
                   chunk_size: int, shadow: str, uid: int) -> list[str]:
        """In a worker thread: volumes that could be the shadow or bitmap of a set with this
        master. Anyone may ask, so a caller other than root learns nothing about a path it
        could not stat itself: such a path gets the answer a missing one gets."""
        def size_of(p: str, what: str) -> tuple[int, Key]:
            """A block device's or an allowed file's size (no other paths) and identity."""
            if uid != 0 and not path_visible_to(p, uid):
                raise ServiceError("NotFound", f"{what} {p}: no such volume that uid {uid} "
                                               "can see")
            try:
                st = os.stat(p)
            except OSError as e:
                raise ServiceError("NotFound", f"{what} {p}: {e.strerror}") from e
            key: Key = (1, st.st_rdev, 0) if stat.S_ISBLK(st.st_mode) else \
                (2, st.st_dev, st.st_ino)
            if stat.S_ISBLK(st.st_mode):
                sys_size = f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/size"
                try:
                    with open(sys_size, encoding="ascii") as f:
                        return int(f.read()) * 512, key
                except (OSError, ValueError) as e:
                    raise ServiceError("NotFound", f"{what} {p}: no size") from e
            if stat.S_ISREG(st.st_mode) and _under(os.path.realpath(p),
                                                   self.service.file_dirs):
                return st.st_size, key
            raise ServiceError("InvalidArgument", f"{what} {p} is neither a block device nor a "
                                                  "file in the directories for file volumes")

        msize, mkey = size_of(master, "master")
        if role == "shadow":
            need = msize if kind == "independent" else 1
        else:
            ssize = size_of(shadow, "shadow")[0] if shadow else msize
            k = eng.Kind.INDEPENDENT if kind == "independent" else eng.Kind.DEPENDENT
            try:
                need = eng.bitmap_size(msize, ssize, chunk_size, k)
            except eng.PtcopyError as e:
                raise ServiceError("InvalidArgument", str(e)) from e
        fits = [(v.size, v.vid) for v in views
                if v.available and v.size >= need and (1, v.devnum, 0) != mkey]
        return [f"{ROOT}/volumes/{vid}" for _s, vid in sorted(fits)]

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
        sets = [self.service.copier(i) for i in set_ids]
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
                # a set or group must not name a job that is gone: a client would wait on it
                # and get UnknownObject (seen in the reliability load figure)
                objs: list[ob.IISet | ob.IIGroup] = [*self.set_objects.values(),
                                                     *self.group_objects.values()]
                for obj in objs:
                    if obj.job == job.path:
                        obj.job = "/"
                        obj.refresh()

    # ---- clients leaving -------------------------------------------------------------------

    def _watch_names(self, msg: Message) -> bool:
        if (msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged"
                and msg.sender == "org.freedesktop.DBus"):
            name, _old, new = msg.body
            # only a client that holds a lock costs a worker thread (release_locks_of takes
            # service.lock); every other client leaving costs this look only
            if name.startswith(":") and not new and any(
                    ms.locked_by == name for ms in list(self.service.sets.values())):
                log.debug("client %s left holding locks: releasing them", name)
                self._background(asyncio.to_thread(self.service.release_locks_of, name))
        return False

    async def release_if_gone(self, name: str) -> None:
        """After a Lock: a client that left while its call ran had its NameOwnerChanged
        looked at before the lock existed (_watch_names), so release it here. The lock is
        recorded before the bus is asked, so one of the two always sees it."""
        reply = await self._bus().call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="NameHasOwner", signature="s",
            body=[name]))
        if reply is not None and reply.message_type is MessageType.METHOD_RETURN \
                and not reply.body[0]:
            log.debug("client %s left during its Lock call: releasing its locks", name)
            await asyncio.to_thread(self.service.release_locks_of, name)

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
            if self.discovery.mounts_changed():   # mounts send no uevent
                self._sync_volumes()
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
        self.discovery.scan()
        uevents = self.discovery.start_monitor()
        self._uevent_fd = uevents
        self._loop.add_reader(uevents, self._on_uevents)
        self.sync_objects()
        for sid, ms in self.service.sets.items():   # copies resumed on start get their jobs
            if self.service.copying(ms):
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
        self._loop.remove_reader(uevents)
        self._uevent_fd = None
        self.discovery.close()
        self._loop = None         # no more events onto the bus
        for task in list(self._tasks):
            task.cancel()         # jobs: the copies themselves suspend when the sets close
        self.bus.disconnect()


def _stat_key(path: str) -> Key | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (1, st.st_rdev, 0) if stat.S_ISBLK(st.st_mode) else (2, st.st_dev, st.st_ino)
