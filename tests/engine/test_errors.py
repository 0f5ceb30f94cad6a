"""Negative tests: every refusal in the engine's error vocabulary that applies to it.

Each test asserts the exception class, that the message names the volume or set and the problem,
and that nothing changed: the volumes are byte-identical where the call could have touched them,
and the set (or engine) is still usable afterwards. The engine's promise (ptcopy_engine.h):
"When a pt_error is passed, it receives the code and a message that names the volume and the
problem. Nothing is half-changed when a call fails."
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ptcopy.engine import (
    CHUNK_DEFAULT,
    CopyInProgress,
    Dependency,
    Direction,
    Engine,
    Flag,
    Incomplete,
    InUse,
    InvalidArgument,
    Kind,
    NoCopy,
    NotFound,
    NotLocked,
    Offline,
    OutOfSpace,
    PtcopyError,
    SameVolume,
    Set,
    Side,
    SizeMismatch,
    TooSmall,
    VolumeIOError,
    VolumeRole,
    WrongKind,
    bitmap_size,
)
from ptcopy.engine import BadHeader as BadHeaderError

KIB = 1024
MIB = 1024 * KIB
CHUNK = CHUNK_DEFAULT

MakeVol = Callable[..., Path]


# ---- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def eng() -> Iterator[Engine]:
    with Engine() as e:
        yield e


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


# ---- TooSmall ---------------------------------------------------------------------------------


def test_independent_shadow_smaller_than_master(eng, tmp_vol):
    m = rand_vol(tmp_vol, MIB, "m.img", 1)
    sh = rand_vol(tmp_vol, MIB - 4096, "s.img", 2)
    b = rand_vol(tmp_vol, bitmap_size(MIB, MIB, 0, Kind.INDEPENDENT), "b.img", 3)
    before = snap(m, sh, b)
    with pytest.raises(TooSmall) as exc:
        eng.enable(m, sh, b, Kind.INDEPENDENT)
    assert_names(exc, sh, MIB - 4096, MIB)
    assert_unchanged(before)
    # nothing stayed registered: the same volumes make a (compact) dependent set
    s = eng.enable(m, sh, tmp_vol(bitmap_size(MIB, MIB - 4096), "b2.img"), Kind.DEPENDENT)
    assert s.status().flags & Flag.COMPACT
    assert_usable(s)


@pytest.mark.parametrize("kind,shadow_size,chunk", [
    (Kind.DEPENDENT, MIB, 0),
    (Kind.INDEPENDENT, MIB, 4096),
    (Kind.DEPENDENT, MIB // 2, 4096),   # compact: the bitmap volume also holds the chunk index
], ids=["dependent", "independent", "compact"])
@pytest.mark.parametrize("short", [1, 4096, "tiny"])
def test_bitmap_too_small_names_the_size_needed(eng, tmp_vol, kind, shadow_size, chunk, short):
    need = bitmap_size(64 * MIB, shadow_size if kind == Kind.DEPENDENT else 64 * MIB, chunk, kind)
    m = tmp_vol(64 * MIB, "m.img")
    sh = tmp_vol(shadow_size if kind == Kind.DEPENDENT else 64 * MIB, "s.img")
    have = 100 if short == "tiny" else need - short
    b = rand_vol(tmp_vol, have, "b.img", 4)
    before = snap(b)
    with pytest.raises(TooSmall) as exc:
        eng.enable(m, sh, b, kind, chunk_size=chunk)
    assert_names(exc, b, f"{need} bytes")
    assert_unchanged(before)
    os.truncate(b, need)   # exactly the size asked for is enough
    s = eng.enable(m, sh, b, kind, chunk_size=chunk)
    assert s.status().bitmap_size == need
    s.wait(timeout=30)


def test_compact_shadow_smaller_than_one_chunk(eng, tmp_vol):
    m = rand_vol(tmp_vol, MIB, "m.img", 1)
    sh = rand_vol(tmp_vol, CHUNK - 1, "s.img", 2)
    b = rand_vol(tmp_vol, bitmap_size(MIB, CHUNK - 1), "b.img", 3)
    before = snap(m, sh, b)
    with pytest.raises(TooSmall) as exc:
        eng.enable(m, sh, b, Kind.DEPENDENT)
    assert_names(exc, sh, "chunk")
    assert_unchanged(before)


def test_empty_master(eng, tmp_vol):
    m = tmp_vol(0, "m.img")
    sh = rand_vol(tmp_vol, MIB, "s.img", 2)
    b = rand_vol(tmp_vol, 64 * KIB, "b.img", 3)
    before = snap(sh, b)
    with pytest.raises(TooSmall) as exc:
        eng.enable(m, sh, b, Kind.DEPENDENT)
    assert "empty" in msg_of(exc)
    assert_names(exc, m)
    assert_unchanged(before)
    with pytest.raises(TooSmall):
        bitmap_size(0, MIB)


def test_overflow_too_small_names_the_size_needed(eng, tmp_vol):
    ov = rand_vol(tmp_vol, 8 * KIB, "ov.img", 5)
    before = snap(ov)
    with pytest.raises(TooSmall) as exc:
        eng.init_overflow(ov)
    assert_names(exc, ov)
    assert_unchanged(before)
    need = int(msg_of(exc).split("at least ")[1].split()[0])
    os.truncate(ov, need)   # the size the message asks for is enough
    o = eng.init_overflow(ov)
    assert o.status().chunks_total >= 1
    o.close()


# ---- InvalidArgument: chunk size and other arguments ------------------------------------------


BAD_CHUNKS = [1, 1000, 2048, 4095, 5000, 3 * 32768, 4096 + 512, 2 * MIB, 1 << 30]


@pytest.mark.parametrize("chunk", BAD_CHUNKS)
def test_chunk_size_not_power_of_two_or_out_of_range(eng, tmp_vol, chunk):
    m = rand_vol(tmp_vol, MIB, "m.img", 1)
    sh = rand_vol(tmp_vol, MIB, "s.img", 2)
    b = rand_vol(tmp_vol, MIB, "b.img", 3)
    ov = rand_vol(tmp_vol, MIB, "ov.img", 4)
    before = snap(m, sh, b, ov)
    for kind in (Kind.DEPENDENT, Kind.INDEPENDENT):
        with pytest.raises(InvalidArgument) as exc:
            eng.enable(m, sh, b, kind, chunk_size=chunk)
        assert_names(exc, chunk, "power of two")
    with pytest.raises(InvalidArgument) as exc:
        bitmap_size(MIB, MIB, chunk)
    assert_names(exc, chunk)
    with pytest.raises(InvalidArgument) as exc:
        eng.init_overflow(ov, chunk)
    assert_names(exc, chunk)
    assert_unchanged(before)
    for good in (4096, MIB):   # the limits themselves are allowed
        s = eng.enable(m, sh, b, Kind.DEPENDENT, chunk_size=good)
        assert s.status().chunk_size == good
        s.disable()


def test_sets_on_one_master_share_the_chunk_size(eng, tmp_vol):
    a, va = new_set(eng, tmp_vol, "a", chunk=32768)
    sh = rand_vol(tmp_vol, MIB, "b-shadow.img", 7)
    b = rand_vol(tmp_vol, bitmap_size(MIB, MIB, 65536), "b-bitmap.img", 8)
    before = snap(va.master, sh, b)
    with pytest.raises(InvalidArgument) as exc:
        eng.enable(va.master, sh, b, Kind.DEPENDENT, chunk_size=65536)
    assert_names(exc, va.master, 32768, 65536)
    assert_unchanged(before)
    assert_usable(a)
    s2 = eng.enable(va.master, sh, b, Kind.DEPENDENT, chunk_size=32768)
    assert_usable(s2, 8192)


def test_invalid_kind(eng, tmp_vol):
    v = Vols(tmp_vol, "a")
    before = snap(*v.all())
    with pytest.raises(InvalidArgument) as exc:
        eng.enable(v.master, v.shadow, v.bitmap, 7)  # type: ignore[arg-type]
    assert_names(exc, 7)
    assert_unchanged(before)


def test_copy_params_out_of_range(eng, tmp_vol):
    s, v = new_set(eng, tmp_vol)
    st = s.status()
    before = snap(v.bitmap)
    for delay, units in ((0, 0), (60001, 1), (1, (1 << 24) + 1)):
        with pytest.raises(InvalidArgument) as exc:
            s.set_copy_params(delay, units)
        assert "copy" in msg_of(exc)
    assert_unchanged(before)
    assert (s.status().copy_delay_ms, s.status().copy_units) == (st.copy_delay_ms, st.copy_units)
    s.set_copy_params(60000, 1 << 24)


def test_bits_of_an_unknown_bitmap(eng, tmp_vol):
    s, _ = new_set(eng, tmp_vol)
    with pytest.raises(InvalidArgument) as exc:
        s.bits("other")
    assert_names(exc, "shadow", "copy")


def test_group_copy_arguments(eng, tmp_vol):
    a, _ = new_set(eng, tmp_vol, "a")
    with pytest.raises(InvalidArgument):
        eng.group_copy([], Direction.TO_SHADOW)
    with pytest.raises(InvalidArgument) as exc:
        eng.group_copy([a], 5)  # type: ignore[arg-type]
    assert_names(exc, 5)
    assert a.status().copy_chunks == 0
    assert_usable(a)


NAMED_TWICE = """
import sys
from ptcopy.engine import Direction, Engine, InvalidArgument, Kind, Side
m, s, b = sys.argv[1:4]
with Engine() as eng:
    a = eng.enable(m, s, b, Kind.DEPENDENT)
    try:
        eng.group_copy([a, a], Direction.TO_SHADOW)
    except InvalidArgument as exc:
        print("REFUSED", exc)
    a.write(Side.MASTER, 0, b"still usable")
    assert a.read(Side.MASTER, 0, 12) == b"still usable"
    print("USABLE")
"""


def test_group_copy_naming_a_set_twice(tmp_vol):
    # In a child process: a memory error in the engine must fail this test, not kill the run.
    v = Vols(tmp_vol, "a")
    proc = subprocess.run([sys.executable, "-c", NAMED_TWICE, *map(str, v.all())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"the child died ({proc.returncode}):\n{proc.stderr[-3000:]}"
    refused = [ln for ln in proc.stdout.splitlines() if ln.startswith("REFUSED")]
    assert refused, f"group_copy([a, a]) was not refused: {proc.stdout!r}"
    assert str(v.shadow) in refused[0] and "twice" in refused[0], refused[0]
    assert "USABLE" in proc.stdout


# ---- BadHeader --------------------------------------------------------------------------------


def closed_set(tmp_vol: MakeVol, **kw: object) -> Vols:
    """A set enabled, written to and closed cleanly; its volumes stay behind."""
    with Engine() as e:
        s, v = new_set(e, tmp_vol, **kw)  # type: ignore[arg-type]
        s.write(Side.MASTER, 5000, b"after the point in time" * 100)
        s.close()
    return v


def check_reopens(v: Vols) -> None:
    """The set behind ``v`` still opens and still shows its point in time."""
    with Engine() as e:
        s = v.open(e)
        assert read_all(s, Side.SHADOW) == v.image
        s.close()


def test_open_empty_bitmap(eng, tmp_vol):
    v = Vols(tmp_vol, "a")
    v.bitmap.write_bytes(bytes(v.bitmap.stat().st_size))
    before = snap(*v.all())
    with pytest.raises(BadHeaderError) as exc:
        v.open(eng)
    assert_names(exc, v.bitmap, "empty")
    assert_unchanged(before)   # opening never initialises a bitmap


def test_open_foreign_bitmap(eng, tmp_vol):
    v = Vols(tmp_vol, "a")   # its bitmap volume holds random bytes
    before = snap(*v.all())
    with pytest.raises(BadHeaderError) as exc:
        v.open(eng)
    assert_names(exc, v.bitmap, "not a ptcopy bitmap")
    assert_unchanged(before)


def test_open_bitmap_smaller_than_a_header(eng, tmp_vol):
    v = Vols(tmp_vol, "a")
    os.truncate(v.bitmap, 100)
    before = snap(*v.all())
    with pytest.raises(BadHeaderError) as exc:
        v.open(eng)
    assert_names(exc, v.bitmap)
    assert_unchanged(before)


@pytest.mark.parametrize("offset,why", [
    (0, "not a ptcopy bitmap"), (7, "not a ptcopy bitmap"), (8, "version"),
    (16, "checksum"), (33, "checksum"), (44, "checksum"), (57, "checksum"), (200, "checksum"),
    (4091, "checksum"), (4094, "checksum"),
])
def test_open_bitmap_with_a_flipped_header_byte(eng, tmp_vol, offset, why):
    v = closed_set(tmp_vol)
    with v.bitmap.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))
    before = snap(*v.all())
    with pytest.raises(BadHeaderError) as exc:
        v.open(eng)
    assert_names(exc, v.bitmap, why)
    assert_unchanged(before)
    with v.bitmap.open("r+b") as f:   # put it back: the set was not touched
        f.seek(offset)
        f.write(bytes([byte]))
    check_reopens(v)


def test_open_truncated_bitmap(eng, tmp_vol):
    v = closed_set(tmp_vol)
    os.truncate(v.bitmap, 4096 + 100)
    before = snap(*v.all())
    with pytest.raises(BadHeaderError) as exc:
        v.open(eng)
    assert_names(exc, v.bitmap, "truncated")
    assert_unchanged(before)


def test_open_bitmap_of_a_disabled_set(eng, tmp_vol):
    s, v = new_set(eng, tmp_vol)
    s.disable()
    before = snap(*v.all())
    with pytest.raises(BadHeaderError) as exc:
        v.open(eng)
    assert_names(exc, v.bitmap, "disabled")
    assert_unchanged(before)
    with pytest.raises(BadHeaderError):   # and again: the failed open changed nothing
        v.open(eng)


def test_open_overflow_on_a_volume_that_is_not_one(eng, tmp_vol):
    for i, zeros in enumerate((True, False)):   # an empty volume, a volume of random bytes
        p = rand_vol(tmp_vol, MIB, f"ov{i}.img", i)
        if zeros:
            p.write_bytes(bytes(MIB))
        before = snap(p)
        with pytest.raises(BadHeaderError) as exc:
            eng.open_overflow(p)
        assert_names(exc, p, "bad overflow magic")
        assert_unchanged(before)
    v = closed_set(tmp_vol)   # a set's bitmap volume is not an overflow volume either
    before = snap(v.bitmap)
    with pytest.raises(BadHeaderError) as exc:
        eng.open_overflow(v.bitmap)
    assert_names(exc, v.bitmap, "bad overflow magic")
    assert_unchanged(before)
    check_reopens(v)


def test_open_overflow_with_a_flipped_header_byte(eng, tmp_vol):
    p = tmp_vol(4 * MIB, "ov.img")
    eng.init_overflow(p).close()
    with p.open("r+b") as f:
        f.seek(40)
        byte = f.read(1)[0]
        f.seek(40)
        f.write(bytes([byte ^ 1]))
    before = snap(p)
    with pytest.raises(BadHeaderError) as exc:
        eng.open_overflow(p)
    assert_names(exc, p, "checksum")
    assert_unchanged(before)


def test_open_overflow_smaller_than_a_header(eng, tmp_vol):
    p = rand_vol(tmp_vol, 100, "ov.img", 1)
    before = snap(p)
    with pytest.raises(BadHeaderError) as exc:
        eng.open_overflow(p)
    assert_names(exc, p)
    assert_unchanged(before)


# ---- SizeMismatch -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["other master", "master grew", "master shrank", "shadow shrank"])
def test_reopen_with_volumes_of_another_size(eng, tmp_vol, how):
    v = closed_set(tmp_vol)
    master, shadow = v.master, v.shadow
    if how == "other master":
        master = rand_vol(tmp_vol, 2 * MIB, "other-master.img", 9)
    elif how == "master grew":
        saved = master.read_bytes()
        os.truncate(master, MIB + 4096)
    elif how == "master shrank":
        saved = master.read_bytes()
        os.truncate(master, MIB - 4096)
    else:
        saved = shadow.read_bytes()
        os.truncate(shadow, MIB - 4096)
    before = snap(master, shadow, v.bitmap)
    with pytest.raises(SizeMismatch) as exc:
        eng.open(master, shadow, v.bitmap)
    assert_names(exc, v.bitmap, MIB)
    assert_unchanged(before)
    if how == "shadow shrank":
        shadow.write_bytes(saved)
    elif how != "other master":
        master.write_bytes(saved)
    check_reopens(v)


# ---- SameVolume -------------------------------------------------------------------------------


def test_same_volume_twice_in_a_set(eng, tmp_vol):
    v = Vols(tmp_vol, "a")
    link = v.shadow.with_name("shadow-link.img")
    os.link(v.shadow, link)
    before = snap(*v.all())
    cases = [
        ((v.master, v.master, v.bitmap), ("master and shadow", v.master)),
        ((v.master, v.shadow, v.shadow), ("shadow and bitmap", v.shadow)),
        ((v.master, v.shadow, v.master), ("master and bitmap", v.master)),
        ((v.master, v.shadow, link), ("shadow and bitmap", link)),   # a hard link
    ]
    for vols, needles in cases:
        for kind in (Kind.DEPENDENT, Kind.INDEPENDENT):
            with pytest.raises(SameVolume) as exc:
                eng.enable(*vols, kind)
            assert_names(exc, *needles)
        with pytest.raises(SameVolume) as exc:
            eng.open(*vols)
        assert_names(exc, *needles)
    fd = os.open(v.master, os.O_RDWR)   # the same file by descriptor
    try:
        with pytest.raises(SameVolume) as exc:
            eng.enable(v.master, fd, v.bitmap, Kind.DEPENDENT)
        assert_names(exc, "master and shadow")
    finally:
        os.close(fd)
    assert_unchanged(before)
    s = v.enable(eng)   # nothing stayed registered
    assert_usable(s)


def test_overflow_volume_given_as_a_set_volume(eng, tmp_vol):
    v = Vols(tmp_vol, "a", shadow_size=MIB // 2)
    ovp = tmp_vol(4 * MIB, "ov.img")
    ov = eng.init_overflow(ovp)
    before = snap(*v.all(), ovp)
    with pytest.raises(SameVolume) as exc:
        eng.enable(v.master, ovp, v.bitmap, Kind.DEPENDENT, overflow=ov)
    assert_names(exc, ovp, "overflow")
    with pytest.raises(InUse) as exc:   # open in the engine, though not given to this call
        eng.enable(v.master, v.shadow, ovp, Kind.DEPENDENT)
    assert_names(exc, ovp, "overflow")
    assert_unchanged(before)
    assert ov.status().sets == ()
    s = eng.enable(v.master, v.shadow, v.bitmap, Kind.DEPENDENT, overflow=ov)
    assert ov.status().sets == (s.status().uuid,)


# ---- InUse ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role_a,role_b", [
    ("shadow", "shadow"), ("shadow", "bitmap"), ("bitmap", "shadow"), ("bitmap", "bitmap"),
    ("master", "shadow"), ("master", "bitmap"), ("shadow", "master"),
])
def test_volume_of_another_set(eng, tmp_vol, role_a, role_b):
    a, va = new_set(eng, tmp_vol, "a")
    vb = Vols(tmp_vol, "b", seed=10)
    taken = getattr(va, role_a)
    vols = {"master": vb.master, "shadow": vb.shadow, "bitmap": vb.bitmap, role_b: taken}
    before = snap(*va.all(), *vb.all())
    with pytest.raises(InUse) as exc:
        eng.enable(vols["master"], vols["shadow"], vols["bitmap"], Kind.DEPENDENT)
    assert_names(exc, taken, f"the {role_a} of set {va.shadow}")
    assert_unchanged(before)
    assert_usable(a)
    assert read_all(a, Side.SHADOW) == va.image


def test_open_a_set_that_is_already_open(eng, tmp_vol):
    a, va = new_set(eng, tmp_vol, "a")
    before = snap(*va.all())
    with pytest.raises(InUse) as exc:
        va.open(eng)
    assert_names(exc, va.shadow)
    assert_unchanged(before)
    assert_usable(a)


def test_overflow_on_a_volume_of_a_set(eng, tmp_vol):
    a, va = new_set(eng, tmp_vol, "a")
    for p in va.all():
        before = snap(p)
        with pytest.raises(InUse) as exc:
            eng.init_overflow(p)
        assert_names(exc, p)
        assert_unchanged(before)
    assert_usable(a)


def test_overflow_opened_twice_and_closed_while_used(eng, tmp_vol):
    ovp = tmp_vol(4 * MIB, "ov.img")
    ov = eng.init_overflow(ovp)
    with pytest.raises(InUse) as exc:
        eng.open_overflow(ovp)
    assert_names(exc, ovp)
    s, _ = new_set(eng, tmp_vol, "a", shadow_size=MIB // 2)
    s.attach_overflow(ov)
    with pytest.raises(InUse) as exc:
        ov.close()
    assert_names(exc, ovp)
    assert not ov.closed
    assert ov.status().sets == (s.status().uuid,)
    assert_usable(s)


def test_second_overflow_on_a_set(eng, tmp_vol):
    ov1 = eng.init_overflow(tmp_vol(4 * MIB, "ov1.img"))
    ov2p = tmp_vol(4 * MIB, "ov2.img")
    ov2 = eng.init_overflow(ov2p)
    s, v = new_set(eng, tmp_vol, "a", shadow_size=MIB // 2)
    s.attach_overflow(ov1)
    before = snap(v.bitmap, ov2p)
    with pytest.raises(InUse) as exc:
        s.attach_overflow(ov2)
    assert_names(exc, v.shadow, "already has an overflow")
    assert_unchanged(before)
    assert s.status().overflow_uuid == ov1.status().uuid
    assert ov2.status().sets == ()


def test_lock_held_by_another_owner(eng, tmp_vol):
    s, v = new_set(eng, tmp_vol, kind=Kind.INDEPENDENT)
    s.lock(111)
    s.lock(111)   # the owner may take it again
    s.write(Side.MASTER, 0, b"x" * 100)
    st = s.status()
    before = snap(*v.all())
    for call in (lambda: s.copy(Direction.TO_SHADOW, owner=222),
                 lambda: s.update(Direction.TO_SHADOW, owner=222),
                 lambda: s.update(Direction.TO_MASTER),
                 lambda: s.reset(owner=222),
                 lambda: eng.group_copy([s], Direction.TO_SHADOW, owner=222),
                 lambda: s.lock(222),
                 lambda: s.unlock(222)):
        with pytest.raises(InUse) as exc:
            call()
        assert_names(exc, v.shadow, 111)
    assert_unchanged(before)
    st2 = s.status()
    assert st2.lock_owner == 111
    assert st2.diff_chunks == st.diff_chunks and not st2.flags & Flag.COPYING
    s.update(Direction.TO_SHADOW, owner=111)   # the owner may copy
    assert s.wait(timeout=30)
    s.unlock(111)
    s.update(Direction.TO_SHADOW, owner=222)
    assert s.wait(timeout=30)
    with pytest.raises(InvalidArgument):   # a lock needs an owner
        s.lock(0)


def test_group_copy_is_all_or_nothing(eng, tmp_vol):
    a, va = new_set(eng, tmp_vol, "a", kind=Kind.INDEPENDENT)
    b, vb = new_set(eng, tmp_vol, "b", kind=Kind.INDEPENDENT, seed=10)
    a.write(Side.MASTER, 0, b"a" * 100)
    b.write(Side.MASTER, 0, b"b" * 100)
    b.lock(5)
    before = snap(*va.all(), *vb.all())
    bits_a, bits_b = a.bits(), b.bits()
    with pytest.raises(InUse) as exc:
        eng.group_copy([a, b], Direction.TO_SHADOW, owner=6)
    assert_names(exc, vb.shadow)
    assert_unchanged(before)
    assert (a.bits(), b.bits()) == (bits_a, bits_b)
    assert not (a.status().flags | b.status().flags) & Flag.COPYING


# ---- CopyInProgress ---------------------------------------------------------------------------


def test_second_copy_while_one_runs(eng, tmp_vol):
    s, v = throttled_independent(eng, tmp_vol)
    other, _ = new_set(eng, tmp_vol, "b", kind=Kind.INDEPENDENT, seed=20)
    other.write(Side.MASTER, 0, b"o" * 100)
    other_bits = other.bits()
    before = snap(v.master)
    for call in (lambda: s.copy(Direction.TO_SHADOW), lambda: s.update(Direction.TO_SHADOW),
                 lambda: s.copy(Direction.TO_MASTER), lambda: s.update(Direction.TO_MASTER),
                 lambda: eng.group_copy([other, s], Direction.TO_SHADOW),
                 s.reset, s.disable):
        with pytest.raises(CopyInProgress) as exc:
            call()
        assert_names(exc, v.shadow)
        st = s.status()
        assert st.flags & Flag.COPYING and not st.flags & Flag.TO_MASTER
    assert other.bits() == other_bits and not other.status().flags & Flag.COPYING
    assert_unchanged(before)
    assert not s.closed
    finish_copy(s)
    assert v.shadow.read_bytes() == v.master.read_bytes() == v.image


# ---- WrongKind --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [Kind.INDEPENDENT, Kind.DEPENDENT])
def test_attach_overflow_to_a_set_that_is_not_compact(eng, tmp_vol, kind):
    ovp = tmp_vol(4 * MIB, "ov.img")
    ov = eng.init_overflow(ovp)
    s, v = new_set(eng, tmp_vol, kind=kind)
    before = snap(*v.all(), ovp)
    with pytest.raises(WrongKind) as exc:
        s.attach_overflow(ov)
    assert_names(exc, v.shadow, "compact")
    assert_unchanged(before)
    assert s.status().overflow_uuid is None and s.overflow is None
    assert ov.status().sets == ()
    assert_usable(s)


def test_enable_with_overflow_a_set_that_is_not_compact(eng, tmp_vol):
    ovp = tmp_vol(4 * MIB, "ov.img")
    ov = eng.init_overflow(ovp)
    v = Vols(tmp_vol, "a")
    before = snap(*v.all(), ovp)
    with pytest.raises(WrongKind) as exc:
        eng.enable(v.master, v.shadow, v.bitmap, Kind.DEPENDENT, overflow=ov)
    assert "compact" in msg_of(exc)
    assert ov.status().sets == ()
    assert_unchanged(before)   # a refused enable leaves the bitmap volume alone
    with pytest.raises(BadHeaderError):   # and leaves no set behind that could be opened
        v.open(eng)
    assert_names(exc, v.shadow)


def test_enable_with_an_overflow_of_another_chunk_size(eng, tmp_vol):
    ovp = tmp_vol(4 * MIB, "ov.img")
    ov = eng.init_overflow(ovp, 65536)
    v = Vols(tmp_vol, "a", shadow_size=MIB // 2)
    before = snap(*v.all(), ovp)
    with pytest.raises(InvalidArgument) as exc:
        eng.enable(v.master, v.shadow, v.bitmap, Kind.DEPENDENT, overflow=ov)
    assert_names(exc, ovp, 65536, CHUNK)
    assert ov.status().sets == ()
    assert_unchanged(before)   # a refused enable leaves the bitmap volume alone
    with pytest.raises(BadHeaderError):
        v.open(eng)
    s = eng.enable(v.master, v.shadow, v.bitmap, Kind.DEPENDENT, chunk_size=65536, overflow=ov)
    assert ov.status().sets == (s.status().uuid,)


# ---- Dependency -------------------------------------------------------------------------------


def spilled_set(eng: Engine, tmp_vol: MakeVol) -> tuple[Set, Vols, Path]:
    """A compact dependent set (4 chunks, room for 1 on the shadow) with 2 chunks on its
    overflow volume."""
    ovp = tmp_vol(4 * MIB, "ov.img")
    ov = eng.init_overflow(ovp)
    s, v = new_set(eng, tmp_vol, size=4 * CHUNK, shadow_size=CHUNK)
    s.attach_overflow(ov)
    for c in range(3):
        s.write(Side.MASTER, c * CHUNK + 10, b"new" * 10)
    st = s.status()
    assert st.overflow_used == 2 and st.flags & Flag.SPILLED
    return s, v, ovp


def test_detach_overflow_that_holds_chunks(eng, tmp_vol):
    s, v, ovp = spilled_set(eng, tmp_vol)
    ov = s.overflow
    assert ov is not None
    before = snap(*v.all(), ovp)
    with pytest.raises(Dependency) as exc:
        s.detach_overflow()
    assert_names(exc, ovp, v.shadow, "2 chunk")
    assert_unchanged(before)
    st = s.status()
    assert st.overflow_uuid == ov.status().uuid and st.overflow_used == 2
    assert s.overflow is ov
    assert read_all(s, Side.SHADOW) == v.image
    s.update(Direction.TO_SHADOW)   # a new point in time frees the chunks: now it may go
    s.detach_overflow()
    assert s.status().overflow_uuid is None


def test_delete_overflow_with_sets_attached(eng, tmp_vol):
    s, v, ovp = spilled_set(eng, tmp_vol)
    ov = s.overflow
    assert ov is not None
    before = snap(ovp)
    with pytest.raises(Dependency) as exc:
        ov.delete()
    assert_names(exc, ovp, "1 set")
    assert_unchanged(before)
    assert not ov.closed
    assert read_all(s, Side.SHADOW) == v.image


@pytest.mark.parametrize("how", ["copy", "update", "group"])
def test_restore_to_a_master_with_two_shadows(eng, tmp_vol, how):
    a, va = new_set(eng, tmp_vol, "a", kind=Kind.INDEPENDENT)
    sh = rand_vol(tmp_vol, MIB, "b-shadow.img", 30)
    b = eng.enable(va.master, sh, tmp_vol(bitmap_size(MIB, MIB), "b-bitmap.img"), Kind.DEPENDENT)
    a.write(Side.SHADOW, 0, b"restore me" * 100)
    before = snap(va.master, va.shadow, sh)
    with pytest.raises(Dependency) as exc:
        if how == "copy":
            a.copy(Direction.TO_MASTER)
        elif how == "update":
            a.update(Direction.TO_MASTER)
        else:
            eng.group_copy([a, b], Direction.TO_MASTER)
    assert_names(exc, va.master, "2 shadows")
    assert_unchanged(before)
    assert not (a.status().flags | b.status().flags) & Flag.COPYING
    assert read_all(b, Side.SHADOW) == va.image
    assert_usable(a)
    assert_usable(b, 4096)


# ---- Offline ----------------------------------------------------------------------------------


def test_shadow_offline_after_an_io_error(eng, tmp_vol):
    s, v = new_set(eng, tmp_vol, kind=Kind.INDEPENDENT)
    s.inject_error(VolumeRole.SHADOW)
    with pytest.raises(VolumeIOError) as exc:
        s.write(Side.SHADOW, 0, b"s" * 100)
    assert_names(exc, v.shadow)
    assert s.status().flags & Flag.SHADOW_OFFLINE
    for call in (lambda: s.read(Side.SHADOW, 0, 10), lambda: s.write(Side.SHADOW, 0, b"x")):
        with pytest.raises(Offline) as exc:
            call()
        assert_names(exc, v.shadow, "offline")
    with pytest.raises(Offline) as exc:
        s.update(Direction.TO_SHADOW)
    assert_names(exc, v.shadow, "offline")
    # a master write never fails because of the shadow side
    s.write(Side.MASTER, 100, b"m" * 100)
    assert s.read(Side.MASTER, 100, 100) == b"m" * 100
    with pytest.raises(Offline) as exc:   # still failing: reset refuses
        s.reset()
    assert_names(exc, v.shadow, "still fails")
    assert s.status().flags & Flag.SHADOW_OFFLINE
    s.inject_error(VolumeRole.SHADOW, False)
    s.reset()   # full resync to the shadow
    assert s.wait(timeout=30)
    assert not s.status().flags & Flag.SHADOW_OFFLINE
    assert v.shadow.read_bytes() == v.master.read_bytes()


def test_dependent_shadow_offline_when_the_master_fails(eng, tmp_vol):
    s, v = new_set(eng, tmp_vol)
    before = snap(*v.all())
    s.inject_error(VolumeRole.MASTER)
    # the failing write: an I/O error, or the offline state it caused
    with pytest.raises((VolumeIOError, Offline)) as exc:
        s.write(Side.MASTER, 0, b"m" * 100)
    assert_names(exc, "master", v.shadow)
    st = s.status()
    assert st.flags & Flag.MASTER_OFFLINE and st.flags & Flag.SHADOW_OFFLINE
    for side, name in ((Side.MASTER, "master"), (Side.SHADOW, "shadow")):
        with pytest.raises(Offline) as exc:
            s.read(side, 0, 10)
        assert_names(exc, name, v.shadow, "offline")
    s.inject_error(VolumeRole.MASTER, False)
    assert_unchanged({v.master: before[v.master]})   # the failed write wrote nothing
    s.reset()
    assert s.wait(timeout=30)
    assert not s.status().flags & (Flag.MASTER_OFFLINE | Flag.SHADOW_OFFLINE)
    assert read_all(s, Side.SHADOW) == read_all(s, Side.MASTER) == v.image


def test_offline_is_remembered_across_a_reopen(eng, tmp_vol):
    """The bitmap volume fails: the master write still goes ahead (the master never fails because
    of the shadow side), the shadow goes offline since its point in time can no longer be kept.
    After the failure clears and the set is closed and reopened, the shadow must not be served as
    if it were still the point in time: it stays offline (needs a reset) or shows the PIT."""
    s, v = new_set(eng, tmp_vol)
    s.inject_error(VolumeRole.BITMAP)
    new = b"after the point in time" * 100
    s.write(Side.MASTER, 0, new)
    st = s.status()
    assert st.flags & Flag.BITMAP_OFFLINE and st.flags & Flag.SHADOW_OFFLINE
    with pytest.raises(Offline) as exc:
        s.read(Side.SHADOW, 0, 10)
    assert_names(exc, v.shadow, "offline")
    s.inject_error(VolumeRole.BITMAP, False)
    with contextlib.suppress(VolumeIOError):   # the bitmap is still marked offline: no flush
        s.close()
    assert s.closed
    s = v.open(eng)
    assert s.read(Side.MASTER, 0, len(new)) == new
    try:
        shadow = read_all(s, Side.SHADOW)
    except Offline:
        return   # remembered: a reset is needed first
    assert shadow == v.image, \
        "after the bitmap failed and the set was reopened, the shadow is served online but " \
        "no longer shows its point in time"


# ---- OutOfSpace -------------------------------------------------------------------------------


def test_compact_shadow_out_of_space(eng, tmp_vol):
    s, v = new_set(eng, tmp_vol, size=4 * CHUNK, shadow_size=CHUNK)
    s.write(Side.MASTER, 0, b"0" * 100)   # takes the one slot
    s.write(Side.MASTER, CHUNK, b"1" * 100)   # no room: the master write still goes ahead
    st = s.status()
    assert st.flags & Flag.OUT_OF_SPACE and st.lost_chunks == 1
    assert s.read(Side.MASTER, CHUNK, 100) == b"1" * 100
    with pytest.raises(OutOfSpace) as exc:
        s.read(Side.SHADOW, CHUNK, 10)
    assert_names(exc, v.shadow, "out of space")
    assert s.read(Side.SHADOW, 0, CHUNK) == v.image[:CHUNK]
    assert s.read(Side.SHADOW, 2 * CHUNK, 2 * CHUNK) == v.image[2 * CHUNK:]
    master_img = read_all(s, Side.MASTER)
    before = snap(*v.all())
    with pytest.raises(OutOfSpace) as exc:   # a shadow write needing a new chunk fails
        s.write(Side.SHADOW, 2 * CHUNK, b"s" * 10)
    assert_names(exc, v.shadow)
    with pytest.raises(OutOfSpace) as exc:   # a shadow that lost chunks is no source
        s.update(Direction.TO_MASTER)
    assert_names(exc, v.shadow, "out of space")
    assert_unchanged(before)
    assert s.read(Side.SHADOW, 2 * CHUNK, 2 * CHUNK) == v.image[2 * CHUNK:]
    assert read_all(s, Side.MASTER) == master_img
    s.update(Direction.TO_SHADOW)   # a new point in time clears the condition
    st = s.status()
    assert not st.flags & Flag.OUT_OF_SPACE and st.lost_chunks == 0
    assert read_all(s, Side.SHADOW) == master_img


# ---- NotLocked, NoCopy, Incomplete, wait ------------------------------------------------------


def test_unlock_without_lock(eng, tmp_vol):
    s, v = new_set(eng, tmp_vol)
    for owner in (0, 7):
        with pytest.raises(NotLocked) as exc:
            s.unlock(owner)
        assert_names(exc, v.shadow, "not locked")
    assert s.status().lock_owner == 0
    assert_usable(s)


def test_abort_with_no_copy(eng, tmp_vol):
    s, v = new_set(eng, tmp_vol, kind=Kind.INDEPENDENT)   # its initial copy is over
    for _ in range(2):
        with pytest.raises(NoCopy) as exc:
            s.abort()
        assert_names(exc, v.shadow, "no copy")
    st = s.status()
    assert not st.flags & (Flag.INCOMPLETE | Flag.ABORT_REQUESTED | Flag.COPYING)
    d, _ = new_set(eng, tmp_vol, "d", seed=40)
    with pytest.raises(NoCopy):
        d.abort()
    assert_usable(s)


def test_copy_to_master_from_an_incomplete_shadow(eng, tmp_vol):
    s, v = throttled_independent(eng, tmp_vol)
    s.abort()
    st = s.status()
    assert st.flags & Flag.INCOMPLETE and not st.flags & Flag.COPYING
    before = snap(v.master)
    for call in (lambda: s.copy(Direction.TO_MASTER), lambda: s.update(Direction.TO_MASTER)):
        with pytest.raises(Incomplete) as exc:
            call()
        assert_names(exc, v.shadow, "incomplete")
    assert_unchanged(before)
    assert read_all(s, Side.MASTER) == v.image
    s.set_copy_params(0, 256)
    s.update(Direction.TO_SHADOW)   # finishes the job
    assert s.wait(timeout=30)
    assert not s.status().flags & Flag.INCOMPLETE
    assert v.shadow.read_bytes() == v.image
    s.update(Direction.TO_MASTER)   # allowed again
    assert s.wait(timeout=30)


def test_copy_to_shadow_from_an_incomplete_master(eng, tmp_vol):
    s, v = new_set(eng, tmp_vol, kind=Kind.INDEPENDENT, size=4 * MIB)
    s.write(Side.SHADOW, 0, b"restore" * 1000)
    s.set_copy_params(300, 1)
    s.copy(Direction.TO_MASTER)
    s.abort()
    st = s.status()
    assert st.flags & Flag.INCOMPLETE
    before = snap(v.shadow)
    for call in (lambda: s.copy(Direction.TO_SHADOW), lambda: s.update(Direction.TO_SHADOW)):
        with pytest.raises(Incomplete) as exc:
            call()
        assert_names(exc, v.shadow, "incomplete")
    assert_unchanged(before)
    s.set_copy_params(0, 256)
    s.update(Direction.TO_MASTER)
    assert s.wait(timeout=30)
    assert not s.status().flags & Flag.INCOMPLETE
    assert v.master.read_bytes() == v.shadow.read_bytes()


def test_wait_timeout_returns_false(eng, tmp_vol):
    s, v = throttled_independent(eng, tmp_vol)
    assert s.wait(timeout=0.01) is False
    assert s.wait(timeout=0) is False
    assert s.status().flags & Flag.COPYING
    assert s.progress().active
    finish_copy(s)
    assert s.wait(timeout=0) is True   # nothing runs: returns at once
    assert v.shadow.read_bytes() == v.image


# ---- I/O arguments ----------------------------------------------------------------------------


def test_read_and_write_beyond_the_end(eng, tmp_vol):
    s, v = new_set(eng, tmp_vol)
    size = v.size
    before = snap(*v.all())
    for side in (Side.MASTER, Side.SHADOW):
        for off, n in ((size - 10, 11), (size, 1), (size + 4096, 10), (0, size + 1)):
            with pytest.raises(InvalidArgument) as exc:
                s.read(side, off, n)
            assert_names(exc, v.shadow, "beyond the end", off)
            with pytest.raises(InvalidArgument) as exc:
                s.write(side, off, b"z" * n)
            assert_names(exc, v.shadow, "beyond the end", off)
        with pytest.raises(InvalidArgument):
            s.read(side, -1, 10)
        with pytest.raises(InvalidArgument):
            s.write(side, -1, b"z")
        assert s.read(side, size, 0) == b""
    assert_unchanged(before)
    assert s.status().diff_chunks == 0
    assert_usable(s, size - 4096)


def test_invalid_side(eng, tmp_vol):
    s, v = new_set(eng, tmp_vol)
    before = snap(*v.all())
    for side in (2, -1, 7):
        with pytest.raises(InvalidArgument) as exc:
            s.read(side, 0, 10)  # type: ignore[arg-type]
        assert_names(exc, f"side {side}")
        with pytest.raises(InvalidArgument) as exc:
            s.write(side, 0, b"x")  # type: ignore[arg-type]
        assert_names(exc, f"side {side}")
    for direction in (2, -1):
        with pytest.raises(InvalidArgument) as exc:
            s.copy(direction)  # type: ignore[arg-type]
        assert_names(exc, f"direction {direction}")
    assert_unchanged(before)
    assert s.status().diff_chunks == 0
    assert_usable(s)


# ---- NotFound, not a volume -------------------------------------------------------------------


@pytest.mark.parametrize("role", ["master", "shadow", "bitmap"])
def test_nonexistent_volume(eng, tmp_vol, tmp_path, role):
    v = Vols(tmp_vol, "a")
    missing = tmp_path / "no-such-volume.img"
    vols = {"master": v.master, "shadow": v.shadow, "bitmap": v.bitmap, role: missing}
    before = snap(*v.all())
    with pytest.raises(NotFound) as exc:
        eng.enable(vols["master"], vols["shadow"], vols["bitmap"], Kind.DEPENDENT)
    assert_names(exc, missing, role)
    with pytest.raises(NotFound) as exc:
        eng.open(vols["master"], vols["shadow"], vols["bitmap"])
    assert_names(exc, missing, role)
    assert_unchanged(before)
    assert not missing.exists()
    assert_usable(v.enable(eng))


def test_nonexistent_overflow_volume(eng, tmp_path):
    missing = tmp_path / "no-such-overflow.img"
    for call in (eng.init_overflow, eng.open_overflow):
        with pytest.raises(NotFound) as exc:
            call(missing)
        assert_names(exc, missing)
    assert not missing.exists()


def test_detach_overflow_when_none_is_attached(eng, tmp_vol):
    s, v = new_set(eng, tmp_vol, shadow_size=MIB // 2)
    before = snap(*v.all())
    with pytest.raises(NotFound) as exc:
        s.detach_overflow()
    assert_names(exc, v.shadow, "no overflow")
    assert_unchanged(before)
    assert_usable(s)


@pytest.mark.parametrize("what", ["directory", "fifo", "char device"])
@pytest.mark.parametrize("role", ["master", "shadow", "bitmap"])
def test_not_a_file_or_block_device(eng, tmp_vol, tmp_path, role, what):
    v = Vols(tmp_vol, "a")
    if what == "directory":
        odd = tmp_path / "a-directory"
        odd.mkdir()
    elif what == "fifo":
        odd = tmp_path / "a-fifo"
        os.mkfifo(odd)
    else:
        odd = Path("/dev/null")
    vols = {"master": v.master, "shadow": v.shadow, "bitmap": v.bitmap, role: odd}
    before = snap(*v.all())
    with pytest.raises(InvalidArgument) as exc:
        eng.enable(vols["master"], vols["shadow"], vols["bitmap"], Kind.DEPENDENT)
    assert_names(exc, odd, role)
    assert_unchanged(before)
    assert_usable(v.enable(eng))


def test_overflow_on_a_directory(eng, tmp_path):
    d = tmp_path / "a-directory"
    d.mkdir()
    for call in (eng.init_overflow, eng.open_overflow):
        with pytest.raises(InvalidArgument) as exc:
            call(d)
        assert_names(exc, d)


# ---- overflow arguments -----------------------------------------------------------------------


def test_overflow_with_another_chunk_size(eng, tmp_vol):
    ovp = tmp_vol(4 * MIB, "ov.img")
    ov = eng.init_overflow(ovp, 65536)
    s, v = new_set(eng, tmp_vol, shadow_size=MIB // 2)
    before = snap(*v.all(), ovp)
    with pytest.raises(InvalidArgument) as exc:
        s.attach_overflow(ov)
    assert_names(exc, ovp, 65536, CHUNK)
    assert_unchanged(before)
    assert ov.status().sets == () and s.status().overflow_uuid is None
    assert_usable(s)


def test_reopen_with_the_wrong_overflow(eng, tmp_vol):
    ov1p, ov2p = tmp_vol(4 * MIB, "ov1.img"), tmp_vol(4 * MIB, "ov2.img")
    with Engine() as e:
        ov1 = e.init_overflow(ov1p)
        e.init_overflow(ov2p)
        s, v = new_set(e, tmp_vol, "a", shadow_size=MIB // 2)
        s.attach_overflow(ov1)
        _, v2 = new_set(e, tmp_vol, "b", shadow_size=MIB // 2, seed=50)
    ov2 = eng.open_overflow(ov2p)
    before = snap(*v.all(), *v2.all(), ov1p, ov2p)
    with pytest.raises(InvalidArgument) as exc:   # the header names ov1
        v.open(eng, overflow=ov2)
    assert_names(exc, v.shadow, ov2p)
    with pytest.raises(InvalidArgument) as exc:   # the header names none
        v2.open(eng, overflow=ov2)
    assert_names(exc, v2.shadow, ov2p)
    assert_unchanged(before)
    assert ov2.status().sets == ()
    ov1 = eng.open_overflow(ov1p)
    s = v.open(eng, overflow=ov1)
    assert read_all(s, Side.SHADOW) == v.image


# ---- closed objects ---------------------------------------------------------------------------


def set_calls(s: Set) -> list[Callable[[], object]]:
    return [
        lambda: s.read(Side.MASTER, 0, 10), lambda: s.write(Side.MASTER, 0, b"x"), s.flush,
        lambda: s.copy(Direction.TO_SHADOW), lambda: s.update(Direction.TO_SHADOW), s.abort,
        s.wait, s.progress, lambda: s.set_copy_params(0, 1), s.status, s.bits,
        lambda: s.lock(1), s.unlock, s.reset, s.detach_overflow, s.disable,
        lambda: s.inject_error(VolumeRole.SHADOW),
    ]


@pytest.mark.parametrize("how", ["close", "disable", "engine close"])
def test_closed_set_used_again(tmp_vol, how):
    e = Engine()
    s, v = new_set(e, tmp_vol)
    if how == "close":
        s.close()
    elif how == "disable":
        s.disable()
    else:
        e.close()
    assert s.closed
    before = snap(*v.all())
    for call in set_calls(s):
        with pytest.raises(InvalidArgument) as exc:
            call()
        assert "closed" in msg_of(exc)
    with pytest.raises(InvalidArgument):
        e.group_copy([s], Direction.TO_SHADOW)
    s.close()   # closing again is harmless
    assert_unchanged(before)
    if how == "engine close":
        with pytest.raises(InvalidArgument) as exc:
            v.open(e)
        assert "engine is closed" in msg_of(exc)
    else:
        e.close()


def test_closed_overflow_used_again(eng, tmp_vol):
    ovp = tmp_vol(4 * MIB, "ov.img")
    ov = eng.init_overflow(ovp)
    ov.close()
    s, _ = new_set(eng, tmp_vol, shadow_size=MIB // 2)
    for call in (ov.status, ov.delete, lambda: s.attach_overflow(ov)):
        with pytest.raises(InvalidArgument) as exc:
            call()
        assert "closed" in msg_of(exc)
    assert s.status().overflow_uuid is None
    ov = eng.open_overflow(ovp)   # the volume itself is fine
    s.attach_overflow(ov)
