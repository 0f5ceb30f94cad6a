"""Scenario tests of set semantics (docs/engine-semantics.md): compact shadows and overflow
volumes."""

from __future__ import annotations

import pytest

from ptcopy.engine import (
    Dependency,
    Direction,
    Engine,
    Flag,
    Kind,
    OutOfSpace,
    Side,
)
from tests.engine.sets_common import (
    C,
    MakeVol,
    Vols,
    overflow_vol,
    raw,
    whole,
)

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
