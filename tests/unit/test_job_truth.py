"""Job.ProgressValid and Cancelable say what is true: no progress before the first sample or
while the work's size is unknown; a copy that cannot be stopped (a kernel merge) is not
cancelable and Cancel on it is refused with a clear error."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

import pytest

from ptcopy.daemon.dbus.job import Job
from ptcopy.engine import Direction, Progress


@dataclass
class FakeCopy:
    """A Copy as a job follows it, driven by the test."""

    cancelable: bool = True
    suspended: bool = False
    active: bool = True
    done: int = 0
    total: int = 0
    aborted: int = 0
    fds: list[int] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return False

    def progress(self) -> Progress:
        return Progress(active=self.active, direction=Direction.TO_SHADOW, aborting=False,
                        result=0, chunks_done=self.done, chunks_total=self.total,
                        bytes_done=self.done * 4096, bytes_total=self.total * 4096, rate=0,
                        elapsed_s=0.0)

    def abort(self) -> None:
        self.aborted += 1
        self.active = False

    def done_fd(self) -> int:
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)   # never readable: the ticks tell
        self.fds.append(fd)
        return os.dup(fd)


class Anyone:
    async def check(self, what: str) -> int:
        return 0


async def cancel(job: Job) -> None:
    """Job.Cancel as its D-Bus call runs it (the method decorator's wrapped coroutine)."""
    await Job.Cancel.__wrapped__(job, {})   # type: ignore[attr-defined]


def job_of(copy: FakeCopy) -> Job:
    return Job(1, "copy-to-shadow", ["/s"], [copy], 0, Anyone(),  # type: ignore[arg-type]
               lambda j: None)


def test_progress_is_not_valid_before_a_sample_nor_while_the_size_is_unknown() -> None:
    async def run() -> None:
        copy = FakeCopy(total=0)
        job = job_of(copy)
        assert job.ProgressValid is False   # nothing sampled yet
        task = asyncio.ensure_future(job.follow())
        await asyncio.sleep(0.05)
        assert job.ProgressValid is False   # sampled, but the copy reports no size
        copy.total, copy.done = 10, 4
        await asyncio.sleep(0.7)             # the next tick
        assert job.ProgressValid is True and job.Progress == pytest.approx(0.4)
        assert job.Cancelable is True
        copy.active = False
        copy.done = 10
        await asyncio.wait_for(task, 5)
        assert job.Done is True and job.Success is True and job.Cancelable is False

    asyncio.run(run())


def test_a_copy_that_cannot_be_stopped_is_not_cancelable() -> None:
    async def run() -> None:
        copy = FakeCopy(cancelable=False, total=8)
        job = job_of(copy)
        task = asyncio.ensure_future(job.follow())
        await asyncio.sleep(0.05)
        assert job.Cancelable is False and job.Done is False
        with pytest.raises(Exception, match="cannot be cancelled"):
            await cancel(job)
        assert copy.aborted == 0
        copy.cancelable = True
        assert job.Cancelable is True
        await cancel(job)
        assert copy.aborted == 1
        await asyncio.wait_for(task, 5)
        assert job.Success is False and job.Message.startswith("cancelled")

    asyncio.run(run())


def test_a_suspended_copy_ends_its_job_saying_so() -> None:
    async def run() -> None:
        copy = FakeCopy(total=8, done=2)
        job = job_of(copy)
        task = asyncio.ensure_future(job.follow())
        await asyncio.sleep(0.05)
        copy.active, copy.suspended = False, True
        await asyncio.wait_for(task, 5)
        assert job.Success is False and job.Message.startswith("suspended at 25.0%"), job.Message

    asyncio.run(run())


def test_a_cancel_that_comes_after_the_work_ended_does_not_call_it_cancelled() -> None:
    async def run() -> None:
        copy = FakeCopy(total=8, done=8)   # every chunk moved; the end not yet seen
        job = job_of(copy)
        task = asyncio.ensure_future(job.follow())
        await asyncio.sleep(0.05)
        await cancel(job)
        await asyncio.wait_for(task, 5)
        assert job.Success is True and job.Message == "done", job.Message

    asyncio.run(run())
