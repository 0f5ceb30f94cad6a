"""End to end with ext4 on served loop devices: point in time, background copy, restore, overflow.

Every file system here lives on /dev/loopN over a file of the FUSE mount, so each block goes
through the C server and the engine's I/O path. A shadow is always checked *after* the master
changed and with nothing of it cached yet (a fresh mount), so what it shows comes from the set.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from ptcopy.datapath.userspace import Served, UserspacePath
from ptcopy.engine import Direction, Flag, InUse, Kind, Set
from tests.helpers.names import MIB
from tests.helpers.system import mkfs, sync
from tests.helpers.userspace import Harness, checksums, mutate_tree, tree_diff, write_tree

pytestmark = pytest.mark.root


def fs_on_master(dp: Harness, kind: Kind, **kw: Any
                 ) -> tuple[Set, tuple[Path, Path, Path], UserspacePath, Served, Path]:
    """Enable a set, serve it, put ext4 on the master device and mount it."""
    s, vols = dp.enable(kind, **kw)
    if kind is Kind.INDEPENDENT:
        assert s.wait(30)                      # the initial full copy
    up = dp.userspace()
    served = up.serve("vol", s)
    assert served.master_device and served.shadow_device
    mkfs(served.master_device)
    mm = dp.mount(served.master_device, "master")
    return s, vols, up, served, mm


def test_dependent_point_in_time_with_ext4(dp: Harness) -> None:
    rng = random.Random(1)
    s, _, up, served, mm = fs_on_master(dp, Kind.DEPENDENT)
    write_tree(mm, rng, 30)
    sync()
    pit = checksums(mm)

    up.copy(["vol"], Direction.TO_SHADOW, full=False)   # freezes mm for the instant
    assert not s.progress().active                      # dependent: nothing to move

    sm = dp.mount(served.shadow_device, "shadow", ro=True)
    # a copy into the mounted shadow is refused, naming where it is mounted
    with pytest.raises(InUse) as ei:
        up.copy(["vol"], Direction.TO_SHADOW, full=False)
    assert str(sm) in str(ei.value)

    mutate_tree(mm, rng)
    write_tree(mm, rng, 10, prefix="later")
    sync()
    now = checksums(mm)
    assert now != pit
    assert s.status().diff_chunks > 0
    got = checksums(sm)                    # first read of the shadow: after the master changed
    assert got == pit, tree_diff(got, pit)

    dp.umount(sm)
    mutate_tree(mm, rng)
    sync()
    now = checksums(mm)
    up.copy(["vol"], Direction.TO_SHADOW, full=False)
    sm = dp.mount(served.shadow_device, "shadow", ro=True)
    got = checksums(sm)
    assert got == now, tree_diff(got, now)
    # and the master stays writable and the shadow unchanged by that
    write_tree(mm, rng, 5, prefix="after")
    sync()
    dp.umount(sm)
    sm = dp.mount(served.shadow_device, "shadow", ro=True)
    got = checksums(sm)
    assert got == now, tree_diff(got, now)


def test_independent_shadow_while_the_copy_runs(dp: Harness) -> None:
    rng = random.Random(2)
    s, (m, sh, _), up, served, mm = fs_on_master(dp, Kind.INDEPENDENT)
    write_tree(mm, rng, 30)
    sync()
    pit = checksums(mm)

    s.set_copy_params(100, 1)              # ~10 chunks/s: the update outlives the checks below
    up.copy(["vol"], Direction.TO_SHADOW, full=False)
    p = s.progress()
    assert p.active and p.direction is Direction.TO_SHADOW
    assert p.chunks_total >= 100, p        # mkfs and the files changed at least this much

    sm = dp.mount(served.shadow_device, "shadow", ro=True)
    with pytest.raises(InUse) as ei:
        up.copy(["vol"], Direction.TO_SHADOW, full=False)
    assert str(sm) in str(ei.value)
    mutate_tree(mm, rng)                   # master writes: copy-on-demand of the chunks first
    sync()
    now = checksums(mm)
    assert now != pit
    got = checksums(sm)
    p = s.progress()
    assert p.active, f"the copy ended before the shadow was read: {p}"
    assert p.chunks_done < p.chunks_total
    assert got == pit, tree_diff(got, pit)
    dp.umount(sm)

    s.set_copy_params(0, 256)
    assert s.wait(30)
    assert not s.status().flags & Flag.INCOMPLETE
    # the completed copy gives the same tree on a fresh mount
    sm = dp.mount(served.shadow_device, "shadow", ro=True)
    got = checksums(sm)
    assert got == pit, tree_diff(got, pit)
    dp.umount(sm)

    # a second round: update to the master's current tree, read while that copy runs too
    s.set_copy_params(100, 1)
    up.copy(["vol"], Direction.TO_SHADOW, full=True)
    sm = dp.mount(served.shadow_device, "shadow", ro=True)
    got = checksums(sm)
    assert s.progress().active
    assert got == now, tree_diff(got, now)
    dp.umount(sm)
    s.set_copy_params(0, 256)
    assert s.wait(30)

    # quiesce the master: then the independent shadow is a byte-for-byte copy of it
    dp.umount(mm)
    up.copy(["vol"], Direction.TO_SHADOW, full=False)
    assert s.wait(30)
    assert m.read_bytes() == sh.read_bytes()


@pytest.mark.parametrize("kind", [Kind.DEPENDENT, Kind.INDEPENDENT], ids=lambda k: k.name)
def test_restore_master_from_shadow(dp: Harness, kind: Kind) -> None:
    rng = random.Random(3)
    s, _, up, served, mm = fs_on_master(dp, kind)
    write_tree(mm, rng, 20)
    sync()
    up.copy(["vol"], Direction.TO_SHADOW, full=False)
    assert s.wait(30)

    # the shadow gets a tree of its own: a writable mount of it, changed
    sm = dp.mount(served.shadow_device, "shadow")
    mutate_tree(sm, rng)
    write_tree(sm, rng, 5, prefix="onshadow")
    dp.umount(sm)
    sm = dp.mount(served.shadow_device, "shadow", ro=True)
    want = checksums(sm)
    dp.umount(sm)

    # and the master goes on elsewhere
    mutate_tree(mm, rng)
    sync()
    assert checksums(mm) != want

    with pytest.raises(InUse) as ei:       # the master is mounted: no restore into it
        up.copy(["vol"], Direction.TO_MASTER, full=True)
    assert str(mm) in str(ei.value)
    assert not s.progress().active

    dp.umount(mm)
    up.copy(["vol"], Direction.TO_MASTER, full=True)
    assert s.wait(30)
    assert not s.status().flags & (Flag.INCOMPLETE | Flag.COPYING)
    mm = dp.mount(served.master_device, "master")
    got = checksums(mm)
    assert got == want, tree_diff(got, want)


def test_restore_reads_master_while_the_copy_runs(dp: Harness) -> None:
    """During a copy to the master, master reads of chunks not yet copied come from the shadow:
    the restored file system can be mounted before the copy ends."""
    rng = random.Random(4)
    s, _, up, served, mm = fs_on_master(dp, Kind.INDEPENDENT)
    write_tree(mm, rng, 20)
    sync()
    want = checksums(mm)
    up.copy(["vol"], Direction.TO_SHADOW, full=False)
    assert s.wait(30)
    mutate_tree(mm, rng)
    dp.umount(mm)

    s.set_copy_params(50, 1)
    up.copy(["vol"], Direction.TO_MASTER, full=True)
    mm = dp.mount(served.master_device, "master", ro=True)
    got = checksums(mm)
    p = s.progress()
    assert p.active and p.direction is Direction.TO_MASTER, p
    assert got == want, tree_diff(got, want)
    dp.umount(mm)
    s.set_copy_params(0, 256)
    assert s.wait(30)


def test_compact_shadow_spills_to_overflow_under_ext4(dp: Harness) -> None:
    rng = random.Random(5)
    ov = dp.engine.init_overflow(str(dp.file("ov.img", 64 * MIB)))
    s, _, up, served, mm = fs_on_master(dp, Kind.DEPENDENT, shadow=8 * MIB, overflow=ov)
    st = s.status()
    assert st.flags & Flag.COMPACT and st.shadow_size == 8 * MIB
    write_tree(mm, rng, 20)
    sync()
    before = s.status()
    assert before.shadow_slots_used > 0                 # mkfs and the files: copy-on-write
    up.copy(["vol"], Direction.TO_SHADOW, full=False)   # new point in time: chunks freed
    pit = checksums(mm)
    st = s.status()
    # (right after the point in time, ext4's thaw and writeback may rewrite its superblock,
    # group descriptors and journal head: a few chunks, not the many before)
    assert st.shadow_slots_used <= 4 < before.shadow_slots_used, (before, st)
    assert st.overflow_used == 0, (before, st)
    assert not st.flags & (Flag.SPILLED | Flag.OUT_OF_SPACE), st

    sm = dp.mount(served.shadow_device, "shadow", ro=True)
    # ~20 MiB of new data and rewrites: more copy-on-write than the 8 MiB shadow holds
    mutate_tree(mm, rng, new_files=40)
    write_tree(mm, rng, 40, max_size=512 * 1024, prefix="spill")
    sync()
    st = s.status()
    assert st.flags & Flag.SPILLED, st
    assert not st.flags & Flag.OUT_OF_SPACE, st
    assert st.overflow_used > 0 and st.shadow_slots_used == st.shadow_slots, st
    assert ov.status().chunks_used == st.overflow_used
    got = checksums(sm)
    assert got == pit, tree_diff(got, pit)
    dp.umount(sm)
    dp.umount(mm)
    up.unserve("vol")
