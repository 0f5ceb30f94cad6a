"""The copy-end descriptor (Set.done_fd, pt_set_done_fd): readable exactly while no copy runs,
so an event loop learns that a copy ended without sampling its progress."""

from __future__ import annotations

import os
import select

from ptcopy.engine import Direction, Engine, Kind, Side
from tests.engine.sets_common import C, MakeVol, Vols

MIB = 1 << 20


def readable(fd: int, timeout_s: float = 0.0) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(int(timeout_s * 1000)))


def test_readable_without_a_copy(engine: Engine, tmp_vol: MakeVol) -> None:
    s = Vols(tmp_vol, Kind.DEPENDENT, MIB).enable(engine)
    fd = s.done_fd()
    try:
        assert readable(fd)
        s.update(Direction.TO_SHADOW)   # a new point in time: no copy thread at all
        assert readable(fd)
        assert not s.progress().active
    finally:
        os.close(fd)


def test_unreadable_while_a_throttled_copy_runs_readable_at_its_end(
        engine: Engine, tmp_vol: MakeVol) -> None:
    s = Vols(tmp_vol, Kind.INDEPENDENT, 4 * MIB).enable(engine, copy_delay_ms=60000,
                                                         copy_units=1)
    fds = [s.done_fd(), s.done_fd()]   # two watchers see the same: nobody consumes it
    try:
        assert s.progress().active
        assert not any(readable(fd) for fd in fds)
        s.abort()   # ends the 60 s pause at once
        assert all(readable(fd, 10) for fd in fds)
        p = s.progress()
        assert not p.active and p.chunks_done < p.chunks_total
        assert readable(fds[0])   # level: still readable, it was never read
    finally:
        for fd in fds:
            os.close(fd)


def test_update_ends_readable_and_each_new_copy_clears_it(engine: Engine,
                                                          tmp_vol: MakeVol) -> None:
    s = Vols(tmp_vol, Kind.INDEPENDENT, 4 * MIB).enable(engine)
    fd = s.done_fd()
    try:
        assert readable(fd, 30)
        assert s.wait(0)
        s.set_copy_params(60000, 1)
        for c in (1, 7, 100):
            s.write(Side.MASTER, c * C, b"x" * C)
        s.update(Direction.TO_SHADOW)
        assert s.progress().active
        assert not readable(fd)
        s.set_copy_params(0, 256)
        s.abort()
        assert readable(fd, 10)
        s.update(Direction.TO_SHADOW)   # finishes what the abort left, unthrottled
        assert readable(fd, 30)
        assert s.wait(0)
        p = s.progress()
        assert not p.active and p.result == 0 and p.chunks_done == p.chunks_total
        assert s.read(Side.SHADOW, 7 * C, C) == b"x" * C
    finally:
        os.close(fd)


def test_close_during_a_copy_wakes_the_watcher_and_the_descriptor_outlives_the_set(
        engine: Engine, tmp_vol: MakeVol) -> None:
    s = Vols(tmp_vol, Kind.INDEPENDENT, 4 * MIB).enable(engine, copy_delay_ms=60000,
                                                         copy_units=1)
    fd = s.done_fd()
    try:
        assert not readable(fd)
        s.close()   # suspends the copy: its end is signalled, then the set's own fd closes
        assert readable(fd, 10)
        assert s.closed
    finally:
        os.close(fd)
