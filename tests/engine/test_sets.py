"""Scenario tests of set semantics (docs/engine-semantics.md), one behaviour per test: dependent
and independent sets, background copies, lifetime (reopen, bitmap in memory, descriptors).
Compact shadows, groups and offline volumes have files of their own (test_sets_*.py)."""

from __future__ import annotations

import os
import time

import pytest

from ptcopy.engine import (
    BadHeader,
    CopyInProgress,
    Direction,
    Engine,
    Flag,
    Incomplete,
    InvalidArgument,
    Kind,
    NoCopy,
    Offline,
    PtcopyError,
    Side,
    VolumeIOError,
    VolumeRole,
)
from tests.engine.sets_common import (
    BIG_CHUNK,
    OFFLINE,
    C,
    MakeVol,
    Vols,
    heal,
    overflow_vol,
    raw,
    rnd,
    scatter_shadow_writes,
    wait_until,
    whole,
)

# ---- dependent sets ---------------------------------------------------------------------------


def test_dependent_cow_keeps_point_in_time(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.DEPENDENT, 8 * C)
    pit = raw(v.master)
    s = v.enable(engine)
    assert s.bits("shadow") == [] and s.progress().active is False
    # unaligned master writes across chunk boundaries, twice to the same chunk
    s.write(Side.MASTER, C - 10, b"A" * 30)
    s.write(Side.MASTER, 5 * C + 100, b"B" * (2 * C))
    s.write(Side.MASTER, C, b"C" * 7)
    master = bytearray(pit)
    master[C - 10:C + 20] = b"A" * 30
    master[5 * C + 100:7 * C + 100] = b"B" * (2 * C)
    master[C:C + 7] = b"C" * 7
    assert whole(s, Side.MASTER) == bytes(master) == raw(v.master)
    assert whole(s, Side.SHADOW) == pit, "the shadow lost its point in time"
    assert s.bits("shadow") == [0, 1, 5, 6, 7]
    # the shadow volume holds the point-in-time copies of exactly the chunks written
    for c in (0, 1, 5, 6, 7):
        assert raw(v.shadow)[c * C:(c + 1) * C] == pit[c * C:(c + 1) * C]
    # a shadow write changes the shadow only; the first one copies the chunk (partial write)
    s.write(Side.SHADOW, 3 * C + 5, b"s" * 10)
    shadow = bytearray(pit)
    shadow[3 * C + 5:3 * C + 15] = b"s" * 10
    assert whole(s, Side.SHADOW) == bytes(shadow)
    assert whole(s, Side.MASTER) == bytes(master)
    assert 3 in s.bits("shadow")
    # update to the shadow: a new point in time, nothing copied, bits cleared
    s.update(Direction.TO_SHADOW)
    assert s.wait(5)
    assert whole(s, Side.SHADOW) == bytes(master)
    assert s.bits("shadow") == []


def test_several_dependent_shadows_per_master(engine: Engine, tmp_vol: MakeVol) -> None:
    size = 6 * C
    first = Vols(tmp_vol, Kind.DEPENDENT, size)
    others = [Vols(tmp_vol, Kind.DEPENDENT, size, master=first.master) for _ in range(2)]
    pits, sets = [], []
    for i, v in enumerate([first, *others]):
        sets.append(v.enable(engine))
        pits.append(raw(first.master))
        sets[-1].write(Side.MASTER, i * C + 7, rnd(100 + i, C))   # changes chunks i, i+1
    for s, pit in zip(sets, pits, strict=True):
        assert whole(s, Side.SHADOW) == pit
        assert whole(s, Side.MASTER) == raw(first.master)
    # a shadow write to one does not show in the others nor in the master
    sets[1].write(Side.SHADOW, 0, b"only-1")
    assert whole(sets[0], Side.SHADOW) == pits[0]
    assert whole(sets[2], Side.SHADOW) == pits[2]
    assert whole(sets[1], Side.SHADOW)[:6] == b"only-1"
    # a new point in time for one leaves the others alone
    sets[0].update(Direction.TO_SHADOW)
    sets[0].wait(5)
    assert whole(sets[0], Side.SHADOW) == raw(first.master)
    assert whole(sets[2], Side.SHADOW) == pits[2]
    # restoring the master from one of them keeps the others' points in time
    pit2 = whole(sets[2], Side.SHADOW)
    sets[1].update(Direction.TO_MASTER)
    assert sets[1].wait(5)
    assert raw(first.master)[:6] == b"only-1"
    assert whole(sets[1], Side.MASTER) == whole(sets[1], Side.SHADOW) == raw(first.master)
    assert whole(sets[2], Side.SHADOW) == pit2
    assert whole(sets[0], Side.SHADOW)[:6] != b"only-1"


# ---- independent sets: background copy ---------------------------------------------------------


def test_independent_copy_progress_and_io_during_copy(engine: Engine, tmp_vol: MakeVol) -> None:
    size = 32 << 20
    v = Vols(tmp_vol, Kind.INDEPENDENT, size, chunk=BIG_CHUNK)
    pit = raw(v.master)
    s = v.enable(engine, copy_delay_ms=15, copy_units=16)   # 32 pauses, ~0.5 s
    p = s.progress()
    assert p.active and p.direction == Direction.TO_SHADOW
    assert p.chunks_total == size // BIG_CHUNK
    assert s.status().flags & Flag.COPYING
    # I/O while the copy runs: the shadow already reads as the point in time
    last = size - BIG_CHUNK
    assert s.read(Side.SHADOW, last, 100) == pit[last:last + 100]
    s.write(Side.MASTER, last + 10, b"after the point in time")
    s.write(Side.SHADOW, last - 5, b"shadow write")
    assert s.read(Side.MASTER, last + 10, 23) == b"after the point in time"
    assert s.read(Side.SHADOW, last + 10, 23) == pit[last + 10:last + 33]
    seen = []
    while s.progress().active:
        seen.append(s.progress().chunks_done)
        time.sleep(0.01)
    assert s.wait(10)
    assert seen == sorted(seen), f"chunks_done went backwards: {seen}"
    assert any(0 < d < p.chunks_total for d in seen), f"no progress seen mid-copy: {seen}"
    end = s.progress()
    assert not end.active and end.chunks_done == end.chunks_total and end.result == 0
    assert end.bytes_done == end.bytes_total == size
    assert not s.status().flags & (Flag.COPYING | Flag.INCOMPLETE)
    expect_shadow = bytearray(pit)
    expect_shadow[last - 5:last + 7] = b"shadow write"
    expect_master = bytearray(pit)
    expect_master[last + 10:last + 33] = b"after the point in time"
    assert whole(s, Side.SHADOW) == bytes(expect_shadow) == raw(v.shadow)
    assert whole(s, Side.MASTER) == bytes(expect_master) == raw(v.master)
    assert set(s.bits("shadow")) >= {last // BIG_CHUNK}


def test_set_copy_params_while_copying(engine: Engine, tmp_vol: MakeVol) -> None:
    size = 16 << 20
    v = Vols(tmp_vol, Kind.INDEPENDENT, size, chunk=BIG_CHUNK)
    s = v.enable(engine, copy_delay_ms=500, copy_units=1)   # 16 runs: 8 s at this pace
    st = s.status()
    assert (st.copy_delay_ms, st.copy_units) == (500, 1)
    with pytest.raises(InvalidArgument):
        s.set_copy_params(delay_ms=0, units=0)
    with pytest.raises(InvalidArgument):
        s.set_copy_params(delay_ms=60001, units=1)
    t0 = time.monotonic()
    s.set_copy_params(delay_ms=0, units=256)
    assert s.wait(5)
    assert time.monotonic() - t0 < 2.5, "the new copy parameters did not take effect at once"
    st = s.status()
    assert (st.copy_delay_ms, st.copy_units) == (0, 256)
    assert whole(s, Side.SHADOW) == raw(v.master)


def test_throttle_pauses_after_every_units_chunks(engine: Engine, tmp_vol: MakeVol) -> None:
    """set_copy_params: "pause delay_ms after every units chunks", also for contiguous chunks."""
    v = Vols(tmp_vol, Kind.INDEPENDENT, 32 * C)
    t0 = time.monotonic()
    s = v.enable(engine, copy_delay_ms=20, copy_units=4)   # 32 chunks: 8 pauses of 20 ms
    assert s.wait(10)
    took = time.monotonic() - t0
    assert took >= 7 * 0.020, f"a 32-chunk copy paused {took:.3f}s, not after every 4 chunks"


def test_copy_while_copying_is_refused(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.INDEPENDENT, 16 << 20, chunk=BIG_CHUNK)
    s = v.enable(engine, copy_delay_ms=50, copy_units=1)
    for op in (s.copy, s.update):
        for d in Direction:
            with pytest.raises(CopyInProgress):
                op(d)
    with pytest.raises(CopyInProgress):
        s.disable()
    s.set_copy_params(0, 256)
    assert s.wait(5)
    with pytest.raises(NoCopy):
        s.abort()


def test_abort_leaves_incomplete_until_the_same_direction_completes(
        engine: Engine, tmp_vol: MakeVol) -> None:
    n = 64
    v = Vols(tmp_vol, Kind.INDEPENDENT, n * C)
    s = v.enable(engine)
    assert s.wait(5)
    old_master = raw(v.master)
    written = scatter_shadow_writes(s, range(n))   # 32 separate runs
    s.set_copy_params(delay_ms=20, units=1)
    s.update(Direction.TO_MASTER)
    # abort once the first chunk has physically reached the master (32 runs take >= 0.64 s)
    wait_until(lambda: raw(v.master, C) == written[0])
    s.abort()
    st = s.status()
    assert st.flags & Flag.INCOMPLETE, "an early abort did not leave the set INCOMPLETE"
    assert not st.flags & Flag.COPYING and s.bits("copy") == []
    moved, unmoved = [], []
    for c, data in written.items():
        got = s.read(Side.MASTER, c * C, C)
        assert got in (data, old_master[c * C:(c + 1) * C]), f"chunk {c} is neither image"
        (moved if got == data else unmoved).append(c)
    assert moved and unmoved, "the abort came too early or too late to test anything"
    assert set(unmoved) <= set(s.bits("shadow")), "copy bits were not folded into the bitmap"
    assert raw(v.master) == whole(s, Side.MASTER), "master reads still redirected after abort"
    # the other direction is refused until the restore is finished (docs/decisions.md)
    for op in (s.copy, s.update):
        with pytest.raises(Incomplete):
            op(Direction.TO_SHADOW)
    s.set_copy_params(0, 256)
    s.update(Direction.TO_MASTER)
    assert s.wait(5)
    assert not s.status().flags & Flag.INCOMPLETE
    assert whole(s, Side.MASTER) == whole(s, Side.SHADOW)


# ---- lifetime, bitmap in memory, descriptors ----------------------------------------------------


def test_reopen_resumes_an_interrupted_copy(engine: Engine, tmp_vol: MakeVol) -> None:
    size = 16 << 20
    v = Vols(tmp_vol, Kind.INDEPENDENT, size, chunk=BIG_CHUNK)
    s = v.enable(engine, copy_delay_ms=30, copy_units=1)
    time.sleep(0.1)
    assert s.progress().active
    s.close()
    assert raw(v.shadow) != raw(v.master), "the copy finished before the close"
    s = v.open(engine)
    st = s.status()
    assert not st.flags & Flag.RECOVERED
    assert s.progress().active or st.copy_chunks == 0
    s.set_copy_params(0, 256)
    assert s.wait(10)
    assert not s.status().flags & (Flag.INCOMPLETE | Flag.COPYING)
    assert whole(s, Side.SHADOW) == raw(v.master) == raw(v.shadow)


def test_close_and_reopen_keeps_the_state(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.DEPENDENT, 5 * C)
    pit = raw(v.master)
    s = v.enable(engine, copy_delay_ms=7, copy_units=3)
    s.write(Side.MASTER, C + 1, b"m" * C)
    s.write(Side.SHADOW, 4 * C, b"s")
    st0, bits0, shadow0 = s.status(), s.bits("shadow"), whole(s, Side.SHADOW)
    s.close()
    with pytest.raises(PtcopyError):
        s.read(Side.SHADOW, 0, 1)
    s = v.open(engine)
    st1 = s.status()
    assert (st1.uuid, st1.kind, st1.chunk_size) == (st0.uuid, st0.kind, st0.chunk_size)
    assert (st1.copy_delay_ms, st1.copy_units) == (7, 3)
    assert s.bits("shadow") == bits0 == [1, 2, 4]
    assert whole(s, Side.SHADOW) == shadow0
    assert shadow0[:4 * C] == pit[:4 * C]
    # and the COW still works after the reopen
    s.write(Side.MASTER, 0, b"after reopen")
    assert s.read(Side.SHADOW, 0, C) == pit[:C]
    s.disable()
    with pytest.raises(BadHeader):
        v.open(engine)


@pytest.mark.parametrize("kind", [Kind.INDEPENDENT, Kind.DEPENDENT])
def test_bitmap_in_memory(engine: Engine, tmp_vol: MakeVol, kind: Kind) -> None:
    v = Vols(tmp_vol, kind, 6 * C, bitmap=False)
    pit = raw(v.master)
    s = v.enable(engine)
    assert s.wait(5)
    assert s.status().bitmap_size == 0
    s.write(Side.MASTER, 2 * C - 3, b"in memory")
    assert whole(s, Side.SHADOW) == pit
    assert s.bits("shadow") == [1, 2]
    s.update(Direction.TO_SHADOW)
    assert s.wait(5)
    assert whole(s, Side.SHADOW) == raw(v.master)


def test_file_descriptors_instead_of_paths(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.INDEPENDENT, 4 * C)
    assert v.bitmap is not None
    fds = [os.open(p, os.O_RDWR) for p in (v.master, v.shadow, v.bitmap)]
    try:
        s = engine.enable(fds[0], fds[1], fds[2], Kind.INDEPENDENT, chunk_size=C)
    finally:
        for fd in fds:
            os.close(fd)   # the engine keeps its own duplicates
    assert s.wait(5)
    s.write(Side.MASTER, 10, b"through a descriptor")
    assert raw(v.master)[10:30] == b"through a descriptor"
    assert raw(v.shadow) == raw(v.master)[:10] + rnd(1, 4 * C)[10:]
    s.close()
    fds = [os.open(p, os.O_RDWR) for p in (v.master, v.shadow, v.bitmap)]
    try:
        s = engine.open(fds[0], fds[1], fds[2])
    finally:
        for fd in fds:
            os.close(fd)
    assert s.bits("shadow") == [0]
    s.update(Direction.TO_SHADOW)
    assert s.wait(5)
    assert raw(v.shadow) == raw(v.master)
    with pytest.raises(InvalidArgument):
        engine.enable(-1, v.shadow, None, Kind.DEPENDENT)


def test_update_moves_only_marked_chunks(engine: Engine, tmp_vol: MakeVol) -> None:
    n = 16
    v = Vols(tmp_vol, Kind.INDEPENDENT, n * C)
    s = v.enable(engine)
    assert s.wait(5)
    assert s.progress().chunks_total == n   # the initial full copy
    s.write(Side.MASTER, 3 * C - 1, b"xy")   # chunks 2 and 3
    s.write(Side.SHADOW, 9 * C, b"z")        # chunk 9
    assert s.bits("shadow") == [2, 3, 9]
    assert s.status().diff_chunks == 3
    s.update(Direction.TO_SHADOW)
    assert s.wait(5)
    p = s.progress()
    assert (p.chunks_total, p.chunks_done) == (3, 3)
    assert s.bits("shadow") == [] and whole(s, Side.SHADOW) == raw(v.master)
    s.copy(Direction.TO_SHADOW)
    assert s.wait(5)
    assert s.progress().chunks_total == n


def test_reset_clears_out_of_space(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.DEPENDENT, 4 * C, shadow_size=C)
    s = v.enable(engine)
    s.write(Side.MASTER, 0, b"w" * (2 * C))
    assert s.status().flags & Flag.OUT_OF_SPACE
    s.reset()
    assert s.wait(5)
    st = s.status()
    assert not st.flags & Flag.OUT_OF_SPACE and st.lost_chunks == 0
    assert st.shadow_slots_used == 0 and s.bits("shadow") == []
    assert whole(s, Side.SHADOW) == raw(v.master)


def test_overflow_error_takes_the_shadow_offline(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.DEPENDENT, 4 * C, shadow_size=C)
    ov = overflow_vol(tmp_vol, engine, 4)
    s = v.enable(engine, overflow=ov)
    s.write(Side.MASTER, 0, b"on the shadow volume")
    s.inject_error(VolumeRole.OVERFLOW)
    s.write(Side.MASTER, 2 * C, b"this one needs the overflow")   # succeeds all the same
    assert s.read(Side.MASTER, 2 * C, 27) == b"this one needs the overflow"
    flags = s.status().flags
    assert flags & Flag.OVERFLOW_OFFLINE and flags & Flag.SHADOW_OFFLINE
    assert not flags & Flag.MASTER_OFFLINE
    with pytest.raises(Offline):
        s.read(Side.SHADOW, 0, 1)
    heal(s, VolumeRole.OVERFLOW)
    assert whole(s, Side.SHADOW) == raw(v.master)


def test_shadow_error_during_a_restore_takes_the_master_offline(
        engine: Engine, tmp_vol: MakeVol) -> None:
    n = 64
    v = Vols(tmp_vol, Kind.INDEPENDENT, n * C)
    s = v.enable(engine)
    assert s.wait(5)
    scatter_shadow_writes(s, range(n))
    shadow = whole(s, Side.SHADOW)
    s.set_copy_params(delay_ms=20, units=1)
    s.update(Direction.TO_MASTER)
    time.sleep(0.03)
    s.inject_error(VolumeRole.SHADOW)
    wait_until(lambda: not s.progress().active)
    flags = s.status().flags
    assert flags & Flag.SHADOW_OFFLINE
    assert flags & Flag.MASTER_OFFLINE, "a half-restored master stayed online"
    with pytest.raises(Offline):
        s.read(Side.MASTER, 0, 1)
    with pytest.raises(PtcopyError):
        s.wait(1)   # the copy failed
    # back online: reset finishes the interrupted restore
    s.inject_error(VolumeRole.SHADOW, False)
    s.set_copy_params(0, 256)
    s.reset()
    assert s.wait(5)
    flags = s.status().flags
    assert not flags & (OFFLINE | Flag.INCOMPLETE)
    assert whole(s, Side.MASTER) == shadow == raw(v.master)
    assert whole(s, Side.SHADOW) == shadow


def test_shadow_logical_size_is_the_masters(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.INDEPENDENT, 3 * C + 100, shadow_size=8 * C)
    s = v.enable(engine)
    assert s.wait(5)
    assert s.status().master_size == 3 * C + 100
    assert s.read(Side.SHADOW, 3 * C, 100) == raw(v.master)[3 * C:]
    for side in Side:
        with pytest.raises(InvalidArgument):
            s.read(side, 3 * C + 50, 51)
        with pytest.raises(InvalidArgument):
            s.write(side, 3 * C + 100, b"x")
        assert s.read(side, 3 * C + 100, 0) == b""
    s.write(Side.MASTER, 3 * C + 99, b"E")   # the partial last chunk
    s.update(Direction.TO_SHADOW)
    assert s.wait(5)
    assert s.read(Side.SHADOW, 3 * C + 99, 1) == b"E"
    assert raw(v.shadow)[3 * C + 100:] == bytes(5 * C - 100), "written past the logical end"


@pytest.mark.parametrize("failing", [VolumeRole.OVERFLOW, VolumeRole.SHADOW],
                         ids=["overflow", "shadow"])
def test_failed_cow_leaks_no_compact_chunk(engine: Engine, tmp_vol: MakeVol,
                                          failing: VolumeRole) -> None:
    """A shadow write whose copy-on-write fails must give back the place it took."""
    v = Vols(tmp_vol, Kind.DEPENDENT, 4 * C, shadow_size=2 * C)
    ov = overflow_vol(tmp_vol, engine, 4)
    s = v.enable(engine, overflow=ov)
    if failing == VolumeRole.OVERFLOW:
        s.write(Side.MASTER, 0, b"m" * (2 * C))   # the shadow volume is full: next goes to ov
    s.inject_error(failing)
    with pytest.raises((Offline, VolumeIOError)):
        s.write(Side.SHADOW, 2 * C + 5, b"cow fails")
    assert s.status().flags & Flag.SHADOW_OFFLINE
    s.inject_error(failing, False)
    s.reset()   # a new point in time: every compact chunk is free again
    assert s.wait(5)
    st = s.status()
    assert not st.flags & OFFLINE and s.bits("shadow") == []
    assert (st.shadow_slots_used, st.overflow_used) == (0, 0), "a compact chunk leaked"
    assert ov.status().chunks_used == 0
    s.detach_overflow()   # nothing of the set lives there
