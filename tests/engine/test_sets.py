"""Scenario tests of set semantics (docs/engine-semantics.md), one behaviour per test."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ptcopy.engine import (
    BadHeader,
    CopyInProgress,
    Dependency,
    Direction,
    Engine,
    Flag,
    Incomplete,
    InUse,
    InvalidArgument,
    Kind,
    NoCopy,
    NotLocked,
    Offline,
    OutOfSpace,
    Overflow,
    PtcopyError,
    Set,
    Side,
    VolumeIOError,
    VolumeRole,
    bitmap_size,
)

C = 4096                 # small chunks for the data tests
BIG_CHUNK = 64 * 1024    # for copies that must take a while: 16 chunks per 1 MiB run
OFFLINE = Flag.MASTER_OFFLINE | Flag.SHADOW_OFFLINE | Flag.BITMAP_OFFLINE | Flag.OVERFLOW_OFFLINE

MakeVol = Callable[..., Path]


def rnd(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def put(path: Path, data: bytes, offset: int = 0) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def raw(path: Path, n: int | None = None) -> bytes:
    with path.open("rb") as f:
        return f.read() if n is None else f.read(n)


class Vols:
    """The volumes of one set, so a test can reopen it."""

    def __init__(self, tmp_vol: MakeVol, kind: Kind, master_size: int,
                 shadow_size: int | None = None, chunk: int = C, bitmap: bool = True,
                 master: Path | None = None, data_seed: int | None = 1) -> None:
        self.kind = kind
        self.chunk = chunk
        self.master = master if master is not None else tmp_vol(master_size)
        if master is None and data_seed is not None:
            put(self.master, rnd(data_seed, master_size))
        self.master_size = master_size
        self.shadow_size = master_size if shadow_size is None else shadow_size
        self.shadow = tmp_vol(self.shadow_size)
        self.bitmap: Path | None = None
        if bitmap:
            self.bitmap = tmp_vol(bitmap_size(master_size, self.shadow_size, chunk, kind))

    def enable(self, engine: Engine, **kw: object) -> Set:
        return engine.enable(self.master, self.shadow, self.bitmap, self.kind,
                             chunk_size=self.chunk, **kw)  # type: ignore[arg-type]

    def open(self, engine: Engine, overflow: Overflow | None = None) -> Set:
        assert self.bitmap is not None
        return engine.open(self.master, self.shadow, self.bitmap, overflow=overflow)


def whole(s: Set, side: Side) -> bytes:
    return s.read(side, 0, s.status().master_size)


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def overflow_vol(tmp_vol: MakeVol, engine: Engine, nchunks: int, chunk: int = C) -> Overflow:
    ov = engine.init_overflow(tmp_vol(2 * 4096 + nchunks * chunk), chunk)
    assert ov.status().chunks_total == nchunks
    return ov


def scatter_shadow_writes(s: Set, chunks: range, chunk: int = C, seed: int = 7) -> dict[int, bytes]:
    """One write in every other chunk: many separate runs for the copier."""
    out = {}
    for i, c in enumerate(chunks):
        if i % 2 == 0:
            out[c] = rnd(seed + c, chunk)
            s.write(Side.SHADOW, c * chunk, out[c])
    return out


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
    # restoring a master that has several shadows is refused, for copy and update
    for op in (sets[1].copy, sets[1].update):
        with pytest.raises(Dependency):
            op(Direction.TO_MASTER)
    assert not sets[1].status().flags & Flag.COPYING
    # with one shadow left it is allowed
    sets[0].disable()
    sets[2].disable()
    sets[1].update(Direction.TO_MASTER)
    assert sets[1].wait(5)
    assert raw(first.master)[:6] == b"only-1"
    assert whole(sets[1], Side.MASTER) == whole(sets[1], Side.SHADOW)


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


# ---- compact shadows and overflow ---------------------------------------------------------------


def test_compact_set_spills_into_overflow(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.DEPENDENT, 8 * C, shadow_size=2 * C)
    pit = raw(v.master)
    ov = overflow_vol(tmp_vol, engine, 4)
    s = v.enable(engine, overflow=ov)
    st = s.status()
    assert st.flags & Flag.COMPACT and not st.flags & Flag.SPILLED
    assert st.shadow_slots == 2 and st.overflow_uuid == ov.status().uuid
    assert ov.status().sets == (st.uuid,)
    s.write(Side.MASTER, 0, b"x" * (2 * C))         # fills the shadow volume
    st = s.status()
    assert (st.shadow_slots_used, st.overflow_used) == (2, 0)
    assert not st.flags & Flag.SPILLED
    s.write(Side.MASTER, 2 * C + 1, b"y" * (2 * C))  # chunks 2, 3, 4 go to the overflow
    st = s.status()
    assert (st.shadow_slots_used, st.overflow_used) == (2, 3)
    assert st.flags & Flag.SPILLED and not st.flags & Flag.OUT_OF_SPACE
    assert ov.status().chunks_used == 3
    assert whole(s, Side.SHADOW) == pit
    # a shadow write into a spilled chunk lands there
    s.write(Side.SHADOW, 3 * C, b"z" * 5)
    assert s.read(Side.SHADOW, 3 * C, 6) == b"z" * 5 + pit[3 * C + 5:3 * C + 6]
    # the state survives close + reopen
    bits = s.bits("shadow")
    s.close()
    s = v.open(engine, overflow=ov)
    st = s.status()
    assert (st.shadow_slots_used, st.overflow_used) == (2, 3) and st.flags & Flag.SPILLED
    assert s.bits("shadow") == bits
    assert s.read(Side.SHADOW, 3 * C, 6) == b"z" * 5 + pit[3 * C + 5:3 * C + 6]
    # a new point in time gives every chunk back
    s.update(Direction.TO_SHADOW)
    s.wait(5)
    st = s.status()
    assert (st.shadow_slots_used, st.overflow_used) == (0, 0)
    assert not st.flags & Flag.SPILLED
    assert ov.status().chunks_used == 0


def test_overflow_shared_by_two_compact_sets(engine: Engine, tmp_vol: MakeVol) -> None:
    ov = overflow_vol(tmp_vol, engine, 6)
    a = Vols(tmp_vol, Kind.DEPENDENT, 6 * C, shadow_size=C, data_seed=1)
    b = Vols(tmp_vol, Kind.DEPENDENT, 6 * C, shadow_size=C, data_seed=2)
    pa, pb = raw(a.master), raw(b.master)
    sa, sb = a.enable(engine, overflow=ov), b.enable(engine, overflow=ov)
    assert set(ov.status().sets) == {sa.status().uuid, sb.status().uuid}
    sa.write(Side.MASTER, 0, b"a" * (3 * C))   # 1 on the shadow, 2 on the overflow
    sb.write(Side.MASTER, 0, b"b" * (4 * C))   # 1 on the shadow, 3 on the overflow
    assert sa.status().overflow_used == 2 and sb.status().overflow_used == 3
    assert ov.status().chunks_used == 5
    assert whole(sa, Side.SHADOW) == pa and whole(sb, Side.SHADOW) == pb
    # one chunk left on the overflow: whoever asks first gets it
    sa.write(Side.MASTER, 4 * C, b"a")
    assert ov.status().chunks_used == 6
    sb.write(Side.MASTER, 4 * C, b"b")
    assert sb.status().flags & Flag.OUT_OF_SPACE and sb.status().lost_chunks == 1
    assert not sa.status().flags & Flag.OUT_OF_SPACE
    # freeing a's chunks makes room for b
    sa.update(Direction.TO_SHADOW)
    sa.wait(5)
    assert ov.status().chunks_used == 3
    sb.write(Side.MASTER, 5 * C, b"b")
    assert sb.status().overflow_used == 4
    assert whole(sa, Side.SHADOW) == raw(a.master)
    assert sb.read(Side.SHADOW, 5 * C, C) == pb[5 * C:6 * C]


def test_out_of_space(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.DEPENDENT, 6 * C, shadow_size=2 * C)
    pit = raw(v.master)
    ov = overflow_vol(tmp_vol, engine, 1)
    s = v.enable(engine, overflow=ov)
    s.write(Side.MASTER, 0, b"m" * (3 * C))    # shadow (2) and overflow (1) are now full
    assert not s.status().flags & Flag.OUT_OF_SPACE
    s.write(Side.MASTER, 4 * C + 3, b"lost")   # still succeeds; chunk 4's point in time is lost
    assert s.read(Side.MASTER, 4 * C + 3, 4) == b"lost" == raw(v.master)[4 * C + 3:4 * C + 7]
    st = s.status()
    assert st.flags & Flag.OUT_OF_SPACE and st.lost_chunks == 1
    with pytest.raises(OutOfSpace):
        s.read(Side.SHADOW, 4 * C, 1)
    with pytest.raises(OutOfSpace):
        s.read(Side.SHADOW, 3 * C, 2 * C)      # a range that touches it
    for c in (0, 1, 2, 3, 5):                  # the rest of the point in time is intact
        assert s.read(Side.SHADOW, c * C, C) == pit[c * C:(c + 1) * C]
    # a shadow write that needs a new chunk fails, and changes nothing
    with pytest.raises(OutOfSpace):
        s.write(Side.SHADOW, 5 * C, b"new chunk")
    assert s.read(Side.SHADOW, 5 * C, C) == pit[5 * C:6 * C]
    # a shadow that lost chunks cannot be restored to the master
    for op in (s.copy, s.update):
        with pytest.raises(OutOfSpace):
            op(Direction.TO_MASTER)
    # an update to the shadow clears the condition
    s.update(Direction.TO_SHADOW)
    assert s.wait(5)
    st = s.status()
    assert not st.flags & Flag.OUT_OF_SPACE and st.lost_chunks == 0
    assert whole(s, Side.SHADOW) == raw(v.master)
    assert ov.status().chunks_used == 0


def test_shadow_write_over_a_lost_chunk_changes_nothing(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.DEPENDENT, 4 * C, shadow_size=C)
    pit = raw(v.master)
    s = v.enable(engine)
    s.write(Side.MASTER, 0, b"a" * C)   # chunk 0 takes the only slot
    s.write(Side.MASTER, C, b"b" * C)   # chunk 1 is lost
    assert s.status().lost_chunks == 1
    with pytest.raises(OutOfSpace):
        s.write(Side.SHADOW, 0, b"z" * (2 * C))
    assert s.read(Side.SHADOW, 0, C) == pit[:C], "a refused shadow write changed chunk 0"


def test_detach_overflow_only_when_no_chunk_lives_there(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.DEPENDENT, 6 * C, shadow_size=C)
    ov = overflow_vol(tmp_vol, engine, 4)
    s = v.enable(engine, overflow=ov)
    uuid = s.status().uuid
    s.write(Side.MASTER, 0, b"q" * (3 * C))
    assert s.status().overflow_used == 2
    with pytest.raises(Dependency):
        s.detach_overflow()
    assert s.status().overflow_uuid == ov.status().uuid and s.overflow is ov
    assert uuid in ov.status().sets
    with pytest.raises(Dependency):
        ov.delete()
    s.update(Direction.TO_SHADOW)
    assert s.wait(5)
    s.detach_overflow()
    assert s.status().overflow_uuid is None and s.overflow is None
    assert uuid not in ov.status().sets and ov.status().chunks_used == 0
    # without an overflow, the shadow volume alone: the second chunk is lost
    s.write(Side.MASTER, 0, b"r" * (2 * C))
    assert s.status().lost_chunks == 1


def test_overflow_delete_refused_while_attached(engine: Engine, tmp_vol: MakeVol) -> None:
    ov = overflow_vol(tmp_vol, engine, 2)
    v = Vols(tmp_vol, Kind.DEPENDENT, 4 * C, shadow_size=C)
    s = v.enable(engine)
    s.attach_overflow(ov)
    assert s.status().overflow_uuid == ov.status().uuid
    with pytest.raises(Dependency):
        ov.delete()
    assert not ov.closed and ov.status().sets == (s.status().uuid,)
    s.detach_overflow()
    ov.delete()
    assert ov.closed


# ---- groups and locks ---------------------------------------------------------------------------


def test_group_copy_is_one_point_in_time(engine: Engine, tmp_vol: MakeVol) -> None:
    vols = [Vols(tmp_vol, Kind.INDEPENDENT, 4 * C, data_seed=None) for _ in range(3)]
    sets = [v.enable(engine) for v in vols]
    for s in sets:
        assert s.wait(5)
    stop = threading.Event()
    counter = [0]

    def writer() -> None:
        # every round writes k to the three masters in order: any one instant shows
        # (k, k, k), (k, k-1, k-1) or (k, k, k-1)
        while not stop.is_set():
            counter[0] += 1
            for s in sets:
                s.write(Side.MASTER, C + 17, counter[0].to_bytes(8, "little"))

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(20):
            time.sleep(0.003)
            frozen = engine.group_copy(sets, Direction.TO_SHADOW, full=False)
            assert frozen >= 0
            for s in sets:
                assert s.wait(5)
            got = [int.from_bytes(s.read(Side.SHADOW, C + 17, 8), "little") for s in sets]
            assert got[0] >= got[1] >= got[2] >= got[0] - 1, f"not one point in time: {got}"
    finally:
        stop.set()
        t.join()
    assert counter[0] > 0


def _snapshot(s: Set) -> tuple[object, ...]:
    st = s.status()
    return (s.bits("shadow"), s.bits("copy"), st.flags, st.diff_chunks, st.copy_chunks,
            whole(s, Side.SHADOW), whole(s, Side.MASTER), s.progress().active)


@pytest.mark.parametrize("direction", list(Direction))
def test_group_copy_is_all_or_nothing(engine: Engine, tmp_vol: MakeVol,
                                      direction: Direction) -> None:
    vols = [Vols(tmp_vol, kind, 4 * C, data_seed=i)
            for i, kind in enumerate([Kind.INDEPENDENT, Kind.DEPENDENT, Kind.INDEPENDENT])]
    sets = [v.enable(engine) for v in vols]
    for i, s in enumerate(sets):
        assert s.wait(5)
        s.write(Side.MASTER, i * C + 1, b"master")
        s.write(Side.SHADOW, 3 * C - 2, b"shadow")
    sets[1].lock(42)
    before = [_snapshot(s) for s in sets]
    with pytest.raises(InUse):
        engine.group_copy(sets, direction, owner=7)
    assert [_snapshot(s) for s in sets] == before, "a refused group copy changed a member"
    with pytest.raises(InUse):
        engine.group_copy(sets, direction, full=True)   # owner 0 is nobody
    assert [_snapshot(s) for s in sets] == before
    with pytest.raises(InvalidArgument):
        engine.group_copy([], direction)
    # the lock's owner may
    frozen = engine.group_copy(sets, direction, owner=42)
    assert frozen >= 0
    for s in sets:
        assert s.wait(5)
        assert whole(s, Side.MASTER) == whole(s, Side.SHADOW)


GROUP_TWICE = """
import os, sys
from ptcopy.engine import Direction, Engine, InvalidArgument, Kind
m, s = sys.argv[1:3]
with Engine() as e:
    st = e.enable(m, s, None, Kind.DEPENDENT, chunk_size=4096)
    try:
        e.group_copy([st, st], Direction.TO_SHADOW)
    except InvalidArgument as exc:
        print("InvalidArgument:", exc)
"""


def test_group_copy_naming_a_set_twice(tmp_vol: MakeVol) -> None:
    """Refused with InvalidArgument (run in a child: a crash must not take pytest down)."""
    proc = subprocess.run([sys.executable, "-c", GROUP_TWICE, str(tmp_vol(4 * C)),
                           str(tmp_vol(4 * C))], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"the process died ({proc.returncode}): {proc.stderr[-2000:]}"
    assert "InvalidArgument:" in proc.stdout and "twice" in proc.stdout


def test_pid_lock(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.INDEPENDENT, 4 * C)
    s = v.enable(engine)
    assert s.wait(5)
    assert s.status().lock_owner == 0
    with pytest.raises(InvalidArgument):
        s.lock(0)
    with pytest.raises(NotLocked):
        s.unlock(1)
    s.lock(1)
    s.lock(1)   # the owner may take it again
    assert s.status().lock_owner == 1
    with pytest.raises(InUse):
        s.lock(2)
    for owner in (0, 2):
        with pytest.raises(InUse):
            s.update(Direction.TO_SHADOW, owner=owner)
        with pytest.raises(InUse):
            s.copy(Direction.TO_MASTER, owner=owner)
    with pytest.raises(InUse):
        s.unlock(2)
    s.write(Side.MASTER, 0, b"locks do not stop I/O")
    s.update(Direction.TO_SHADOW, owner=1)
    assert s.wait(5)
    assert s.read(Side.SHADOW, 0, 21) == b"locks do not stop I/O"
    s.unlock(1)
    assert s.status().lock_owner == 0
    s.lock(2)
    s.unlock()   # owner 0 releases anyone's lock
    s.update(Direction.TO_SHADOW, owner=3)
    assert s.wait(5)


# ---- offline volumes ----------------------------------------------------------------------------


def test_shadow_error_during_dependent_master_write(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.DEPENDENT, 4 * C)
    s = v.enable(engine)
    s.write(Side.MASTER, 0, b"before")
    s.inject_error(VolumeRole.SHADOW)
    s.write(Side.MASTER, 2 * C, b"the shadow fails this COW")   # must still succeed
    assert s.read(Side.MASTER, 2 * C, 25) == b"the shadow fails this COW"
    assert raw(v.master)[2 * C:2 * C + 25] == b"the shadow fails this COW"
    flags = s.status().flags
    assert flags & Flag.SHADOW_OFFLINE and not flags & Flag.MASTER_OFFLINE
    with pytest.raises(Offline):
        s.read(Side.SHADOW, 0, 1)
    with pytest.raises(Offline):
        s.write(Side.SHADOW, 0, b"x")
    with pytest.raises(Offline):
        s.update(Direction.TO_SHADOW)
    s.write(Side.MASTER, 3 * C, b"still fine")   # the master goes on
    # back online: reset starts a new point in time
    with pytest.raises(Offline):
        s.reset()   # the volume still fails
    s.inject_error(VolumeRole.SHADOW, False)
    s.reset()
    assert s.wait(5)
    assert not s.status().flags & OFFLINE
    assert whole(s, Side.SHADOW) == whole(s, Side.MASTER) == raw(v.master)
    assert s.bits("shadow") == []


def test_shadow_error_during_independent_copy(engine: Engine, tmp_vol: MakeVol) -> None:
    size = 16 << 20
    v = Vols(tmp_vol, Kind.INDEPENDENT, size, chunk=BIG_CHUNK)
    s = v.enable(engine, copy_delay_ms=40, copy_units=1)   # the copy takes ~0.6 s
    s.inject_error(VolumeRole.SHADOW)
    last = size - BIG_CHUNK
    s.write(Side.MASTER, last + 1, b"copy-on-demand cannot reach the shadow")
    assert s.read(Side.MASTER, last + 1, 38) == b"copy-on-demand cannot reach the shadow"
    wait_until(lambda: not s.progress().active)
    assert s.status().flags & Flag.SHADOW_OFFLINE
    with contextlib.suppress(PtcopyError):
        s.wait(5)   # the copy failed; how is not the point here
    with pytest.raises(Offline):
        s.read(Side.SHADOW, 0, 1)
    s.inject_error(VolumeRole.SHADOW, False)
    s.set_copy_params(0, 256)
    s.reset()
    assert s.wait(10)
    assert not s.status().flags & (OFFLINE | Flag.INCOMPLETE)
    assert whole(s, Side.SHADOW) == raw(v.master) == raw(v.shadow)


@pytest.mark.parametrize("kind", list(Kind))
def test_bitmap_error_takes_the_shadow_offline(engine: Engine, tmp_vol: MakeVol,
                                              kind: Kind) -> None:
    v = Vols(tmp_vol, kind, 4 * C)
    s = v.enable(engine)
    assert s.wait(5)
    s.inject_error(VolumeRole.BITMAP)
    s.write(Side.MASTER, C, b"first write needs a bit")   # succeeds all the same
    assert s.read(Side.MASTER, C, 23) == b"first write needs a bit"
    flags = s.status().flags
    assert flags & Flag.BITMAP_OFFLINE and flags & Flag.SHADOW_OFFLINE
    assert not flags & Flag.MASTER_OFFLINE
    with pytest.raises(Offline):
        s.read(Side.SHADOW, 0, 1)
    s.inject_error(VolumeRole.BITMAP, False)
    s.reset()
    assert s.wait(5)
    assert not s.status().flags & OFFLINE
    assert whole(s, Side.SHADOW) == raw(v.master)


@pytest.mark.parametrize("kind", list(Kind))
def test_master_error_fails_master_write(engine: Engine, tmp_vol: MakeVol, kind: Kind) -> None:
    v = Vols(tmp_vol, kind, 4 * C)
    pit = raw(v.master)
    s = v.enable(engine)
    assert s.wait(5)
    s.inject_error(VolumeRole.MASTER)
    with pytest.raises((VolumeIOError, Offline)):
        s.write(Side.MASTER, 0, b"no")
    flags = s.status().flags
    assert flags & Flag.MASTER_OFFLINE
    if kind == Kind.DEPENDENT:   # a dependent shadow reads through the master
        assert flags & Flag.SHADOW_OFFLINE
    with pytest.raises(Offline):
        s.read(Side.MASTER, 0, 1)
    s.inject_error(VolumeRole.MASTER, False)
    s.reset()
    assert s.wait(5)
    assert not s.status().flags & OFFLINE
    assert whole(s, Side.MASTER) == raw(v.master)
    assert whole(s, Side.SHADOW) == raw(v.master)
    if kind == Kind.INDEPENDENT:
        assert raw(v.master) == pit


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


@pytest.mark.parametrize("kind", list(Kind))
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
    s.inject_error(VolumeRole.OVERFLOW, False)
    s.reset()
    assert s.wait(5)
    assert not s.status().flags & OFFLINE
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
