"""The copy-end descriptor (Set.done_fd, pt_set_done_fd): readable exactly while no copy runs,
so an event loop learns that a copy ended without sampling its progress."""

from __future__ import annotations

import os
import select

import pytest

from ptcopy.engine import Direction, Engine, Flag, InUse, Kind, Side
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


def test_an_update_with_nothing_to_copy_is_an_empty_finished_copy(engine: Engine,
                                                                  tmp_vol: MakeVol) -> None:
    """It ends at once (no thread: the descriptor never stops being readable) and reports
    itself, not the copy before it; the refusals still come first."""
    s = Vols(tmp_vol, Kind.INDEPENDENT, 4 * MIB).enable(engine)
    assert s.wait(30)
    assert s.progress().chunks_total > 0   # the full copy
    fd = s.done_fd()
    try:
        s.update(Direction.TO_MASTER)
        assert readable(fd)
        p = s.progress()
        assert not p.active and p.result == 0 and p.chunks_total == 0 and p.bytes_total == 0
        assert s.wait(0)
        s.lock(7)
        with pytest.raises(InUse):
            s.update(Direction.TO_SHADOW, owner=8)
        s.update(Direction.TO_SHADOW, owner=7)
        s.unlock(7)
        s.write(Side.MASTER, 5 * C, b"y" * C)   # now there is something: a real copy
        s.update(Direction.TO_SHADOW)
        assert s.wait(30)
        p = s.progress()
        assert p.chunks_total == 1 and p.chunks_done == 1 and p.result == 0
        assert s.read(Side.SHADOW, 5 * C, C) == b"y" * C
        assert not s.status().flags & (Flag.COPYING | Flag.INCOMPLETE)
    finally:
        os.close(fd)
