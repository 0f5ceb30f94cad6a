"""org.ptcopy.Imaging1.Job: long work (copies and updates) returns a Job object at once; it
learns that its copies ended from their copy-end descriptors on the event loop (no thread, no
polling), updates its progress properties at most twice a second meanwhile, signals Completed
once, and stays readable for a while after it ends."""

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Annotated

from ptcopy import engine as eng

# dbus-fast's decorators and annotations, also under Debian 12's dbus-fast 1.84
from ptcopy._dbus_compat import (
    DBusBool,
    DBusDouble,
    DBusSignature,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
    dbus_property,
    method,
    signal,
)
from ptcopy.daemon.dbus.args import Options, Paths, R
from ptcopy.daemon.dbus.auth import Authorizer
from ptcopy.daemon.dbus.bus import IFACE
from ptcopy.daemon.dbus.errors import CALLS, translated
from ptcopy.daemon.dbus.interface import Interface
from ptcopy.daemon.dbus.paths import job_path
from ptcopy.daemon.errors import ServiceError
from ptcopy.daemon.options import parse, wait_timeout
from ptcopy.datapath.base import Copy
from ptcopy.errnames import ErrorName

log = logging.getLogger(__name__)
TICK = 0.5   # seconds between property updates while running: at most twice a second


class Job(Interface):
    """A copy or update in progress (or finished)."""

    def __init__(self, number: int, operation: str, objects: Sequence[str],
                 sets: Sequence[Copy], uid: int, auth: Authorizer,
                 on_done: Callable[["Job"], None]) -> None:
        super().__init__(IFACE + ".Job")
        self.number = number
        self.path = job_path(number)
        self._operation = operation
        self._objects = list(objects)
        self._sets = list(sets)
        self._uid = uid
        self._auth = auth
        self._on_done = on_done
        self._start = time.time()
        self._progress = 0.0
        self._bytes = 0
        self._rate = 0
        self._eta = 0
        self._done = False
        self._success = False
        self._message = ""
        self._cancelled = False
        self._valid = False    # no sample yet, or the work's size is not known
        self.ended_at = 0.0
        self._finished = asyncio.Event()

    # ---- D-Bus surface ---------------------------------------------------------------------

    @dbus_property(access=R)
    def Operation(self) -> DBusStr:
        """What the job does: copy-to-shadow, update-to-master, ..."""
        return self._operation

    @dbus_property(access=R)
    def Objects(self) -> Paths:
        """The sets (or group) the job works on."""
        return list(self._objects)

    @dbus_property(access=R)
    def Progress(self) -> DBusDouble:
        """Share of the work done, 0..1."""
        return self._progress

    @dbus_property(access=R)
    def ProgressValid(self) -> DBusBool:
        """Whether Progress means something: false until the first sample, and while the data
        path reports no size for the work."""
        return self._valid

    @dbus_property(access=R)
    def Bytes(self) -> DBusUInt64:
        """Bytes the job has to move in all."""
        return self._bytes

    @dbus_property(access=R)
    def Rate(self) -> DBusUInt64:
        """Bytes per second so far."""
        return self._rate

    @dbus_property(access=R)
    def StartTime(self) -> DBusUInt64:
        """When the job started, in microseconds since the epoch."""
        return int(self._start * 1e6)

    @dbus_property(access=R)
    def ExpectedEndTime(self) -> DBusUInt64:
        """When the job is expected to end, in microseconds since the epoch (0: unknown)."""
        return self._eta

    @dbus_property(access=R)
    def Cancelable(self) -> DBusBool:
        """Whether Cancel can stop the job: false once it ended, and while its work cannot be
        stopped half way (a kernel-path merge)."""
        return not self._done and self._cancelable()

    def _cancelable(self) -> bool:
        return all(s.cancelable for s in self._sets if not s.closed)

    @dbus_property(access=R)
    def StartedByUID(self) -> DBusUInt32:
        """The uid of the caller that started the job."""
        return self._uid

    @dbus_property(access=R)
    def Done(self) -> DBusBool:
        """Whether the job has ended."""
        return self._done

    @dbus_property(access=R)
    def Success(self) -> DBusBool:
        """Whether the job ended well (meaningful once Done)."""
        return self._success

    @dbus_property(access=R)
    def Message(self) -> DBusStr:
        """How the job ended, in words."""
        return self._message

    @method()
    @translated
    async def Cancel(self, options: Options) -> None:
        """Stop the copy; the target is left consistent but incomplete (flag incomplete)."""
        parse(options, {})
        await self._auth.check("cancel a job")
        if self._done:
            return
        if not self._cancelable():
            raise ServiceError(ErrorName.WRONG_TYPE, "this job cannot be cancelled: a merge in "
                                                     "the kernel cannot be stopped half way; "
                                                     "wait for it to end")
        self._cancelled = True
        for s in self._sets:
            if not s.closed and s.progress().active:
                await asyncio.to_thread(_abort_quietly, s)

    @method()
    @translated
    async def Wait(self, timeout: DBusDouble) -> DBusBool:
        """Wait up to timeout seconds (0 to 604800; 0 polls) for the job to end; True if it
        has."""
        wait_timeout(timeout)
        if self._finished.is_set():
            return True
        ended = asyncio.ensure_future(self._finished.wait())
        stopping = asyncio.ensure_future(CALLS.stopping.wait())
        _, pending = await asyncio.wait({ended, stopping},
                                           timeout=timeout,
                                           return_when=asyncio.FIRST_COMPLETED)
        for f in pending:
            f.cancel()
        if self._finished.is_set():
            return True
        CALLS.check_open()   # the daemon is stopping: say so rather than hang up
        return False

    @signal()
    def Completed(self) -> Annotated[tuple[bool, str], DBusSignature("bs")]:
        """The job ended: success and a message."""
        return (self._success, self._message)

    # ---- following the engine --------------------------------------------------------------

    def _sample(self) -> bool:
        """Update from the engine; True once every set's copy has ended."""
        done = total = bytes_total = rate = 0
        active = False
        results = []
        suspended = False
        for s in self._sets:
            if s.closed:
                continue
            p = s.progress()
            active = active or p.active
            done += p.chunks_done
            total += p.chunks_total
            bytes_total += p.bytes_total
            rate += p.rate
            results.append(p)
            suspended = suspended or (not p.active and s.suspended)
        self._progress = 1.0 if total == 0 else min(1.0, done / total)
        self._valid = total > 0 or not active
        self._bytes = bytes_total
        self._rate = rate
        left = bytes_total * (1 - self._progress)
        self._eta = int((time.time() + left / rate) * 1e6) if rate and active else 0
        if active:
            return False
        failed = [p for p in results if p.result]
        incomplete = [p for p in results if p.chunks_done < p.chunks_total]
        if self._cancelled and incomplete:   # a cancel after the work ended changed nothing
            self._success, self._message = False, "cancelled: the target is incomplete"
        elif failed:
            self._success = False
            self._message = f"failed: {failed[0].result} ({len(failed)} set(s)); reset the set"
        elif suspended:
            self._success = False
            self._message = (f"suspended at {100 * self._progress:.1f}%: the copy keeps its "
                             "place; resume the set to finish it")
        elif incomplete:
            self._success = False
            self._message = "aborted: the target is incomplete until the next update"
        else:
            self._success, self._message = True, "done"
            self._progress = 1.0
        return True

    async def follow(self) -> None:
        """Run until the copies end, then signal Completed once.

        Each copy's end descriptor wakes the job the moment that copy is over; a sample every
        TICK meanwhile moves the progress properties (and would end the job even if a copy
        could not give a descriptor)."""
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        watched: list[int] = []

        def ended(fd: int) -> None:
            loop.remove_reader(fd)   # level-triggered: once is enough, the sample tells
            woken.set()

        try:
            for s in self._sets:
                try:
                    fd = s.done_fd()
                except (eng.PtcopyError, OSError) as e:   # closed or gone: the samples tell
                    log.debug("job %d: no end descriptor: %s", self.number, e)
                    continue
                watched.append(fd)
                loop.add_reader(fd, ended, fd)
            shown = 0.0
            while not self._sample():
                if time.monotonic() - shown >= TICK:
                    self.refresh()
                    shown = time.monotonic()
                woken.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken.wait(), TICK)
        except Exception as e:  # a job must always end
            log.exception("job %d", self.number)
            self._success, self._message = False, f"failed: {e}"
        finally:
            for fd in watched:
                loop.remove_reader(fd)
                os.close(fd)
        self._done = True
        self.ended_at = time.monotonic()
        self.refresh()
        self.Completed()
        self._finished.set()
        self._on_done(self)


def _abort_quietly(s: Copy) -> None:
    with contextlib.suppress(eng.NoCopy):   # it ended meanwhile
        s.abort()
