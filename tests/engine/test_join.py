"""Join: the bitmap another host kept for an exported shadow is merged into the set's."""

from __future__ import annotations

import pytest

from ptcopy.engine import Direction, Engine, InvalidArgument, Kind, Side, SizeMismatch

C = 32 * 1024


def test_join_marks_the_chunks_the_other_host_wrote(tmp_vol) -> None:  # type: ignore[no-untyped-def]
    size = 16 * C
    with Engine() as eng:
        here = eng.enable(tmp_vol(size, "m"), tmp_vol(size, "s"), tmp_vol(1 << 16, "b"),
                          Kind.INDEPENDENT)
        assert here.wait(10)
        # the other host's record of what it wrote: a set of the same geometry
        other_bitmap = tmp_vol(1 << 16, "ob")
        other = eng.enable(tmp_vol(size, "om"), tmp_vol(size, "os"), other_bitmap,
                           Kind.DEPENDENT)
        for c in (3, 7, 15):
            other.write(Side.MASTER, c * C + 5, b"x")
        other.close()
        assert here.bits("shadow") == []
        here.join(other_bitmap)
        assert here.bits("shadow") == [3, 7, 15]
        here.update(Direction.TO_SHADOW)
        assert here.wait(10)
        assert here.bits("shadow") == []


def test_join_refuses_another_geometry_and_garbage(tmp_vol) -> None:  # type: ignore[no-untyped-def]
    with Engine() as eng:
        s = eng.enable(tmp_vol(16 * C, "m"), tmp_vol(16 * C, "s"), tmp_vol(1 << 16, "b"),
                       Kind.DEPENDENT)
        bigger = tmp_vol(1 << 16, "ob")
        eng.enable(tmp_vol(32 * C, "om"), tmp_vol(32 * C, "os"), bigger, Kind.DEPENDENT).close()
        with pytest.raises(SizeMismatch):
            s.join(bigger)
        junk = tmp_vol(1 << 16, "junk")
        with open(junk, "r+b") as f:
            f.write(b"not a bitmap" * 100)
        with pytest.raises(Exception, match="not a ptcopy bitmap") as e:
            s.join(junk)
        assert not isinstance(e.value, InvalidArgument)
        assert s.bits("shadow") == []
