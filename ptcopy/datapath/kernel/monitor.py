"""The kernel path's monitor thread: runs the path's round (finish copies and merges, grow
compact stores) every ``poll`` seconds, and as soon as an engine copy it watches ends (its
copy-end descriptor), so a copy's end reaches its job in milliseconds."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable, Mapping

from ptcopy import engine as engine_mod
from ptcopy.datapath.kernel.state import KernelSet, State

log = logging.getLogger(__name__)


class Monitor:
    """The thread, its wake-up eventfd and its stop flag. ``tick`` is the path's round, run
    under the path's ``lock``; ``sets`` is the path's own dict of served sets (read under it)."""

    def __init__(self, lock: threading.RLock, tick: Callable[[], None],
                 sets: Mapping[str, KernelSet], poll: float) -> None:
        self._lock = lock
        self._tick = tick
        self._sets = sets
        self._stop = threading.Event()
        # wakes the thread: a copy started (watch its engine copy) or stop
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._poll = poll
        self._thread = threading.Thread(target=self._run, name="ptcopy-kernel", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Watch the engine copies again (one started or resumed); the caller holds the lock."""
        if self._wake >= 0:
            os.eventfd_write(self._wake, 1)

    def stop(self) -> None:
        """Stop the thread and wait for it (again: nothing)."""
        with self._lock:
            if self._wake < 0:
                return
            self._stop.set()
            os.eventfd_write(self._wake, 1)
        self._thread.join()
        with self._lock:
            os.close(self._wake)
            self._wake = -1

    def _run(self) -> None:
        # A copy that woke the thread once is left to the rounds until it is finished: one
        # whose end failed would keep its descriptor readable and the loop spinning.
        watch: dict[str, int] = {}
        woke: set[str] = set()
        try:
            while self._sleep(watch, woke):
                with self._lock:
                    try:
                        self._tick()
                    except Exception:   # keep watching; the next round retries
                        log.exception("kernel data path monitor")
                    copying = {n: ks for n, ks in self._sets.items()
                               if ks.state is State.COPYING}
                    for n in [n for n in watch if n not in copying]:
                        os.close(watch.pop(n))
                        woke.discard(n)
                    for n, ks in copying.items():
                        with contextlib.suppress(engine_mod.PtcopyError, OSError):
                            if n not in watch:
                                watch[n] = ks.set.done_fd()
                            elif ks.set.progress().active:
                                woke.discard(n)   # a new engine copy: watch for its end
        finally:
            for fd in watch.values():
                os.close(fd)

    def _sleep(self, watch: dict[str, int], woke: set[str]) -> bool:
        """Until the next round (False: stop)."""
        p = select.poll()
        p.register(self._wake, select.POLLIN)
        by_fd = {fd: n for n, fd in watch.items() if n not in woke}
        for fd in by_fd:
            p.register(fd, select.POLLIN)
        for fd, _ in p.poll(int(self._poll * 1000)):
            if fd in by_fd:
                woke.add(by_fd[fd])
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake)
        return not self._stop.is_set()
