"""A group point in time held across calls (pt_group_hold / pt_group_release): writers frozen
in between, commit takes the hold's instant, abort and the timeout change nothing."""

from __future__ import annotations

import threading

import pytest

from ptcopy.engine import (
    Closed,
    Direction,
    Engine,
    Flag,
    Hold,
    InUse,
    InvalidArgument,
    Kind,
    PtcopyError,
    Set,
    Side,
    Timeout,
    VolumeRole,
)
from tests.engine.sets_common import C, Vols, heal, whole
from tests.helpers.names import MakeVol

BLOCKED = 0.3   # seconds a frozen writer is given to (wrongly) get through


def _sets(engine: Engine, tmp_vol: MakeVol, n: int = 2,
          kinds: tuple[Kind, ...] = (Kind.INDEPENDENT, Kind.DEPENDENT)) -> list[Set]:
    sets = [Vols(tmp_vol, kinds[i % len(kinds)], 4 * C, data_seed=i + 1).enable(engine)
            for i in range(n)]
    for s in sets:
        assert s.wait(5)
    return sets


class Writer:
    """One master write on its own thread; done is set once the engine returned it."""

    def __init__(self, s: Set, offset: int, data: bytes) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                s.write(Side.MASTER, offset, data)
            except BaseException as e:  # reported by finish()
                self.error = e
            self.done.set()

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def finish(self) -> None:
        assert self.done.wait(10), "the writer never got through"
        self.thread.join()
        assert self.error is None


def _state(s: Set) -> tuple[object, ...]:
    st = s.status()
    return (s.bits("shadow"), s.bits("copy"), st.flags, st.diff_chunks, st.copy_chunks,
            whole(s, Side.SHADOW), s.progress().active)


def test_commit_takes_the_instant_of_the_hold(engine: Engine, tmp_vol: MakeVol) -> None:
    sets = _sets(engine, tmp_vol)
    for s in sets:
        s.write(Side.MASTER, C + 5, b"before")
    hold = engine.group_hold(sets, Direction.TO_SHADOW, timeout=30)
    writers = [Writer(s, C + 5, b"after!") for s in sets]
    for w in writers:
        assert not w.done.wait(BLOCKED), "a master write got through the hold"
    frozen = hold.release(True)
    assert frozen > 0
    for w in writers:
        w.finish()
    for s in sets:
        assert s.wait(5)
        assert s.read(Side.SHADOW, C + 5, 6) == b"before"
        assert s.read(Side.MASTER, C + 5, 6) == b"after!"
    assert hold.released


def test_abort_changes_nothing(engine: Engine, tmp_vol: MakeVol) -> None:
    sets = _sets(engine, tmp_vol)
    for s in sets:
        s.write(Side.MASTER, 2 * C, b"changed")
    before = [_state(s) for s in sets]
    hold = engine.group_hold(sets, Direction.TO_SHADOW, full=True, timeout=30)
    w = Writer(sets[0], 0, b"later")
    assert not w.done.wait(BLOCKED)
    hold.release(False)
    w.finish()
    after = [_state(s) for s in sets]
    assert after[1] == before[1]
    # on set 0 the later write adds the first chunk's shadow bit; nothing else moved
    assert after[0][0] == sorted({0, *before[0][0]})  # type: ignore[misc]
    assert after[0][1] == before[0][1]        # copy bits
    assert after[0][5] == before[0][5]        # shadow bytes
    assert not sets[0].progress().active


def test_a_hold_not_released_thaws_at_its_timeout(engine: Engine, tmp_vol: MakeVol) -> None:
    sets = _sets(engine, tmp_vol)
    shadows = [whole(s, Side.SHADOW) for s in sets]
    hold = engine.group_hold(sets, Direction.TO_SHADOW, timeout=0.2)
    w = Writer(sets[0], 3 * C, b"goes through at the timeout")
    w.finish()   # the engine thawed by itself
    with pytest.raises(Timeout, match="not released within 200 ms"):
        hold.release(True)
    for s, before in zip(sets, shadows, strict=True):
        assert whole(s, Side.SHADOW) == before
        assert s.bits("copy") == []
        assert not s.progress().active


def test_held_sets_refuse_other_copies_holds_and_disable(engine: Engine,
                                                         tmp_vol: MakeVol) -> None:
    sets = _sets(engine, tmp_vol)
    hold = engine.group_hold(sets, Direction.TO_SHADOW, timeout=30)
    try:
        with pytest.raises(InUse, match="held for a group point in time"):
            engine.group_hold(sets[:1], Direction.TO_SHADOW, timeout=30)
        with pytest.raises(InUse, match="held for a group point in time"):
            sets[1].update(Direction.TO_SHADOW)
        with pytest.raises(InUse, match="release the hold before disabling"):
            sets[0].disable()
    finally:
        hold.release(False)
    with pytest.raises(InvalidArgument, match="released already"):
        hold.release(False)
    sets[0].update(Direction.TO_SHADOW)   # free again
    assert sets[0].wait(5)
    sets[1].disable()


def test_closing_a_held_set_thaws_the_hold(engine: Engine, tmp_vol: MakeVol) -> None:
    sets = _sets(engine, tmp_vol)
    shadow = whole(sets[1], Side.SHADOW)
    hold = engine.group_hold(sets, Direction.TO_SHADOW, timeout=30)
    w = Writer(sets[1], 0, b"x")
    assert not w.done.wait(BLOCKED)
    sets[0].close()
    w.finish()
    with pytest.raises(Closed, match="was closed"):
        hold.release(True)
    assert whole(sets[1], Side.SHADOW) == shadow


def test_a_refused_hold_freezes_nothing(engine: Engine, tmp_vol: MakeVol) -> None:
    sets = _sets(engine, tmp_vol)
    sets[1].lock(4242)
    with pytest.raises(InUse, match="locked by 4242"):
        engine.group_hold(sets, Direction.TO_SHADOW, owner=1, timeout=30)
    sets[0].write(Side.MASTER, 0, b"free")   # not frozen: returns at once
    sets[1].unlock(4242)
    for bad in (0, 601):
        with pytest.raises(InvalidArgument, match="timeout"):
            engine.group_hold(sets, Direction.TO_SHADOW, timeout=bad)


def test_an_update_with_nothing_to_do_still_freezes(engine: Engine, tmp_vol: MakeVol) -> None:
    sets = _sets(engine, tmp_vol, kinds=(Kind.INDEPENDENT,))
    for s in sets:
        s.update(Direction.TO_SHADOW)
        assert s.wait(5)
    hold: Hold = engine.group_hold(sets, Direction.TO_SHADOW, timeout=30)
    w = Writer(sets[0], 0, b"after the cut")
    assert not w.done.wait(BLOCKED)
    assert hold.release(True) > 0
    w.finish()
    assert not sets[0].progress().active
    assert sets[0].read(Side.SHADOW, 0, 13) != b"after the cut"
    assert 0 in sets[0].bits("shadow")


def test_a_commit_that_fails_on_one_set_changes_none(engine: Engine, tmp_vol: MakeVol) -> None:
    sets = _sets(engine, tmp_vol, kinds=(Kind.INDEPENDENT,))
    for s in sets:
        s.write(Side.MASTER, 0, b"new data")
    shadow = whole(sets[0], Side.SHADOW)
    hold = engine.group_hold(sets, Direction.TO_SHADOW, timeout=30)
    sets[1].inject_error(VolumeRole.BITMAP, True)
    with pytest.raises(PtcopyError, match="cannot record the copy"):
        hold.release(True)
    sets[0].write(Side.MASTER, C, b"thawed")   # returns: nothing stays frozen
    for s in sets:
        assert not s.progress().active
        assert Flag.COPYING not in s.status().flags
    assert whole(sets[0], Side.SHADOW) == shadow
    assert sets[0].bits("copy") == []
    heal(sets[1], VolumeRole.BITMAP)   # the bitmap comes back: a resync, as after any failure
