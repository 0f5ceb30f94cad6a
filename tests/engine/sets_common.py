"""What the scenario tests of set semantics (tests/engine/test_sets*.py) share: volumes with
known contents, raw reads, waits, overflow volumes."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from ptcopy.engine import (
    Engine,
    Flag,
    Kind,
    Overflow,
    Set,
    Side,
    VolumeRole,
    bitmap_size,
)
from tests.helpers.names import MakeVol

C = 4096                 # small chunks for the data tests
BIG_CHUNK = 64 * 1024    # for copies that must take a while: 16 chunks per 1 MiB run
OFFLINE = Flag.MASTER_OFFLINE | Flag.SHADOW_OFFLINE | Flag.BITMAP_OFFLINE | Flag.OVERFLOW_OFFLINE



def rnd(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def put(path: Path, data: bytes, offset: int = 0) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def raw(path: Path, n: int | None = None) -> bytes:
    with path.open("rb") as f:
        return f.read() if n is None else f.read(n)


class Vols:
    """The volumes of one set, so a test can reopen it."""

    def __init__(self, tmp_vol: MakeVol, kind: Kind, master_size: int,
                 shadow_size: int | None = None, chunk: int = C, bitmap: bool = True,
                 master: Path | None = None, data_seed: int | None = 1) -> None:
        self.kind = kind
        self.chunk = chunk
        self.master = master if master is not None else tmp_vol(master_size)
        if master is None and data_seed is not None:
            put(self.master, rnd(data_seed, master_size))
        self.master_size = master_size
        self.shadow_size = master_size if shadow_size is None else shadow_size
        self.shadow = tmp_vol(self.shadow_size)
        self.bitmap: Path | None = None
        if bitmap:
            self.bitmap = tmp_vol(bitmap_size(master_size, self.shadow_size, chunk, kind))

    def enable(self, engine: Engine, **kw: object) -> Set:
        return engine.enable(self.master, self.shadow, self.bitmap, self.kind,
                             chunk_size=self.chunk, **kw)  # type: ignore[arg-type]

    def open(self, engine: Engine, overflow: Overflow | None = None) -> Set:
        assert self.bitmap is not None
        return engine.open(self.master, self.shadow, self.bitmap, overflow=overflow)


def whole(s: Set, side: Side) -> bytes:
    return s.read(side, 0, s.status().master_size)


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def overflow_vol(tmp_vol: MakeVol, engine: Engine, nchunks: int, chunk: int = C) -> Overflow:
    ov = engine.init_overflow(tmp_vol(2 * 4096 + nchunks * chunk), chunk)
    assert ov.status().chunks_total == nchunks
    return ov


def scatter_shadow_writes(s: Set, chunks: range, chunk: int = C, seed: int = 7) -> dict[int, bytes]:
    """One write in every other chunk: many separate runs for the copier."""
    out = {}
    for i, c in enumerate(chunks):
        if i % 2 == 0:
            out[c] = rnd(seed + c, chunk)
            s.write(Side.SHADOW, c * chunk, out[c])
    return out


def heal(s: Set, role: VolumeRole) -> None:
    """Stop the errors injected on role and reset: the resync ends with nothing offline."""
    s.inject_error(role, False)
    s.reset()
    assert s.wait(5)
    assert not s.status().flags & OFFLINE
