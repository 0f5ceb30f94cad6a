"""Scenario tests of set semantics (docs/engine-semantics.md): groups (one point in time, all
or nothing) and locks."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from ptcopy.engine import (
    Direction,
    Engine,
    InUse,
    InvalidArgument,
    Kind,
    NotLocked,
    Set,
    Side,
)
from tests.engine.sets_common import (
    C,
    MakeVol,
    Vols,
    whole,
)

# ---- groups and locks ---------------------------------------------------------------------------


def test_group_copy_is_one_point_in_time(engine: Engine, tmp_vol: MakeVol) -> None:
    vols = [Vols(tmp_vol, Kind.INDEPENDENT, 4 * C, data_seed=None) for _ in range(3)]
    sets = [v.enable(engine) for v in vols]
    for s in sets:
        assert s.wait(5)
    stop = threading.Event()
    counter = [0]

    def writer() -> None:
        # every round writes k to the three masters in order: any one instant shows
        # (k, k, k), (k, k-1, k-1) or (k, k, k-1)
        while not stop.is_set():
            counter[0] += 1
            for s in sets:
                s.write(Side.MASTER, C + 17, counter[0].to_bytes(8, "little"))

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(20):
            time.sleep(0.003)
            frozen = engine.group_copy(sets, Direction.TO_SHADOW, full=False)
            assert frozen >= 0
            for s in sets:
                assert s.wait(5)
            got = [int.from_bytes(s.read(Side.SHADOW, C + 17, 8), "little") for s in sets]
            assert got[0] >= got[1] >= got[2] >= got[0] - 1, f"not one point in time: {got}"
    finally:
        stop.set()
        t.join()
    assert counter[0] > 0


def _snapshot(s: Set) -> tuple[object, ...]:
    st = s.status()
    return (s.bits("shadow"), s.bits("copy"), st.flags, st.diff_chunks, st.copy_chunks,
            whole(s, Side.SHADOW), whole(s, Side.MASTER), s.progress().active)


@pytest.mark.parametrize("direction", list(Direction))
def test_group_copy_is_all_or_nothing(engine: Engine, tmp_vol: MakeVol,
                                      direction: Direction) -> None:
    vols = [Vols(tmp_vol, kind, 4 * C, data_seed=i)
            for i, kind in enumerate([Kind.INDEPENDENT, Kind.DEPENDENT, Kind.INDEPENDENT])]
    sets = [v.enable(engine) for v in vols]
    for i, s in enumerate(sets):
        assert s.wait(5)
        s.write(Side.MASTER, i * C + 1, b"master")
        s.write(Side.SHADOW, 3 * C - 2, b"shadow")
    sets[1].lock(42)
    before = [_snapshot(s) for s in sets]
    with pytest.raises(InUse):
        engine.group_copy(sets, direction, owner=7)
    assert [_snapshot(s) for s in sets] == before, "a refused group copy changed a member"
    with pytest.raises(InUse):
        engine.group_copy(sets, direction, full=True)   # owner 0 is nobody
    assert [_snapshot(s) for s in sets] == before
    with pytest.raises(InvalidArgument):
        engine.group_copy([], direction)
    # the lock's owner may
    frozen = engine.group_copy(sets, direction, owner=42)
    assert frozen >= 0
    for s in sets:
        assert s.wait(5)
        assert whole(s, Side.MASTER) == whole(s, Side.SHADOW)


GROUP_TWICE = """
import os, sys
from ptcopy.engine import Direction, Engine, InvalidArgument, Kind
m, s = sys.argv[1:3]
with Engine() as e:
    st = e.enable(m, s, None, Kind.DEPENDENT, chunk_size=4096)
    try:
        e.group_copy([st, st], Direction.TO_SHADOW)
    except InvalidArgument as exc:
        print("InvalidArgument:", exc)
"""


def test_group_copy_naming_a_set_twice(tmp_vol: MakeVol) -> None:
    """Refused with InvalidArgument (run in a child: a crash must not take pytest down)."""
    proc = subprocess.run([sys.executable, "-c", GROUP_TWICE, str(tmp_vol(4 * C)),
                           str(tmp_vol(4 * C))], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"the process died ({proc.returncode}): {proc.stderr[-2000:]}"
    assert "InvalidArgument:" in proc.stdout and "twice" in proc.stdout


def test_pid_lock(engine: Engine, tmp_vol: MakeVol) -> None:
    v = Vols(tmp_vol, Kind.INDEPENDENT, 4 * C)
    s = v.enable(engine)
    assert s.wait(5)
    assert s.status().lock_owner == 0
    with pytest.raises(InvalidArgument):
        s.lock(0)
    with pytest.raises(NotLocked):
        s.unlock(1)
    s.lock(1)
    s.lock(1)   # the owner may take it again
    assert s.status().lock_owner == 1
    with pytest.raises(InUse):
        s.lock(2)
    for owner in (0, 2):
        with pytest.raises(InUse):
            s.update(Direction.TO_SHADOW, owner=owner)
        with pytest.raises(InUse):
            s.copy(Direction.TO_MASTER, owner=owner)
    with pytest.raises(InUse):
        s.unlock(2)
    s.write(Side.MASTER, 0, b"locks do not stop I/O")
    s.update(Direction.TO_SHADOW, owner=1)
    assert s.wait(5)
    assert s.read(Side.SHADOW, 0, 21) == b"locks do not stop I/O"
    s.unlock(1)
    assert s.status().lock_owner == 0
    s.lock(2)
    s.unlock()   # owner 0 releases anyone's lock
    s.update(Direction.TO_SHADOW, owner=3)
    assert s.wait(5)
