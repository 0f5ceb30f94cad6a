"""Scenario tests of set semantics (docs/engine-semantics.md): volumes that fail and go
offline."""

from __future__ import annotations

import contextlib

import pytest

from ptcopy.engine import (
    Direction,
    Engine,
    Flag,
    Kind,
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
    raw,
    wait_until,
    whole,
)

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
    heal(s, VolumeRole.SHADOW)
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


@pytest.mark.parametrize("kind", [Kind.INDEPENDENT, Kind.DEPENDENT])
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
    heal(s, VolumeRole.BITMAP)
    assert whole(s, Side.SHADOW) == raw(v.master)


@pytest.mark.parametrize("kind", [Kind.INDEPENDENT, Kind.DEPENDENT])
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
    heal(s, VolumeRole.MASTER)
    assert whole(s, Side.MASTER) == raw(v.master)
    assert whole(s, Side.SHADOW) == raw(v.master)
    if kind == Kind.INDEPENDENT:
        assert raw(v.master) == pit
