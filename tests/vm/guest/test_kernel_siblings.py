"""Restores on the kernel path of a master with several shadows, inside the VM (issue 15): a
dependent shadow merges into the master while a dependent sibling (dm-snapshot copies on write
into it during the merge) and an independent sibling (its bitmap marked with the merged chunks)
keep their points in time; a restore from an independent shadow writes the master through its
device stack, so the siblings keep theirs too; a group of dependent sets merges at one point in
time."""

from __future__ import annotations

import os
import time

import pytest

from ptcopy.datapath.kernel import KernelPath
from ptcopy.datapath.kernel.state import KernelSet
from ptcopy.engine import Direction, Engine, Flag, InvalidArgument, Kind, WrongKind
from tests.vm.guest.kernel_helpers import (
    CHUNK,
    MIB,
    Pool,
    digest,
    kernel_path,
    make_set,
    reopen,
    scribble,
    write_at,
)

SIZE = 8 * MIB


def test_merge_keeps_every_sibling(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with kernel_path(str(tmp_path)) as (engine, kp):
        a = make_set(engine, kp, pool, "sia", Kind.DEPENDENT, master_size=SIZE)
        master = next(v for v in pool.vols if v.path == a.master)
        i = make_set(engine, kp, pool, "sii", Kind.INDEPENDENT, master=master)
        kp.copy(["sii"], Direction.TO_SHADOW, full=True)
        assert kp.wait("sii", 300)
        c = make_set(engine, kp, pool, "sic", Kind.DEPENDENT, master=master,
                     shadow_size=4 * MIB)
        assert c.compact
        scribble(a.master_device, SIZE, 10, seed=1)   # copied on write into a and c
        scribble(a.shadow_device, SIZE, 12, seed=2)   # a's own: what the merge brings back
        scribble(c.shadow_device, SIZE, 5, seed=3)
        scribble(i.shadow_device, SIZE, 5, seed=4)
        pit = {k.name: digest(k.shadow_device) for k in (a, i, c)}

        kp.copy(["sia"], Direction.TO_MASTER, full=False)
        assert kp.wait("sia", 300)
        assert digest(a.master_device) == digest(a.master) == pit["sia"]
        assert digest(a.shadow_device) == pit["sia"]   # the new point in time
        for k in (i, c):
            assert digest(k.shadow_device) == pit[k.name], f"{k.name} lost its point in time"
            assert digest(k.master_device) == pit["sia"]
        # the independent sibling's next update takes in every chunk the merge wrote, though
        # its era device never saw those writes
        kp.copy(["sii"], Direction.TO_SHADOW, full=False)
        assert kp.wait("sii", 300)
        assert digest(i.shadow_device) == digest(i.shadow) == pit["sia"]


def test_restore_from_an_independent_shadow_keeps_every_sibling(  # type: ignore[no-untyped-def]
        pool: Pool, tmp_path) -> None:
    """The engine's copier writes the master through the top of its era chain: the origin
    copies on write into the dependent and compact siblings' stores, the eras mark the chunks
    for the other independent sibling, whose next update takes them in."""
    with kernel_path(str(tmp_path)) as (engine, kp):
        d = make_set(engine, kp, pool, "srd", Kind.DEPENDENT, master_size=SIZE)
        master = next(v for v in pool.vols if v.path == d.master)
        i = make_set(engine, kp, pool, "sri", Kind.INDEPENDENT, master=master)
        kp.copy(["sri"], Direction.TO_SHADOW, full=True)
        assert kp.wait("sri", 300)
        j = make_set(engine, kp, pool, "srj", Kind.INDEPENDENT, master=master)
        kp.copy(["srj"], Direction.TO_SHADOW, full=True)
        assert kp.wait("srj", 300)
        c = make_set(engine, kp, pool, "src", Kind.DEPENDENT, master=master,
                     shadow_size=4 * MIB)
        assert c.compact
        scribble(d.master_device, SIZE, 10, seed=11)   # copied on write into d and c
        scribble(i.shadow_device, SIZE, 24, seed=12)   # i's own: what the restore brings back
        scribble(d.shadow_device, SIZE, 5, seed=13)
        scribble(c.shadow_device, SIZE, 5, seed=14)
        scribble(j.shadow_device, SIZE, 5, seed=15)
        pit = {k.name: digest(k.shadow_device) for k in (d, i, j, c)}

        i.set.set_copy_params(100, 1)   # slow enough to look at the devices meanwhile
        kp.copy(["sri"], Direction.TO_MASTER, full=False)
        assert kp.busy("sri") and i.record.restore_sets == 4
        for k in (d, j, c):   # every master device shows the restored image, read-only
            assert digest(k.master_device) == pit["sri"]
            with pytest.raises(OSError):
                write_at(k.master_device, 0, b"x" * CHUNK)
        i.set.set_copy_params(0, 64)
        assert kp.wait("sri", 300)
        assert not i.record.restore_sets   # the restore ended: nothing left to resume
        assert digest(i.master_device) == digest(i.master) == pit["sri"]
        assert digest(i.shadow_device) == pit["sri"]
        for k in (d, j, c):
            assert digest(k.shadow_device) == pit[k.name], f"{k.name} lost its point in time"
            assert digest(k.master_device) == pit["sri"]
        # the independent sibling's next update takes in every chunk the restore wrote
        kp.copy(["srj"], Direction.TO_SHADOW, full=False)
        assert kp.wait("srj", 300)
        assert digest(j.shadow_device) == digest(j.shadow) == pit["sri"]
        # the dependent ones take a new point in time of the restored master
        kp.copy(["srd"], Direction.TO_SHADOW, full=False)
        assert kp.wait("srd", 300)
        assert digest(d.shadow_device) == pit["sri"]
        assert digest(c.shadow_device) == pit["src"]
        # and the restored set's own update leaves its shadow as it is
        kp.copy(["sri"], Direction.TO_SHADOW, full=False)
        assert kp.wait("sri", 300)
        assert digest(i.shadow_device) == digest(i.shadow) == pit["sri"]


def test_a_fast_restore_keeps_a_compact_sibling(  # type: ignore[no-untyped-def]
        pool: Pool, tmp_path) -> None:
    """A full restore from an independent shadow copies on write every chunk of the master into
    a compact sibling's store, faster than the monitor's rounds grow it (found by the model
    test, seed 37): the store is grown for all of it before the copy starts, so the sibling
    keeps its point in time instead of being invalidated."""
    size = 16 * MIB
    with kernel_path(str(tmp_path)) as (engine, kp):
        ov_vol = pool.loop("fov", 64 * MIB)
        engine.init_overflow(ov_vol.spec, chunk_size=CHUNK).close()
        i = make_set(engine, kp, pool, "fri", Kind.INDEPENDENT, master_size=size)
        master = next(v for v in pool.vols if v.path == i.master)
        kp.copy(["fri"], Direction.TO_SHADOW, full=True)
        assert kp.wait("fri", 300)
        c = make_set(engine, kp, pool, "frc", Kind.DEPENDENT, master=master,
                     shadow_size=1 * MIB, overflow=ov_vol)
        assert c.compact
        scribble(i.shadow_device, size, 16, seed=21)   # what the restore brings back
        pit, want = digest(c.shadow_device), digest(i.shadow_device)

        kp.copy(["fri"], Direction.TO_MASTER, full=True)   # every chunk, at full speed
        assert kp.wait("fri", 300)
        assert digest(i.master_device) == want
        assert not kp.status("frc")["out_of_space"]
        assert kp.status("frc")["extents"]
        assert digest(c.shadow_device) == pit, "the compact sibling lost its point in time"


def test_group_restore_of_dependent_sets(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with kernel_path(str(tmp_path)) as (engine, kp):
        g1 = make_set(engine, kp, pool, "sg1", Kind.DEPENDENT, master_size=SIZE)
        g2 = make_set(engine, kp, pool, "sg2", Kind.DEPENDENT, master_size=SIZE)
        master = next(v for v in pool.vols if v.path == g1.master)
        g3 = make_set(engine, kp, pool, "sg3", Kind.DEPENDENT, master=master)
        make_set(engine, kp, pool, "sgi", Kind.INDEPENDENT, master_size=SIZE)
        kp.copy(["sgi"], Direction.TO_SHADOW, full=True)
        assert kp.wait("sgi", 300)
        with pytest.raises(InvalidArgument, match="one of its shadows only"):
            kp.copy(["sg1", "sg3"], Direction.TO_MASTER, full=False)
        with pytest.raises(WrongKind, match="two groups"):
            kp.copy(["sg1", "sgi"], Direction.TO_MASTER, full=False)
        for k, seed in ((g1, 5), (g2, 6)):
            scribble(k.shadow_device, SIZE, 8, seed=seed)
        want = {k.name: digest(k.shadow_device) for k in (g1, g2, g3)}
        kp.copy(["sg1", "sg2"], Direction.TO_MASTER, full=False)
        assert kp.busy("sg1") and kp.busy("sg2")
        assert kp.wait("sg1", 300) and kp.wait("sg2", 300)
        for k in (g1, g2):
            assert digest(k.master_device) == want[k.name]
        assert digest(g3.shadow_device) == want["sg3"]


def test_an_interrupted_restore_waits_for_every_sibling(  # type: ignore[no-untyped-def]
        pool: Pool, tmp_path) -> None:
    """A restore through the master's stack that a crash (here: the process's handles dropped
    mid-copy, the devices left) interrupted does not resume while some of the master's sets
    are not served again (its copier would write beneath their snapshots and eras): it waits,
    and resumes once the last of them is back; every point in time is kept."""
    run = str(tmp_path)
    engine = Engine()
    kp = KernelPath(engine, os.path.join(run, "run"))
    d = make_set(engine, kp, pool, "swd", Kind.DEPENDENT, master_size=SIZE)
    master = next(v for v in pool.vols if v.path == d.master)
    i = make_set(engine, kp, pool, "swi", Kind.INDEPENDENT, master=master)
    kp.copy(["swi"], Direction.TO_SHADOW, full=True)
    assert kp.wait("swi", 300)
    j = make_set(engine, kp, pool, "swj", Kind.INDEPENDENT, master=master)
    kp.copy(["swj"], Direction.TO_SHADOW, full=True)
    assert kp.wait("swj", 300)
    scribble(d.master_device, SIZE, 10, seed=21)
    scribble(i.shadow_device, SIZE, 24, seed=22)
    scribble(d.shadow_device, SIZE, 5, seed=23)
    scribble(j.shadow_device, SIZE, 5, seed=24)
    pit = {k.name: digest(k.shadow_device) for k in (d, i, j)}
    vols = {v.path: v for v in pool.vols}
    order = [i, d, j]   # the restoring set comes back first: the worst case
    again: dict[str, KernelSet] = {}
    i.set.set_copy_params(300, 1)
    kp.copy(["swi"], Direction.TO_MASTER, full=False)
    deadline = time.monotonic() + 60
    while i.set.progress().chunks_done == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kp.stop()   # the devices stay, as after ptcopyd was killed
    engine.close()
    assert i.record.restore_sets == 3
    engine2 = Engine()
    kp2 = KernelPath(engine2, os.path.join(run, "run"))
    try:
        for n, k in enumerate(order):
            m, s, b = vols[k.master], vols[k.shadow], vols[k.bitmap]
            again[k.name] = reopen(engine2, kp2, k.name, m, s, b)
            kp2.started(k.name, new=False)
            if n < len(order) - 1:
                assert not kp2.busy("swi"), "the restore resumed before every set was back"
                assert again["swi"].set.status().flags & Flag.INCOMPLETE
        assert kp2.wait("swi", 300)
        ri = again["swi"]
        assert not ri.set.status().flags & Flag.INCOMPLETE
        assert digest(ri.master_device) == digest(ri.master) == pit["swi"]
        for name in ("swd", "swj"):
            k = again[name]
            assert digest(k.shadow_device) == pit[name], f"{name} lost its point in time"
            assert digest(k.master_device) == pit["swi"]
        kp2.copy(["swj"], Direction.TO_SHADOW, full=False)
        assert kp2.wait("swj", 300)
        assert digest(again["swj"].shadow_device) == pit["swi"]
    finally:
        kp2.teardown()
        engine2.close()
