"""The copier with many runs in flight (a pool of workers, direct I/O where the volumes allow it):
what a deep queue could break. Aborts leave a consistent incomplete target, writers racing a copy
never lose data, the throttle still counts chunks between pauses, and volumes that refuse or
cannot align direct I/O are still copied exactly."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptcopy.engine import Direction, Engine, Flag, Kind, NoCopy, Set, Side
from tests.engine.sets_common import C, MakeVol, Vols, put, raw, rnd, wait_until, whole
from tests.helpers.udev import Loops

DEEP = 64 << 20   # 16384 chunks of 4 KiB: long enough to act on a copy while it runs


def chunk_of(data: bytes, c: int) -> bytes:
    return data[c * C:(c + 1) * C]


def scatter_master_writes(s: Set, nchunks: int, seed: int) -> dict[int, bytes]:
    """A write in every other chunk: as many separate runs as the copier can get."""
    out = {c: rnd(seed + c, C) for c in range(0, nchunks, 2)}
    for c, data in out.items():
        s.write(Side.MASTER, c * C, data)
    return out


def test_abort_with_many_runs_in_flight_leaves_a_consistent_incomplete_target(
        engine: Engine, tmp_vol: MakeVol) -> None:
    n = DEEP // C
    v = Vols(tmp_vol, Kind.INDEPENDENT, DEEP, bitmap=False)   # thousands of writes, no syncs
    s = v.enable(engine)
    assert s.wait(60)
    mid_copy = 0
    for attempt in range(4):
        written = scatter_master_writes(s, n, seed=1000 * attempt)
        pit = raw(v.master)
        before = raw(v.shadow)
        s.update(Direction.TO_SHADOW)
        # once a batch is retired the next ones are under way: abort among the runs in flight
        wait_until(lambda: s.progress().chunks_done > 0 or not s.progress().active, 30)
        try:
            s.abort()
        except NoCopy:
            continue   # it finished first: nothing to check about an abort
        st = s.status()
        assert not st.flags & Flag.COPYING and s.bits("copy") == []
        differ = set(s.bits("shadow"))
        shadow = raw(v.shadow)
        moved = [c for c in written if chunk_of(shadow, c) == chunk_of(pit, c)]
        for c in range(n):
            got = chunk_of(shadow, c)
            # every chunk is either image, and one the bitmap calls equal is the point in time
            assert got in (chunk_of(pit, c), chunk_of(before, c)), f"chunk {c} is neither image"
            if c not in differ:
                assert got == chunk_of(pit, c), f"chunk {c} is marked equal but differs"
        assert whole(s, Side.SHADOW) == shadow, "shadow reads still redirected after the abort"
        if st.flags & Flag.INCOMPLETE and 0 < len(moved) < len(written):
            mid_copy += 1
        s.update(Direction.TO_SHADOW)   # the same direction finishes what the abort left
        assert s.wait(60)
        assert not s.status().flags & Flag.INCOMPLETE
        assert raw(v.shadow) == raw(v.master) == pit
        if mid_copy:
            break
    assert mid_copy, "no abort landed in the middle of a copy: nothing was tested"


class Writer(threading.Thread):
    """Writes random unaligned ranges through one side of a set while a copy runs, into a
    model of that side (one writer per side, so the model's order is the volume's)."""

    def __init__(self, s: Set, side: Side, model: bytearray, seed: int) -> None:
        super().__init__(daemon=True)
        self.s, self.side, self.model = s, side, model
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.during = 0   # writes that began and ended while the copy was running
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                length = self.rng.randrange(1, 3 * C)
                off = self.rng.randrange(0, len(self.model) - length)
                data = self.rng.randbytes(length)
                active = self.s.progress().active
                self.s.write(self.side, off, data)
                self.model[off:off + length] = data
                if active and self.s.progress().active:
                    self.during += 1
        except BaseException as e:   # handed to the test in join()
            self.error = e


def write_during(s: Set, models: dict[Side, bytearray]) -> list[Writer]:
    """Writes through both sides until the copy, started by the caller, ends."""
    writers = [Writer(s, side, m, seed=i) for i, (side, m) in enumerate(models.items())]
    for w in writers:
        w.start()
    assert s.wait(120)
    for w in writers:
        w.stop.set()
        w.join()
        assert w.error is None, w.error
    return writers


@pytest.mark.parametrize("direction", [Direction.TO_SHADOW, Direction.TO_MASTER])
def test_writers_racing_a_deep_copy_lose_nothing(engine: Engine, tmp_vol: MakeVol,
                                                 direction: Direction) -> None:
    v = Vols(tmp_vol, Kind.INDEPENDENT, DEEP, bitmap=False)   # many writes, no bitmap syncs
    put(v.shadow, rnd(2, DEEP))
    s = v.enable(engine)
    assert s.wait(60)
    if direction == Direction.TO_MASTER:   # something for the restore to bring back
        put(v.shadow, rnd(3, DEEP))
    src = v.master if direction == Direction.TO_SHADOW else v.shadow
    pit = raw(src)
    models = {Side.MASTER: bytearray(pit), Side.SHADOW: bytearray(pit)}
    s.copy(direction)
    writers = write_during(s, models)
    assert sum(w.during for w in writers) > 0, "the copy ended before any write raced it"
    assert raw(v.master) == bytes(models[Side.MASTER]), "a master write was lost"
    assert raw(v.shadow) == bytes(models[Side.SHADOW]), "a shadow write was lost"
    assert whole(s, Side.MASTER) == bytes(models[Side.MASTER])
    assert whole(s, Side.SHADOW) == bytes(models[Side.SHADOW])
    assert not s.status().flags & (Flag.COPYING | Flag.INCOMPLETE)


def test_writers_racing_a_scattered_update_lose_nothing(engine: Engine, tmp_vol: MakeVol) -> None:
    n = DEEP // C
    v = Vols(tmp_vol, Kind.INDEPENDENT, DEEP, bitmap=False)
    s = v.enable(engine)
    assert s.wait(60)
    scatter_master_writes(s, n, seed=5)   # thousands of one-chunk runs
    pit = raw(v.master)
    # both sides end as the point in time with their own writes over it
    models = {Side.MASTER: bytearray(pit), Side.SHADOW: bytearray(pit)}
    s.update(Direction.TO_SHADOW)
    writers = write_during(s, models)
    assert sum(w.during for w in writers) > 0, "the update ended before any write raced it"
    assert raw(v.master) == bytes(models[Side.MASTER])
    assert raw(v.shadow) == bytes(models[Side.SHADOW])


def test_throttle_counts_chunks_between_pauses(engine: Engine, tmp_vol: MakeVol) -> None:
    """However many runs the copier could keep in flight, no more than `units` chunks move
    between two pauses: the shadow shows exactly them, and a suspension (close) or an abort
    ends the pause at once."""
    units, n = 5, 64
    v = Vols(tmp_vol, Kind.INDEPENDENT, n * C)
    pit = raw(v.master)
    empty = raw(v.shadow)
    s = v.enable(engine, copy_delay_ms=60000, copy_units=units)

    def moved_exactly(k: int) -> None:
        wait_until(lambda: s.progress().chunks_done >= units, 30)
        time.sleep(0.2)   # a copier that ignored the pause would move on meanwhile
        assert s.progress().chunks_done == units
        shadow = raw(v.shadow)
        assert shadow[:k * C] == pit[:k * C]
        assert shadow[k * C:] == empty[k * C:], "chunks moved beyond the throttle's units"

    moved_exactly(units)
    t0 = time.monotonic()
    s.close()   # suspends the copy in its 60 s pause
    assert time.monotonic() - t0 < 30, "the pause held up the suspension"
    s = v.open(engine)
    moved_exactly(2 * units)   # the resumed copy: again `units` chunks, then a pause
    t0 = time.monotonic()
    s.abort()
    assert time.monotonic() - t0 < 30, "the pause held up the abort"
    assert s.status().flags & Flag.INCOMPLETE
    assert set(s.bits("shadow")) == set(range(2 * units, n))
    s.set_copy_params(0, 256)
    s.update(Direction.TO_SHADOW)
    assert s.wait(30)
    assert raw(v.shadow) == pit


def test_a_volume_with_a_short_last_chunk_is_copied_exactly(engine: Engine,
                                                            tmp_vol: MakeVol) -> None:
    """The last chunk of a volume whose size is not a multiple of the page cannot go direct:
    it is copied through the page cache, the rest around it directly."""
    size = 8 * 1024 * 1024 + 3 * C + 1000
    v = Vols(tmp_vol, Kind.INDEPENDENT, size, chunk=64 * 1024)
    s = v.enable(engine)
    assert s.wait(60)
    assert raw(v.shadow) == raw(v.master)
    s.write(Side.MASTER, size - 10, b"0123456789")
    s.write(Side.MASTER, 0, b"start")
    s.update(Direction.TO_SHADOW)
    assert s.wait(60)
    assert raw(v.shadow) == raw(v.master)


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Loops]:
    lp = Loops(tmp_path)
    try:
        yield lp
    finally:
        lp.cleanup()


def attach(loops: Loops, path: Path, sector: int) -> Path:
    dev = subprocess.run(["losetup", "--find", "--show", "--sector-size", str(sector), str(path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    loops.devices.append(dev)
    return Path(dev)


def test_copy_between_block_devices_of_different_sector_sizes(engine: Engine, tmp_vol: MakeVol,
                                                              loops: Loops) -> None:
    size = 16 << 20
    m, sh = loops.file(size), loops.file(size)
    put(m, rnd(9, size))
    master, shadow = attach(loops, m, 512), attach(loops, sh, 4096)
    v = Vols(tmp_vol, Kind.INDEPENDENT, size, master=master)
    v.shadow = shadow
    s = v.enable(engine)
    assert s.wait(60)
    assert raw(shadow) == raw(master)
    s.write(Side.MASTER, 5 * C + 7, b"after")
    s.copy(Direction.TO_SHADOW)
    assert s.wait(60)
    assert raw(shadow) == raw(master)
    s.write(Side.SHADOW, 0, b"restore me")
    s.update(Direction.TO_MASTER)
    assert s.wait(60)
    assert raw(master) == raw(shadow)
    s.disable()
