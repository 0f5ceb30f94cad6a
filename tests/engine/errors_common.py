"""What the engine's negative tests (tests/engine/test_errors*.py) share: volumes with random
contents, snapshots of them to show nothing changed, checks that a message names what it should
and that a set is still usable after a refusal."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ptcopy.engine import (
    CHUNK_DEFAULT,
    Engine,
    Flag,
    Kind,
    PtcopyError,
    Set,
    Side,
    bitmap_size,
)
from tests.helpers.names import MIB, MakeVol

CHUNK = CHUNK_DEFAULT



def rand_vol(tmp_vol: MakeVol, size: int, name: str, seed: int) -> Path:
    """A volume filled with random bytes, so that any change to it shows."""
    p = tmp_vol(size, name)
    p.write_bytes(random.Random(seed).randbytes(size))
    return p


def snap(*paths: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


def assert_unchanged(before: dict[Path, bytes]) -> None:
    for p, data in before.items():
        now = p.read_bytes()
        assert len(now) == len(data), f"{p} changed size: {len(data)} -> {len(now)}"
        assert now == data, f"{p} changed (first differing byte at " \
            f"{next(i for i in range(len(data)) if now[i] != data[i])})"


def msg_of(exc: pytest.ExceptionInfo[PtcopyError]) -> str:
    return str(exc.value)


def assert_names(exc: pytest.ExceptionInfo[PtcopyError], *needles: object) -> None:
    m = msg_of(exc)
    for n in needles:
        assert str(n) in m, f"message {m!r} does not name {n!r}"


class Vols:
    """The volumes of one set, created with random contents."""

    def __init__(self, tmp_vol: MakeVol, name: str, *, size: int = MIB,
                 shadow_size: int | None = None, chunk: int = 0,
                 kind: Kind = Kind.DEPENDENT, seed: int = 0) -> None:
        self.size = size
        self.shadow_size = size if shadow_size is None else shadow_size
        self.chunk = chunk or CHUNK
        self.kind = kind
        self.master = rand_vol(tmp_vol, size, f"{name}-master.img", seed)
        self.shadow = rand_vol(tmp_vol, self.shadow_size, f"{name}-shadow.img", seed + 1)
        need = bitmap_size(size, self.shadow_size, self.chunk, kind)
        self.bitmap = rand_vol(tmp_vol, need, f"{name}-bitmap.img", seed + 2)
        self.image = self.master.read_bytes()

    def enable(self, eng: Engine, **kw: object) -> Set:
        return eng.enable(self.master, self.shadow, self.bitmap, self.kind,
                          chunk_size=self.chunk, **kw)  # type: ignore[arg-type]

    def open(self, eng: Engine, **kw: object) -> Set:
        return eng.open(self.master, self.shadow, self.bitmap, **kw)  # type: ignore[arg-type]

    def all(self) -> tuple[Path, Path, Path]:
        return (self.master, self.shadow, self.bitmap)


def new_set(eng: Engine, tmp_vol: MakeVol, name: str = "a", **kw: object) -> tuple[Set, Vols]:
    enable_kw = {k: kw.pop(k) for k in ("copy_delay_ms", "copy_units") if k in kw}
    v = Vols(tmp_vol, name, **kw)  # type: ignore[arg-type]
    s = v.enable(eng, **enable_kw)
    if v.kind == Kind.INDEPENDENT and not enable_kw:
        assert s.wait(timeout=30)
    return s, v


def assert_usable(s: Set, off: int = 0) -> None:
    """The set still serves I/O: a master write shows on the master and leaves the shadow's point
    in time alone."""
    before = s.read(Side.SHADOW, off, 4096)
    data = random.Random(off).randbytes(4096)
    s.write(Side.MASTER, off, data)
    assert s.read(Side.MASTER, off, 4096) == data
    assert s.read(Side.SHADOW, off, 4096) == before


def read_all(s: Set, side: Side) -> bytes:
    size = s.status().master_size
    return b"".join(s.read(side, o, min(MIB, size - o)) for o in range(0, size, MIB))


def throttled_independent(eng: Engine, tmp_vol: MakeVol, name: str = "a",
                          size: int = 4 * MIB) -> tuple[Set, Vols]:
    """An independent set whose initial copy runs for a good second (one 300 ms pause per run of
    up to 1 MiB)."""
    s, v = new_set(eng, tmp_vol, name, kind=Kind.INDEPENDENT, size=size, copy_delay_ms=300,
                   copy_units=1)
    assert s.status().flags & Flag.COPYING
    return s, v


def finish_copy(s: Set) -> None:
    s.set_copy_params(0, 256)
    assert s.wait(timeout=60)
