"""Restores on the kernel path of a master with several shadows, inside the VM (issue 15): a
dependent shadow merges into the master while a dependent sibling (dm-snapshot copies on write
into it during the merge) and an independent sibling (its bitmap marked with the merged chunks)
keep their points in time; a restore from an independent shadow with siblings is refused with
its reason; a group of dependent sets merges at one point in time."""

from __future__ import annotations

import pytest

from ptcopy.engine import Dependency, Direction, InvalidArgument, Kind, WrongKind
from tests.vm.guest.kernel_helpers import (
    MIB,
    Pool,
    digest,
    kernel_path,
    make_set,
    scribble,
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

        with pytest.raises(Dependency, match="independent shadow"):
            kp.copy(["sii"], Direction.TO_MASTER, full=False)
        assert not kp.busy("sii")

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
