"""Suspending a copy (pt_set_suspend / pt_set_resume): the copy keeps its place and its copy
bits, the set stays copying (reads of the target's missing chunks come from the source, writes
copy a chunk first), a close and open keep it suspended, and a resume ends with the target byte
for byte the point in time."""

from __future__ import annotations

import pytest

from ptcopy.engine import Direction, Engine, Flag, Kind, NoCopy, PtcopyError, Set, Side
from tests.engine.sets_common import C, MakeVol, Vols, raw, rnd, wait_until, whole

SIZE = 4 << 20   # 1024 chunks of 4 KiB; throttled to 8 chunks every 20 ms: ~2.5 s of copy


def suspended_mid_copy(engine: Engine, tmp_vol: MakeVol) -> tuple[Vols, Set]:
    """An independent set whose throttled initial copy is suspended once it has begun (the
    master is not written meanwhile, so it still holds the point in time)."""
    v = Vols(tmp_vol, Kind.INDEPENDENT, SIZE)
    s = v.enable(engine, copy_delay_ms=20, copy_units=8)
    wait_until(lambda: s.progress().chunks_done > 0, 10)
    s.suspend()
    return v, s


def test_suspend_keeps_the_place_and_resume_finishes_the_copy(
        engine: Engine, tmp_vol: MakeVol) -> None:
    v, s = suspended_mid_copy(engine, tmp_vol)
    pit = raw(v.master)
    st = s.status()
    assert st.flags & Flag.SUSPENDED and st.flags & Flag.COPYING
    p = s.progress()
    assert not p.active and 0 < p.chunks_done < p.chunks_total
    left = len(s.bits("copy"))
    assert left == st.copy_chunks > 0
    # a master write during the suspension still copies its chunk to the shadow first
    c = SIZE // C - 1
    assert c in s.bits("copy")
    s.write(Side.MASTER, c * C, rnd(5, C))
    assert c not in s.bits("copy")
    # the shadow reads as the point in time throughout
    assert whole(s, Side.SHADOW) == pit
    assert s.progress().chunks_done == p.chunks_done   # nothing moves while suspended
    with pytest.raises(PtcopyError, match="suspended already"):
        s.suspend()
    with pytest.raises(PtcopyError, match="already copying"):
        s.update(Direction.TO_SHADOW)
    s.set_copy_params(0, 8)
    s.resume()
    assert s.wait(60)
    p2 = s.progress()
    assert not s.status().flags & (Flag.SUSPENDED | Flag.COPYING | Flag.INCOMPLETE)
    assert p2.chunks_total == p.chunks_total and p2.chunks_done == p2.chunks_total
    assert raw(v.shadow) == pit
    with pytest.raises(NoCopy, match="no suspended copy"):
        s.resume()
    with pytest.raises(NoCopy, match="no copy running"):
        s.suspend()


def test_a_suspended_copy_stays_suspended_across_close_and_open(
        engine: Engine, tmp_vol: MakeVol) -> None:
    v, s = suspended_mid_copy(engine, tmp_vol)
    pit = raw(v.master)
    left = s.bits("copy")
    s.close()
    s = v.open(engine)
    st = s.status()
    assert st.flags & Flag.SUSPENDED and not s.progress().active
    assert s.bits("copy") == left
    assert whole(s, Side.SHADOW) == pit
    s.set_copy_params(0, 8)
    s.resume()
    assert s.wait(60)
    assert raw(v.shadow) == pit and not s.status().flags & Flag.SUSPENDED


def test_abort_of_a_suspended_copy_leaves_the_differences_in_the_shadow_bitmap(
        engine: Engine, tmp_vol: MakeVol) -> None:
    v, s = suspended_mid_copy(engine, tmp_vol)
    left = set(s.bits("copy"))
    s.abort()
    st = s.status()
    assert not st.flags & (Flag.SUSPENDED | Flag.COPYING) and st.flags & Flag.INCOMPLETE
    assert s.bits("copy") == [] and left <= set(s.bits("shadow"))
    s.update(Direction.TO_SHADOW)
    assert s.wait(60)
    assert raw(v.shadow) == raw(v.master)
