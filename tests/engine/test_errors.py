"""Negative tests of the engine, arguments: sizes (TooSmall), chunk sizes and other values
(InvalidArgument), I/O ranges and sides, volumes that do not exist or are no volume, overflow
arguments.

Each test asserts the exception class, that the message names the volume or set and the problem,
and that nothing changed: the volumes are byte-identical where the call could have touched them,
and the set (or engine) is still usable afterwards. The engine's promise (ptcopy_engine.h):
"When a pt_error is passed, it receives the code and a message that names the volume and the
problem. Nothing is half-changed when a call fails." Shared helpers: errors_common.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ptcopy.engine import (
    Direction,
    Engine,
    Flag,
    InvalidArgument,
    Kind,
    NotFound,
    Side,
    TooSmall,
    bitmap_size,
)
from tests.engine.errors_common import (
    CHUNK,
    MIB,
    Vols,
    assert_names,
    assert_unchanged,
    assert_usable,
    msg_of,
    new_set,
    rand_vol,
    read_all,
    snap,
)
from tests.helpers.names import KIB

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
