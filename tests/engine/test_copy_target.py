"""The copy target of a set (pt_set_copy_target, the kernel data path's hook): a restore writes
the master through the given device instead of the raw volume, and leaves the master's other
sets to that device (on the kernel path its origin and eras keep their points in time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptcopy.engine import CopyInProgress, Direction, Engine, Kind, Side, TooSmall, WrongKind
from tests.engine.sets_common import C, MakeVol, Vols, put, raw, rnd, wait_until, whole

SIZE = 16 * C


def _target(tmp_vol: MakeVol, size: int = SIZE) -> Path:
    t = tmp_vol(size)
    put(t, b"\0" * size)
    return t


def test_a_restore_writes_through_the_target_not_the_raw_master(
        engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.INDEPENDENT, SIZE)
    s = v.enable(engine)
    assert s.wait(10)
    s.write(Side.SHADOW, 0, rnd(7, SIZE))
    master_before = raw(v.master)
    t = _target(tmp_vol)
    s.copy_target(t)
    s.copy(Direction.TO_MASTER)
    assert s.wait(10)
    assert raw(t) == rnd(7, SIZE), "the restore did not write the target"
    assert raw(v.master) == master_before, "the restore wrote the raw master"
    # an update writes only the chunks that differ, through the target too
    s.write(Side.SHADOW, 3 * C, rnd(8, C))
    s.update(Direction.TO_MASTER)
    assert s.wait(10)
    assert raw(t)[3 * C:4 * C] == rnd(8, C)
    assert raw(v.master) == master_before
    # None: back to the raw volume
    s.copy_target(None)
    s.write(Side.SHADOW, 5 * C, rnd(9, C))
    s.update(Direction.TO_MASTER)
    assert s.wait(10)
    assert raw(v.master)[5 * C:6 * C] == rnd(9, C)


def test_with_a_target_the_kernel_path_restores_a_master_that_has_siblings(
        engine: Engine, tmp_vol: MakeVol) -> None:
    """defer_copies (the kernel path) refuses a restore with siblings on the raw volume; with a
    target it runs, and the engine does no sibling work (the device stack does it): the
    dependent sibling's raw shadow volume is not written."""
    ind = Vols(tmp_vol, Kind.INDEPENDENT, SIZE)
    a = ind.enable(engine)
    assert a.wait(10)
    dep = Vols(tmp_vol, Kind.DEPENDENT, SIZE, master=ind.master)
    b = dep.enable(engine)
    a.write(Side.SHADOW, 2 * C, rnd(3, 2 * C))
    engine.defer_copies(True)
    master_before, dep_shadow_before = raw(ind.master), raw(dep.shadow)
    t = _target(tmp_vol)
    a.copy_target(t)
    a.update(Direction.TO_MASTER)
    assert a.wait(10)
    assert raw(t)[2 * C:4 * C] == rnd(3, 2 * C)
    assert raw(t)[:2 * C] == b"\0" * 2 * C, "only the chunks that differ are restored"
    assert raw(ind.master) == master_before
    assert raw(dep.shadow) == dep_shadow_before
    assert whole(b, Side.SHADOW) == master_before


def test_the_target_cannot_change_under_a_copy(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.INDEPENDENT, 4 << 20)
    s = v.enable(engine, copy_delay_ms=20, copy_units=8)
    wait_until(lambda: s.progress().chunks_done > 0, 10)
    t = _target(tmp_vol, 4 << 20)
    with pytest.raises(CopyInProgress):
        s.copy_target(t)
    with pytest.raises(CopyInProgress):
        s.copy_target(None)
    s.abort()


def test_refused_for_a_compact_set(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.DEPENDENT, SIZE, shadow_size=8 * C)
    s = v.enable(engine)
    with pytest.raises(WrongKind) as exc:
        s.copy_target(_target(tmp_vol))
    assert "compact" in str(exc.value)


def test_a_target_smaller_than_the_master_is_refused(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.INDEPENDENT, SIZE)
    s = v.enable(engine)
    assert s.wait(10)
    with pytest.raises(TooSmall) as exc:
        s.copy_target(_target(tmp_vol, SIZE - C))
    assert "bytes" in str(exc.value)
