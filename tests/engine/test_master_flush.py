"""Security review finding 2: a flush of the master never fails because the shadow side is
offline, and a reset afterwards misses no chunk.

The shadow side is the shadow volume, the bitmap volume and (for a compact set) the overflow
volume. Each is made to fail with EIO and with ENOSPC (a full disk), while the master goes on
taking writes and flushes; then the fault is cleared, ``reset`` runs, and the shadow must equal
the master byte for byte.
"""

from __future__ import annotations

import errno
import random

import pytest

from ptcopy.engine import (
    Engine,
    Flag,
    InvalidArgument,
    Kind,
    Overflow,
    PtcopyError,
    Set,
    Side,
    VolumeRole,
    bitmap_size,
)
from tests.helpers.names import MakeVol

C = 4096
N = 16                      # chunks in the master
OFFLINE = Flag.MASTER_OFFLINE | Flag.SHADOW_OFFLINE | Flag.BITMAP_OFFLINE | Flag.OVERFLOW_OFFLINE
FLAG_OF = {VolumeRole.SHADOW: Flag.SHADOW_OFFLINE, VolumeRole.BITMAP: Flag.BITMAP_OFFLINE,
           VolumeRole.OVERFLOW: Flag.OVERFLOW_OFFLINE}
ERRORS = [pytest.param(errno.EIO, id="EIO"), pytest.param(errno.ENOSPC, id="ENOSPC")]



class Volumes:
    """master (random data), shadow, bitmap and, for a compact set, an overflow volume."""

    def __init__(self, tmp_vol: MakeVol, engine: Engine, layout: str) -> None:
        self.kind = Kind.INDEPENDENT if layout == "independent" else Kind.DEPENDENT
        self.compact = layout == "compact"
        shadow_size = 2 * C if self.compact else N * C
        self.master = tmp_vol(N * C)
        self.master.write_bytes(random.Random(1).randbytes(N * C))
        self.shadow = tmp_vol(shadow_size)
        self.bitmap = tmp_vol(bitmap_size(N * C, shadow_size, C, self.kind))
        self.overflow: Overflow | None = None
        if self.compact:
            self.overflow = engine.init_overflow(tmp_vol(2 * 4096 + N * C), C)

    def enable(self, engine: Engine) -> Set:
        s = engine.enable(self.master, self.shadow, self.bitmap, self.kind, chunk_size=C,
                          overflow=self.overflow)
        assert s.wait(10)
        return s

    def open(self, engine: Engine) -> Set:
        return engine.open(self.master, self.shadow, self.bitmap, overflow=self.overflow)


def whole(s: Set, side: Side) -> bytes:
    return s.read(side, 0, N * C)


def write_chunks(s: Set, chunks: range, seed: int) -> None:
    rng = random.Random(seed)
    for c in chunks:
        s.write(Side.MASTER, c * C + rng.randrange(C - 64), rng.randbytes(64))


def recovered(s: Set, v: Volumes) -> None:
    """After reset: nothing offline, and the shadow is the master's image, no chunk missed."""
    s.reset()
    assert s.wait(10)
    assert not s.status().flags & OFFLINE
    master = v.master.read_bytes()
    assert whole(s, Side.MASTER) == master
    assert whole(s, Side.SHADOW) == master, "reset missed a chunk the master changed"
    if v.kind == Kind.INDEPENDENT:   # an independent shadow holds every byte itself
        assert v.shadow.read_bytes() == master


CASES = [
    pytest.param("independent", VolumeRole.SHADOW, id="independent-shadow"),
    pytest.param("independent", VolumeRole.BITMAP, id="independent-bitmap"),
    pytest.param("dependent", VolumeRole.SHADOW, id="dependent-shadow"),
    pytest.param("dependent", VolumeRole.BITMAP, id="dependent-bitmap"),
    pytest.param("compact", VolumeRole.SHADOW, id="compact-shadow"),
    pytest.param("compact", VolumeRole.BITMAP, id="compact-bitmap"),
    pytest.param("compact", VolumeRole.OVERFLOW, id="compact-overflow"),
]


@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize(("layout", "failing"), CASES)
def test_master_flush_survives_a_failing_shadow_side(engine: Engine, tmp_vol: MakeVol,
                                                     layout: str, failing: VolumeRole,
                                                     error: int) -> None:
    v = Volumes(tmp_vol, engine, layout)
    s = v.enable(engine)
    # the compact shadow holds two chunks: one taken now, so the next copy-on-write goes to the
    # shadow volume; both taken when the overflow is the one to fail
    write_chunks(s, range(2 if failing == VolumeRole.OVERFLOW else 1), seed=2)
    s.flush(Side.MASTER)
    s.inject_error(failing, error=error)

    write_chunks(s, range(2, 8), seed=3)   # copy-on-write (dependent) and first bits fail here
    s.flush(Side.MASTER)                   # must succeed: the master's data is all it needs
    with pytest.raises(PtcopyError):
        s.flush(Side.SHADOW)               # the shadow side's own flush may fail
    flags = s.status().flags
    assert flags & FLAG_OF[failing] and flags & Flag.SHADOW_OFFLINE
    assert not flags & Flag.MASTER_OFFLINE
    write_chunks(s, range(6, N), seed=4)   # ... and go on, with the shadow side known offline
    s.flush(Side.MASTER)
    assert v.master.read_bytes() == whole(s, Side.MASTER)

    s.inject_error(failing, False)
    recovered(s, v)


@pytest.mark.parametrize("error", ERRORS)
def test_bitmap_back_before_close_keeps_every_bit(engine: Engine, tmp_vol: MakeVol,
                                                  error: int) -> None:
    """The bits of writes made while the bitmap was offline live in memory only: a close once
    the bitmap takes writes again writes them all, and the reopened set resyncs them."""
    v = Volumes(tmp_vol, engine, "independent")
    s = v.enable(engine)
    s.inject_error(VolumeRole.BITMAP, error=error)
    write_chunks(s, range(0, N, 3), seed=5)
    s.flush(Side.MASTER)
    assert s.status().flags & Flag.BITMAP_OFFLINE
    s.inject_error(VolumeRole.BITMAP, False)
    s.close()
    s = v.open(engine)
    assert s.status().flags & Flag.SHADOW_OFFLINE, "reopened as if nothing had happened"
    assert sorted(s.bits("shadow")) == list(range(0, N, 3))
    recovered(s, v)


def test_injected_errno_reaches_the_caller(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Volumes(tmp_vol, engine, "independent")
    s = v.enable(engine)
    s.inject_error(VolumeRole.SHADOW, error=errno.ENOSPC)
    with pytest.raises(PtcopyError) as ei:
        s.write(Side.SHADOW, 0, b"x")
    assert ei.value.code == errno.ENOSPC and "No space left" in str(ei.value)
    with pytest.raises(InvalidArgument):
        s.inject_error(VolumeRole.SHADOW, error=-1)
    s.inject_error(VolumeRole.SHADOW, False)
    recovered(s, v)
