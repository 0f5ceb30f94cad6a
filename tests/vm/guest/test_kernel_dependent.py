"""Dependent sets on dm-snapshot, inside the VM: copy-on-write under writes, a new point in time,
merging the shadow back into the master, compact shadows growing into an overflow volume."""

from __future__ import annotations

import os
import random
import threading

import pytest

from ptcopy.datapath import blockdev as loopdev
from ptcopy.datapath.kernel import opened_volumes, tables
from ptcopy.engine import Dependency, Direction, InUse, Kind
from tests.vm.guest.kernel_helpers import (
    CHUNK,
    MIB,
    Pool,
    digest,
    kernel_path,
    make_set,
    read_at,
    scribble,
    write_at,
)


def test_cow_keeps_the_point_in_time_under_writes(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with kernel_path(str(tmp_path)) as (engine, kp):
        ks = make_set(engine, kp, pool, "d1", Kind.DEPENDENT)
        before = digest(ks.master)
        assert digest(ks.shadow_device) == before
        # concurrent writers on the master device while the shadow is read
        stop = threading.Event()

        def writer(seed: int) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                write_at(ks.master_device, rng.randrange(ks.master_size // CHUNK) * CHUNK,
                         rng.randbytes(CHUNK), sync=False)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        try:
            during = digest(ks.shadow_device)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert during == before
        assert digest(ks.shadow_device) == before
        assert digest(ks.master_device) != before
        # the master device and the raw master agree: writes went through
        assert digest(ks.master_device) == digest(ks.master)
        # writes to the shadow change the shadow only
        m_now = digest(ks.master_device)
        write_at(ks.shadow_device, 0, b"S" * CHUNK)
        assert read_at(ks.shadow_device, 0, 4) == b"SSSS"
        assert digest(ks.master_device) == m_now


def test_new_point_in_time_then_merge_back(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with kernel_path(str(tmp_path)) as (engine, kp):
        ks = make_set(engine, kp, pool, "d2", Kind.DEPENDENT)
        scribble(ks.master_device, ks.master_size, 40, seed=1)
        kp.copy(["d2"], Direction.TO_SHADOW, full=False)
        assert kp.wait("d2", 60)
        pit = digest(ks.master_device)
        assert digest(ks.shadow_device) == pit
        assert tables.snapshot_usage("ptcopy-d2-shadow").allocated <= \
            tables.snapshot_usage("ptcopy-d2-shadow").metadata + 8   # an emptied store
        # change the shadow, then make the master what the shadow is
        scribble(ks.shadow_device, ks.master_size, 30, seed=2)
        wanted = digest(ks.shadow_device)
        assert wanted != pit
        kp.copy(["d2"], Direction.TO_MASTER, full=False)
        assert kp.wait("d2", 120)
        assert digest(ks.master_device) == wanted
        assert digest(ks.master) == wanted           # merged into the volume itself
        assert digest(ks.shadow_device) == wanted    # and a new point in time begins
        write_at(ks.master_device, 0, b"M" * CHUNK)
        assert read_at(ks.shadow_device, 0, 4) != b"MMMM"


def test_several_shadows_of_one_master(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with kernel_path(str(tmp_path)) as (engine, kp):
        a = make_set(engine, kp, pool, "sa", Kind.DEPENDENT)
        master = next(v for v in pool.vols if v.path == a.master)
        t0 = digest(a.shadow_device)
        scribble(a.master_device, a.master_size, 20, seed=3)
        b = make_set(engine, kp, pool, "sb", Kind.DEPENDENT, master=master)
        t1 = digest(b.shadow_device)
        assert t1 != t0
        scribble(b.master_device, b.master_size, 20, seed=4)   # either master device works
        assert digest(a.shadow_device) == t0
        assert digest(b.shadow_device) == t1
        kp.unserve("sa")
        assert digest(b.shadow_device) == t1
        assert not tables.exists("ptcopy-sa-shadow")


def test_busy_target_is_refused(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with kernel_path(str(tmp_path)) as (engine, kp):
        ks = make_set(engine, kp, pool, "d3", Kind.DEPENDENT)
        scribble(ks.master_device, ks.master_size, 5, seed=5)
        pit = digest(ks.shadow_device)
        fd = os.open(ks.shadow_device, os.O_RDONLY)
        try:
            with pytest.raises(InUse, match="in use"):
                kp.copy(["d3"], Direction.TO_SHADOW, full=False)
            with pytest.raises(InUse):
                kp.unserve("d3")
        finally:
            os.close(fd)
        assert digest(ks.shadow_device) == pit   # nothing changed


def test_compact_shadow_grows_into_overflow(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with kernel_path(str(tmp_path)) as (engine, kp):
        ov_vol = pool.loop("ov", 64 * MIB)
        engine.init_overflow(ov_vol.spec, chunk_size=CHUNK).close()
        ks = make_set(engine, kp, pool, "c1", Kind.DEPENDENT, shadow_size=4 * MIB,
                      overflow=ov_vol)
        assert ks.compact
        pit = digest(ks.shadow_device)
        rng = random.Random(6)
        for step in range(20):   # 20 MiB of first writes into a 4 MiB shadow
            write_at(ks.master_device, step * MIB, rng.randbytes(MIB))
            kp.poll()
        st = kp.status("c1")
        assert st["extents"], st
        assert not st["out_of_space"]
        assert digest(ks.shadow_device) == pit
        # one without an overflow volume runs out: the master keeps working, the set is flagged
        small = make_set(engine, kp, pool, "c2", Kind.DEPENDENT, shadow_size=2 * MIB)
        for step in range(8):
            write_at(small.master_device, step * MIB, rng.randbytes(MIB))
        kp.poll()
        assert kp.status("c2")["out_of_space"]
        assert read_at(small.master_device, 7 * MIB, MIB) == read_at(small.master, 7 * MIB, MIB)
        # an overflow volume attached later is used too; detaching waits for the extents to go
        late = make_set(engine, kp, pool, "c3", Kind.DEPENDENT, master_size=8 * MIB,
                        shadow_size=4 * MIB)
        kp.attach_overflow("c3", ov_vol.spec)
        late_pit = digest(late.shadow_device)
        for step in range(6):
            write_at(late.master_device, step * MIB, rng.randbytes(MIB))
            kp.poll()
        assert kp.status("c3")["extents"] and not kp.status("c3")["out_of_space"]
        assert digest(late.shadow_device) == late_pit
        with pytest.raises(Dependency, match="extent"):
            kp.detach_overflow("c3")
        kp.copy(["c3"], Direction.TO_SHADOW, full=False)   # a new point in time frees them
        assert kp.status("c3")["extents"] == 0
        kp.detach_overflow("c3")


def test_group_point_in_time(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One writer stamps a counter on three masters in turn; the shadows taken by one group
    update (two dependent sets and an independent one between them) must show a prefix of that
    sequence."""
    kinds = [Kind.DEPENDENT, Kind.INDEPENDENT, Kind.DEPENDENT]
    with kernel_path(str(tmp_path)) as (engine, kp):
        sets = [make_set(engine, kp, pool, f"g{i}", kind, master_size=8 * MIB)
                for i, kind in enumerate(kinds)]
        stop = threading.Event()
        counter = [0]

        def writer() -> None:
            while not stop.is_set():
                counter[0] += 1
                for ks in sets:
                    write_at(ks.master_device, 0, counter[0].to_bytes(8, "little") * 512,
                             sync=False)

        t = threading.Thread(target=writer)
        t.start()
        try:
            seen = []
            for _ in range(4):
                while counter[0] < 3:
                    pass
                kp.copy([ks.name for ks in sets], Direction.TO_SHADOW, full=False)
                # the independent shadow shows the frozen view at once, and keeps it when done
                seen.append([int.from_bytes(read_at(ks.shadow_device, 0, 8), "little")
                             for ks in sets])
                assert kp.wait("g1", 120)
                assert int.from_bytes(read_at(sets[1].shadow_device, 0, 8), "little") == \
                    seen[-1][1]
        finally:
            stop.set()
            t.join()
        for c0, c1, c2 in seen:
            assert c0 >= c1 >= c2 >= c0 - 1, seen


def test_file_volumes_are_served_through_loop_devices(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Files as volumes (what the demo uses): one loop device per file, shared by the sets on
    one master file, and gone once no set uses it."""
    def file(name: str, size: int, fill: bool = False) -> str:
        path = str(tmp_path / name)
        with open(path, "wb") as f:
            f.write(random.randbytes(size)) if fill else f.truncate(size)
        return path

    size = 8 * MIB
    master = file("m", size, fill=True)
    with kernel_path(str(tmp_path)) as (engine, kp):
        made = []
        for name in ("fa", "fb"):
            shadow = file(f"{name}.s", kp.store_needed(size, CHUNK))
            bitmap = file(f"{name}.b", kp.layout_for(size, size, CHUNK, Kind.DEPENDENT).total)
            fds = [os.open(p, os.O_RDWR) for p in (master, shadow, bitmap)]
            try:
                st = engine.enable(*((p, fd) for p, fd in zip((master, shadow, bitmap), fds,
                                                             strict=True)),
                                   kind=Kind.DEPENDENT, chunk_size=CHUNK)
            finally:
                for fd in fds:
                    os.close(fd)
            with opened_volumes(master, shadow, bitmap) as vols:
                made.append(kp.serve(name, st, vols))
        fa, fb = made
        assert fa.master == fb.master and fa.master.startswith("/dev/loop")
        pit = digest(fa.shadow_device)
        scribble(fb.master_device, size, 20, seed=9)
        assert digest(fa.shadow_device) == pit == digest(fb.shadow_device)
        kp.unserve("fa")
        assert any(lp.backing_file == os.path.realpath(master) for lp in loopdev.list_loops())
        kp.unserve("fb")
        assert not any(lp.backing_file.startswith(str(tmp_path))
                       for lp in loopdev.list_loops())
