"""Negative tests of the engine, state: a copy running (CopyInProgress), the wrong kind of set
(WrongKind), what depends on what (Dependency), failed volumes (Offline), a full compact shadow
(OutOfSpace), locks, aborts, incomplete copies and waits, objects used after they closed.

Each test asserts the exception class, that the message names the volume or set and the problem,
and that nothing changed: the volumes are byte-identical where the call could have touched them,
and the set (or engine) is still usable afterwards. The engine's promise (ptcopy_engine.h):
"When a pt_error is passed, it receives the code and a message that names the volume and the
problem. Nothing is half-changed when a call fails." Shared helpers: errors_common.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from ptcopy.engine import BadHeader as BadHeaderError
from ptcopy.engine import (
    CopyInProgress,
    Dependency,
    Direction,
    Engine,
    Flag,
    Incomplete,
    InvalidArgument,
    Kind,
    NoCopy,
    NotLocked,
    Offline,
    OutOfSpace,
    Set,
    Side,
    VolumeIOError,
    VolumeRole,
    WrongKind,
    bitmap_size,
)
from tests.engine.errors_common import (
    CHUNK,
    MIB,
    MakeVol,
    Vols,
    assert_names,
    assert_unchanged,
    assert_usable,
    finish_copy,
    msg_of,
    new_set,
    rand_vol,
    read_all,
    snap,
    throttled_independent,
)

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


@pytest.mark.parametrize("how", ["group", "kernel"])
def test_restore_to_a_master_with_two_shadows(eng, tmp_vol, how):
    """Refused, changing nothing: a group naming two shadows of one master (a master is restored
    from one of them), and on the kernel path (defer_copies) any restore with siblings."""
    a, va = new_set(eng, tmp_vol, "a", kind=Kind.INDEPENDENT)
    sh = rand_vol(tmp_vol, MIB, "b-shadow.img", 30)
    b = eng.enable(va.master, sh, tmp_vol(bitmap_size(MIB, MIB), "b-bitmap.img"), Kind.DEPENDENT)
    a.write(Side.SHADOW, 0, b"restore me" * 100)
    before = snap(va.master, va.shadow, sh)
    if how == "group":
        with pytest.raises(InvalidArgument) as exc:
            eng.group_copy([a, b], Direction.TO_MASTER)
        assert_names(exc, va.master, "one of its shadows only")
    else:
        eng.defer_copies(True)
        with pytest.raises(Dependency) as exc:
            a.update(Direction.TO_MASTER)
        assert_names(exc, va.master, "2 shadows", "kernel data path")
        eng.defer_copies(False)
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
