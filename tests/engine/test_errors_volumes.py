"""Negative tests of the engine, volumes: damaged or foreign headers (BadHeader), volumes of
another size (SizeMismatch), one volume in two roles (SameVolume), volumes held by another set
or owner (InUse).

Each test asserts the exception class, that the message names the volume or set and the problem,
and that nothing changed: the volumes are byte-identical where the call could have touched them,
and the set (or engine) is still usable afterwards. The engine's promise (ptcopy_engine.h):
"When a pt_error is passed, it receives the code and a message that names the volume and the
problem. Nothing is half-changed when a call fails." Shared helpers: errors_common.py.
"""

from __future__ import annotations

import os

import pytest

from ptcopy.engine import BadHeader as BadHeaderError
from ptcopy.engine import (
    Direction,
    Engine,
    Flag,
    InUse,
    InvalidArgument,
    Kind,
    SameVolume,
    Side,
    SizeMismatch,
)
from tests.engine.errors_common import (
    MIB,
    MakeVol,
    Vols,
    assert_names,
    assert_unchanged,
    assert_usable,
    new_set,
    rand_vol,
    read_all,
    snap,
)

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
