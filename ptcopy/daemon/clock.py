"""The clock schedules run by: the system's, or (tests only, ptcopyd --test-clock FILE) a time
read from a file that moves only when a test writes it, so a schedule's hours pass in
milliseconds without sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol

LONGEST_SLEEP = 60.0   # the wall clock may jump (settime, suspend): look again at least this often


class Clock(Protocol):
    """Now, and a sleep until a time that a wake-up event cuts short."""

    manual: bool   # True: time moves only when told (the scheduler wakes on SIGUSR1)

    def now_us(self) -> int:
        """Microseconds since the epoch."""

    async def sleep_until(self, when_us: int | None, wake: asyncio.Event) -> None:
        """Return at ``when_us`` (None: never), or earlier when ``wake`` is set."""


async def _wait(wake: asyncio.Event, seconds: float | None) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(wake.wait(), seconds)


class SystemClock:
    """The real time."""

    manual = False

    def now_us(self) -> int:
        return time.time_ns() // 1000

    async def sleep_until(self, when_us: int | None, wake: asyncio.Event) -> None:
        if when_us is None:   # nothing planned: only a change of the schedules wakes us
            await _wait(wake, None)
            return
        left = (when_us - self.now_us()) / 1e6
        await _wait(wake, min(max(left, 0.0), LONGEST_SLEEP))


class FileClock:
    """Tests only: the time is the number of seconds since the epoch that ``path`` holds; the
    daemon looks at it again when it gets SIGUSR1 (or a schedule changes)."""

    manual = True

    def __init__(self, path: str) -> None:
        self.path = path
        self.now_us()   # a missing or unreadable file is an error at start, not later

    def now_us(self) -> int:
        with open(self.path, encoding="ascii") as f:
            return int(float(f.read().strip()) * 1_000_000)

    async def sleep_until(self, when_us: int | None, wake: asyncio.Event) -> None:
        await _wait(wake, None)
