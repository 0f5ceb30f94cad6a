"""Restoring a master from one of its several shadows (issue 15): every other set of that master
keeps its own point in time. A dependent or compact dependent sibling receives the old data of a
chunk before the restore overwrites it; an independent sibling's bitmap marks every chunk the
restore changed, so its next update makes it equal to the master again."""

from __future__ import annotations

import pytest

from ptcopy.engine import (
    CopyInProgress,
    Direction,
    Engine,
    Flag,
    InvalidArgument,
    Kind,
    Set,
    Side,
)
from tests.engine.sets_common import C, MakeVol, Vols, raw, rnd, whole

SIZE = 16 * C


class Trio:
    """A master with three shadows: dependent, independent, compact dependent (4 chunks of its
    own, the rest on an overflow volume)."""

    def __init__(self, engine: Engine, tmp_vol: MakeVol) -> None:
        self.dep = Vols(tmp_vol, Kind.DEPENDENT, SIZE)
        self.master = self.dep.master
        self.ind = Vols(tmp_vol, Kind.INDEPENDENT, SIZE, master=self.master)
        self.cmp = Vols(tmp_vol, Kind.DEPENDENT, SIZE, shadow_size=4 * C, master=self.master)
        self.ov_path = tmp_vol(2 * 4096 + 32 * C)
        self.ov = engine.init_overflow(self.ov_path, C)
        self.sets: dict[str, Set] = {"dep": self.dep.enable(engine)}
        self.sets["ind"] = self.ind.enable(engine)
        assert self.sets["ind"].wait(10)
        self.sets["cmp"] = self.cmp.enable(engine, overflow=self.ov)
        # each set's point in time, as its shadow must read
        self.pit = {n: whole(s, Side.SHADOW) for n, s in self.sets.items()}

    def write(self, name: str, side: Side, chunk: int, seed: int, n: int = 1) -> None:
        s = self.sets[name]
        data = rnd(seed, n * C)
        s.write(side, chunk * C, data)
        if side is Side.SHADOW:
            img = bytearray(self.pit[name])
            img[chunk * C:(chunk + n) * C] = data
            self.pit[name] = bytes(img)
        else:   # a master write leaves every point in time alone
            self.check_all()

    def check_all(self) -> None:
        """Every shadow reads as its point in time (a restore leaves its own source's alone
        too), every set's master as the volume."""
        for n, s in self.sets.items():
            assert whole(s, Side.SHADOW) == self.pit[n], f"set {n} lost its point in time"
            assert whole(s, Side.MASTER) == raw(self.master)


def restore(t: Trio, name: str, *, full: bool) -> None:
    """Restore the master from set `name`; check every other point in time, and that the
    independent sibling's next update makes it equal to the master."""
    before = raw(t.master)
    r = t.sets[name]
    (r.copy if full else r.update)(Direction.TO_MASTER)
    assert r.wait(10)
    assert raw(t.master) == t.pit[name], f"the master was not restored from {name}"
    t.check_all()
    changed = {c for c in range(SIZE // C)
               if before[c * C:(c + 1) * C] != t.pit[name][c * C:(c + 1) * C]}
    if name != "ind":
        ind = t.sets["ind"]
        assert changed <= set(ind.bits("shadow")), "an independent sibling missed a chunk"
        ind.update(Direction.TO_SHADOW)
        assert ind.wait(10)
        t.pit["ind"] = raw(t.master)
        assert whole(ind, Side.SHADOW) == raw(t.master) == raw(t.ind.shadow)


@pytest.mark.parametrize("full", [False, True], ids=["update", "copy"])
def test_restore_from_each_of_three_shadows(engine: Engine, tmp_vol: MakeVol, full: bool) -> None:
    t = Trio(engine, tmp_vol)
    for rnd_no, name in enumerate(["dep", "ind", "cmp", "dep"]):
        seed = 100 * (rnd_no + 1)
        # the master moves on (copy-on-write into the dependent ones), each shadow is written
        t.write("dep", Side.MASTER, 1 + rnd_no, seed, 3)
        t.write("dep", Side.SHADOW, 0, seed + 1, 2)
        t.write("ind", Side.SHADOW, 5, seed + 2, 4)
        t.write("cmp", Side.SHADOW, 12, seed + 3, 3)
        t.check_all()
        restore(t, name, full=full)
        # I/O after the restore still keeps every point in time
        t.write(name, Side.MASTER, 14, seed + 4, 2)
        t.check_all()


def test_restore_with_io_and_refusals_meanwhile(engine: Engine, tmp_vol: MakeVol) -> None:
    """A slow restore: master writes, sibling shadow writes and reads during it keep every
    point in time; what would read the half-restored volume is refused until it ends."""
    t = Trio(engine, tmp_vol)
    t.write("ind", Side.SHADOW, 0, 7, SIZE // C)   # every chunk differs from the master
    r = t.sets["ind"]
    r.set_copy_params(30, 1)   # one chunk per 30 ms
    r.copy(Direction.TO_MASTER)
    assert r.progress().active
    # the master reads as the restored image at once
    assert whole(r, Side.MASTER) == t.pit["ind"]
    t.sets["dep"].write(Side.MASTER, 9 * C + 5, b"during the restore")
    t.write("dep", Side.SHADOW, 3, 8)
    t.write("cmp", Side.SHADOW, 10, 9)
    for n in ("dep", "cmp"):
        assert whole(t.sets[n], Side.SHADOW) == t.pit[n]
    with pytest.raises(CopyInProgress, match="being restored from"):
        t.sets["dep"].update(Direction.TO_SHADOW)
    with pytest.raises(CopyInProgress, match="being restored from"):
        t.sets["cmp"].copy(Direction.TO_MASTER)
    late = Vols(tmp_vol, Kind.DEPENDENT, SIZE, master=t.master)
    with pytest.raises(CopyInProgress, match="being restored from"):
        late.enable(engine)
    assert r.wait(20)
    expect = bytearray(t.pit["ind"])
    expect[9 * C + 5:9 * C + 23] = b"during the restore"
    assert raw(t.master) == bytes(expect)
    t.check_all()
    assert whole(r, Side.SHADOW) == t.pit["ind"]


def test_group_restores_a_master_from_one_shadow_only(engine: Engine, tmp_vol: MakeVol) -> None:
    t = Trio(engine, tmp_vol)
    with pytest.raises(InvalidArgument, match="one of its shadows only"):
        engine.group_copy([t.sets["dep"], t.sets["cmp"]], Direction.TO_MASTER)
    assert not any(s.progress().active for s in t.sets.values())
    assert all(s.bits("copy") == [] for s in t.sets.values())
    t.write("cmp", Side.SHADOW, 2, 3)
    engine.group_copy([t.sets["cmp"]], Direction.TO_MASTER)
    assert t.sets["cmp"].wait(10)
    assert raw(t.master) == t.pit["cmp"]
    t.check_all()


@pytest.mark.parametrize("then", ["resume", "abort"])
def test_restore_held_after_reopen(tmp_vol: MakeVol, then: str) -> None:
    """A restore with siblings interrupted by a close is held at the next open, whatever the
    order: the master reads as restored at once, no chunk moves until it is resumed, and an
    abort ends it as an aborted restore (the master flagged incomplete)."""
    with Engine() as engine:
        t = Trio(engine, tmp_vol)
        t.write("dep", Side.SHADOW, 0, 11, SIZE // C)
        r = t.sets["dep"]
        r.set_copy_params(200, 1)
        r.update(Direction.TO_MASTER)
        assert r.progress().active
    vols = {"dep": t.dep, "ind": t.ind, "cmp": t.cmp}
    with Engine() as engine:
        ov = engine.open_overflow(t.ov_path)
        t.sets = {n: vols[n].open(engine, overflow=ov if n == "cmp" else None)
                  for n in ("dep", "ind", "cmp")}
        r = t.sets["dep"]
        assert r.status().flags & Flag.RESTORE_HELD
        assert not r.progress().active
        assert whole(r, Side.MASTER) == t.pit["dep"]
        with pytest.raises(CopyInProgress, match="being restored from"):
            t.sets["ind"].update(Direction.TO_SHADOW)
        t.pit["dep"] = whole(r, Side.SHADOW)
        if then == "resume":
            r.set_copy_params(0, 256)
            r.update(Direction.TO_MASTER)
            assert r.wait(10)
            assert raw(t.master) == t.pit["dep"]
            assert not r.status().flags & (Flag.RESTORE_HELD | Flag.COPYING | Flag.INCOMPLETE)
        else:
            r.abort()
            st = r.status()
            assert st.flags & Flag.INCOMPLETE and st.flags & Flag.TO_MASTER
            assert not st.flags & (Flag.RESTORE_HELD | Flag.COPYING)
        for n in ("ind", "cmp"):
            assert whole(t.sets[n], Side.SHADOW) == t.pit[n]
        assert whole(r, Side.SHADOW) == t.pit["dep"]
