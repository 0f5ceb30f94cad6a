"""A crash while the bitmap volume is offline misses no changed chunk (the fallback record).

While the bitmap volume fails, master writes still succeed and their bits live in memory only
(tests/engine/test_master_flush.py). A crash, or a close that cannot write them, would lose
them: the bitmap read at the next open does not show those chunks and an update would miss
them. Before the first such write is issued, the engine records in the set's fallback record (a
small file outside the bitmap volume) that the bitmap is lost; the next open with that record
marks every chunk changed, keeps the shadow offline until a reset, and the reset's full copy
makes the shadow the master's image again.

The crash is real where it matters: a child process that wrote through the set is killed with
SIGKILL while the bitmap volume fails.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptcopy.engine import (
    Direction,
    Engine,
    Flag,
    InvalidArgument,
    Kind,
    Offline,
    PtcopyError,
    Set,
    Side,
    VolumeRole,
    bitmap_size,
)
from tests.helpers.names import MakeVol

C = 4096
N = 16
KINDS = [pytest.param(Kind.INDEPENDENT, id="independent"),
         pytest.param(Kind.DEPENDENT, id="dependent")]


class Vols:
    def __init__(self, tmp_vol: MakeVol, tmp_path: Path, kind: Kind) -> None:
        self.kind = kind
        self.master = tmp_vol(N * C)
        self.master.write_bytes(random.Random(1).randbytes(N * C))
        self.shadow = tmp_vol(N * C)
        self.bitmap = tmp_vol(bitmap_size(N * C, N * C, C, kind))
        self.record = tmp_path / "fallback.rec"

    def fallback(self, s: Set, flags: int = os.O_RDWR) -> bool:
        fd = os.open(self.record, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            return s.set_fallback(fd)
        finally:
            os.close(fd)

    def enable(self, engine: Engine) -> Set:
        s = engine.enable(self.master, self.shadow, self.bitmap, self.kind, chunk_size=C)
        assert s.wait(10)
        assert self.fallback(s) is False
        return s

    def open(self, engine: Engine) -> Set:
        return engine.open(self.master, self.shadow, self.bitmap)


def write_chunks(s: Set, chunks: range, seed: int) -> None:
    rng = random.Random(seed)
    for c in chunks:
        s.write(Side.MASTER, c * C + rng.randrange(C - 64), rng.randbytes(64))


def offline_writes(s: Set) -> None:
    """The bitmap fails; the master goes on taking writes and flushes."""
    s.inject_error(VolumeRole.BITMAP, error=errno.EIO)
    write_chunks(s, range(1, N, 3), seed=7)
    s.flush(Side.MASTER)
    assert s.status().flags & Flag.BITMAP_OFFLINE


def crash_by_close(s: Set) -> None:
    """The bitmap never comes back before the handle goes: its bits are written nowhere."""
    with pytest.raises(PtcopyError):
        s.close()


def recovered_by_reset(s: Set, v: Vols) -> None:
    st = s.status()
    assert st.flags & Flag.BITMAP_LOST and st.flags & Flag.SHADOW_OFFLINE
    if v.kind == Kind.INDEPENDENT:
        assert st.diff_chunks == N, "not every chunk counts as changed"
    with pytest.raises(Offline):   # no update that would trust the lost bits
        s.update(Direction.TO_SHADOW)
    with pytest.raises(Offline):
        s.read(Side.SHADOW, 0, C)
    s.reset()
    assert s.wait(10)
    st = s.status()
    assert not st.flags & (Flag.BITMAP_LOST | Flag.SHADOW_OFFLINE | Flag.BITMAP_OFFLINE)
    master = v.master.read_bytes()
    assert s.read(Side.SHADOW, 0, N * C) == master, "a chunk changed while offline was missed"
    if v.kind == Kind.INDEPENDENT:
        assert v.shadow.read_bytes() == master


def reopens_clean(engine: Engine, s: Set, v: Vols) -> None:
    """The record was cleared once the bitmap held everything: no second full copy."""
    s.close()
    s = v.open(engine)
    assert v.fallback(s) is False
    assert not s.status().flags & (Flag.BITMAP_LOST | Flag.SHADOW_OFFLINE)
    s.close()


@pytest.mark.parametrize("kind", KINDS)
def test_close_while_bitmap_offline_then_reopen(engine: Engine, tmp_vol: MakeVol,
                                                tmp_path: Path, kind: Kind) -> None:
    v = Vols(tmp_vol, tmp_path, kind)
    s = v.enable(engine)
    offline_writes(s)
    assert not s.status().flags & Flag.UNRECORDED
    crash_by_close(s)
    s = v.open(engine)
    # the bitmap alone does not know about the writes: that is the gap the record closes
    assert not set(range(1, N, 3)) <= set(s.bits("shadow"))
    assert v.fallback(s) is True
    recovered_by_reset(s, v)
    reopens_clean(engine, s, v)


def test_without_fallback_the_loss_is_flagged(engine: Engine, tmp_vol: MakeVol,
                                              tmp_path: Path) -> None:
    """No record given, or one that cannot be written: master writes still succeed, and the
    set says its changes are recorded nowhere durable until the bitmap is whole again."""
    v = Vols(tmp_vol, tmp_path, Kind.INDEPENDENT)
    s = engine.enable(v.master, v.shadow, v.bitmap, Kind.INDEPENDENT, chunk_size=C)
    assert s.wait(10)
    offline_writes(s)
    assert s.status().flags & Flag.UNRECORDED
    assert v.fallback(s, os.O_RDONLY) is False   # readable, so opened; but writes fail
    write_chunks(s, range(0, 2), seed=8)
    assert s.status().flags & Flag.UNRECORDED
    assert v.master.read_bytes() == s.read(Side.MASTER, 0, N * C)
    s.inject_error(VolumeRole.BITMAP, False)
    s.reset()
    assert s.wait(10)
    assert not s.status().flags & Flag.UNRECORDED
    assert s.read(Side.SHADOW, 0, N * C) == v.master.read_bytes()


def test_reset_in_process_clears_the_record(engine: Engine, tmp_vol: MakeVol,
                                            tmp_path: Path) -> None:
    v = Vols(tmp_vol, tmp_path, Kind.INDEPENDENT)
    s = v.enable(engine)
    offline_writes(s)
    assert v.record.read_bytes()[12] == 2, "bitmap loss not recorded before the writes"
    s.inject_error(VolumeRole.BITMAP, False)
    s.reset()
    assert s.wait(10)
    assert v.record.read_bytes()[12] == 1
    assert s.read(Side.SHADOW, 0, N * C) == v.master.read_bytes()
    reopens_clean(engine, s, v)


def test_kernel_path_mark_records_the_loss(engine: Engine, tmp_vol: MakeVol,
                                           tmp_path: Path) -> None:
    v = Vols(tmp_vol, tmp_path, Kind.INDEPENDENT)
    s = v.enable(engine)
    write_chunks(s, range(3, 4), seed=9)   # dm-era saw this write; the bitmap is told late
    s.inject_error(VolumeRole.BITMAP, error=errno.ENOSPC)
    with pytest.raises(PtcopyError):
        s.mark(3, 1)
    crash_by_close(s)
    s = v.open(engine)
    assert v.fallback(s) is True
    recovered_by_reset(s, v)


@pytest.mark.parametrize("content", [
    pytest.param(b"garbage" * 20, id="garbage"),
    pytest.param(b"PTCOPYFB" + bytes(20), id="truncated"),
])
def test_unreadable_record_counts_as_lost(engine: Engine, tmp_vol: MakeVol, tmp_path: Path,
                                          content: bytes) -> None:
    v = Vols(tmp_vol, tmp_path, Kind.INDEPENDENT)
    s = v.enable(engine)
    s.close()
    v.record.write_bytes(content)
    s = v.open(engine)
    assert v.fallback(s) is True
    recovered_by_reset(s, v)


def test_record_of_another_set_counts_as_lost(engine: Engine, tmp_vol: MakeVol,
                                              tmp_path: Path) -> None:
    v = Vols(tmp_vol, tmp_path, Kind.INDEPENDENT)
    s = v.enable(engine)
    offline_writes(s)
    crash_by_close(s)
    other = Vols(tmp_vol, tmp_path, Kind.INDEPENDENT)   # same record path, another set
    s2 = engine.enable(other.master, other.shadow, other.bitmap, Kind.INDEPENDENT, chunk_size=C)
    assert s2.wait(10)
    assert other.fallback(s2) is True
    recovered_by_reset(s2, other)


def test_fallback_refuses_what_is_not_a_file(engine: Engine, tmp_vol: MakeVol,
                                             tmp_path: Path) -> None:
    v = Vols(tmp_vol, tmp_path, Kind.INDEPENDENT)
    s = v.enable(engine)
    r, w = os.pipe()
    try:
        with pytest.raises(InvalidArgument, match="regular file"):
            s.set_fallback(r)
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(InvalidArgument):
        s.set_fallback(-1)


# ---- a real crash: SIGKILL of a process writing through the set ----

CHILD = r"""
import errno, json, os, random, sys, time
from ptcopy.engine import Engine, Kind, Side, VolumeRole
a = json.loads(sys.argv[1])
e = Engine()
s = e.open(a["master"], a["shadow"], a["bitmap"])
fd = os.open(a["record"], os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
s.set_fallback(fd)
s.inject_error(VolumeRole.BITMAP, error=errno.EIO)
rng = random.Random(a["seed"])
for c in a["chunks"]:
    s.write(Side.MASTER, c * a["chunk"] + rng.randrange(a["chunk"] - 64), rng.randbytes(64))
s.flush(Side.MASTER)
j = os.open(a["journal"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
os.write(j, b"WRITTEN\n")
os.fsync(j)
while True:
    time.sleep(3600)
"""


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_while_bitmap_offline(engine: Engine, tmp_vol: MakeVol, tmp_path: Path,
                                      kind: Kind) -> None:
    v = Vols(tmp_vol, tmp_path, kind)
    s = v.enable(engine)
    s.close()   # the child opens it, as a restarted ptcopyd would
    journal = tmp_path / "journal"
    chunks = list(range(0, N, 2))
    args = {"master": str(v.master), "shadow": str(v.shadow), "bitmap": str(v.bitmap),
            "record": str(v.record), "journal": str(journal), "seed": 11, "chunk": C,
            "chunks": chunks}
    p = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)],
                         stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        # the journal line is written only once every write returned: no timing involved
        while not (journal.exists() and b"WRITTEN" in journal.read_bytes()):
            if p.poll() is not None:
                raise AssertionError(f"child died: {p.stderr.read().decode()}")  # type: ignore[union-attr]
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        assert p.stderr is not None
        p.stderr.close()
    s = v.open(engine)
    assert not set(chunks) <= set(s.bits("shadow")), "the bitmap alone would miss them"
    assert v.fallback(s) is True
    recovered_by_reset(s, v)
    reopens_clean(engine, s, v)


def test_copy_resumed_at_open_does_not_hold_up_the_reset(engine: Engine, tmp_vol: MakeVol,
                                                         tmp_path: Path) -> None:
    """The bitmap fails during a (throttled) full copy: the open after the crash resumes the
    copy, and the recovery stops it so the reset can start the full copy at once."""
    v = Vols(tmp_vol, tmp_path, Kind.INDEPENDENT)
    s = engine.enable(v.master, v.shadow, v.bitmap, Kind.INDEPENDENT, chunk_size=C,
                      copy_delay_ms=60000, copy_units=2)
    assert v.fallback(s) is False
    assert s.progress().active
    offline_writes(s)
    crash_by_close(s)
    s = v.open(engine)
    assert s.progress().active, "the interrupted copy did not resume"
    assert v.fallback(s) is True
    assert not s.progress().active
    s.set_copy_params(0, 256)
    recovered_by_reset(s, v)
