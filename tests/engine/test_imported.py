"""Imported shadows (kind IMPORTED): a shadow another host exported, served with a bitmap of
every chunk written to it, released, and joined back on the exporting set (issue 14)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ptcopy.engine import (
    BadHeader,
    Closed,
    CopyInProgress,
    Direction,
    Engine,
    Flag,
    Incomplete,
    InUse,
    Kind,
    NotFound,
    Offline,
    SameVolume,
    Side,
    SizeMismatch,
    TooSmall,
    VolumeRole,
    WrongKind,
)

C = 32 * 1024
SIZE = 64 * C
BITMAP = 1 << 16
MakeVol = Callable[..., Path]
CHILD = Path(__file__).resolve().with_name("import_crash_child.py")


def digest(path: Path, size: int = SIZE) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read(size)).hexdigest()


def test_import_marks_every_written_chunk_and_refuses_the_rest(tmp_vol: MakeVol) -> None:
    vol, bm = tmp_vol(SIZE, "shadow"), tmp_vol(BITMAP, "ib")
    with Engine() as eng:
        s = eng.import_shadow(vol, bm)
        st = s.status()
        assert st.kind is Kind.IMPORTED and st.chunks == 64 and st.chunk_size == C
        s.write(Side.SHADOW, 3 * C + 7, b"abc")
        s.write(Side.SHADOW, 7 * C - 1, b"xy")   # straddles chunks 6 and 7
        assert s.read(Side.SHADOW, 3 * C + 7, 3) == b"abc"
        assert s.bits("shadow") == [3, 6, 7]
        with vol.open("rb") as f:   # written in place: the volume itself holds the data
            f.seek(3 * C + 7)
            assert f.read(3) == b"abc"
        with pytest.raises(WrongKind, match="no master"):
            s.read(Side.MASTER, 0, 1)
        with pytest.raises(WrongKind, match="no master"):
            s.write(Side.MASTER, 0, b"x")
        for refused in (lambda: s.update(Direction.TO_SHADOW), lambda: s.copy(Direction.TO_MASTER),
                        lambda: s.reset(), lambda: s.join(bm)):
            with pytest.raises(WrongKind, match="imported shadow"):
                refused()
        s.flush(Side.SHADOW)
        s.release()
    with Engine() as eng:   # released: no host opens it as a set again by accident
        with pytest.raises(WrongKind, match="released"):
            eng.open_imported(vol, bm)
        with pytest.raises(WrongKind, match="released"):
            eng.open(tmp_vol(SIZE, "m2"), vol, bm)


def test_a_restart_keeps_the_import_and_its_bits(tmp_vol: MakeVol) -> None:
    vol, bm = tmp_vol(SIZE, "shadow"), tmp_vol(BITMAP, "ib")
    with Engine() as eng:
        s = eng.import_shadow(vol, bm, chunk_size=2 * C)
        s.write(Side.SHADOW, 5 * 2 * C, b"q")
        s.close()
        s = eng.open_imported(vol, bm)
        assert s.status().kind is Kind.IMPORTED and s.status().chunk_size == 2 * C
        assert s.bits("shadow") == [5]
        s.write(Side.SHADOW, 0, b"r")
        assert s.bits("shadow") == [0, 5]
        s.close()
        with pytest.raises(WrongKind, match="imported shadow, not to a set"):
            eng.open(tmp_vol(SIZE, "m2"), tmp_vol(SIZE, "s2"), bm)


def test_export_import_release_join_makes_the_shadow_equal_again(tmp_vol: MakeVol) -> None:
    m, sh, b, ib = (tmp_vol(SIZE, "m"), tmp_vol(SIZE, "s"), tmp_vol(BITMAP, "b"),
                    tmp_vol(BITMAP, "ib"))
    with m.open("r+b") as f:
        f.write(bytes(range(256)) * (SIZE // 256))
    with Engine() as host_a, Engine() as host_b:
        a = host_a.enable(m, sh, b, Kind.INDEPENDENT)
        assert a.wait(10)
        assert digest(sh) == digest(m)
        a.export()
        a.export()   # idempotent
        assert a.status().flags & Flag.EXPORTED
        for refused in (lambda: a.update(Direction.TO_SHADOW), lambda: a.reset(),
                        lambda: a.read(Side.SHADOW, 0, 1), lambda: a.write(Side.SHADOW, 0, b"x")):
            with pytest.raises(WrongKind, match="exported"):
                refused()
        a.close()   # the export survives a restart (a header flag)
        a = host_a.open(m, sh, b)
        assert a.status().flags & Flag.EXPORTED
        # A goes on writing its master; B writes the shadow it imported
        a.write(Side.MASTER, 2 * C, b"A" * 100)
        imp = host_b.import_shadow(sh, ib)
        imp.write(Side.SHADOW, 9 * C, b"B" * C)
        imp.write(Side.SHADOW, 40 * C + 10, b"B" * 10)
        with pytest.raises(InUse, match="still imported"):
            a.join(ib)
        imp.release()
        with pytest.raises(InUse, match="not joined yet"):   # B's bits are kept for the join
            host_b.import_shadow(sh, ib)
        a.join(ib)
        assert not a.status().flags & Flag.EXPORTED
        with pytest.raises(BadHeader, match="disabled"):   # used up: not joined twice
            a.join(ib)
        assert a.bits("shadow") == [2, 9, 40]
        a.update(Direction.TO_SHADOW)
        assert a.wait(10)
        assert a.bits("shadow") == []
        assert digest(sh) == digest(m)
        a.close()


def test_join_names_another_chunk_size_or_count(tmp_vol: MakeVol) -> None:
    m, sh, b = tmp_vol(SIZE, "m"), tmp_vol(SIZE, "s"), tmp_vol(BITMAP, "b")
    with Engine() as eng:
        a = eng.enable(m, sh, b, Kind.INDEPENDENT)
        assert a.wait(10)
        for name, size, chunk in (("small", SIZE // 2, 0), ("coarse", SIZE, 4 * C)):
            other, ib = tmp_vol(size, name), tmp_vol(BITMAP, f"{name}.bm")
            eng.import_shadow(other, ib, chunk_size=chunk).release()
            with pytest.raises(SizeMismatch, match="chunks of"):
                a.join(ib)
        assert a.bits("shadow") == []
        a.close()


def test_join_of_a_shadow_larger_than_the_master(tmp_vol: MakeVol) -> None:
    """An independent shadow may be larger than its master: imported whole, its chunks past
    the master's are not the set's and are left out of the join."""
    m, sh, b, ib = (tmp_vol(SIZE, "m"), tmp_vol(2 * SIZE, "s"), tmp_vol(BITMAP, "b"),
                    tmp_vol(BITMAP, "ib"))
    with Engine() as eng:
        a = eng.enable(m, sh, b, Kind.INDEPENDENT)
        assert a.wait(10)
        a.export()
        with Engine() as host_b:
            imp = host_b.import_shadow(sh, ib)
            assert imp.status().chunks == 128
            imp.write(Side.SHADOW, 63 * C, b"last")
            imp.write(Side.SHADOW, 100 * C, b"past the master")
            imp.release()
        a.join(ib)
        assert a.bits("shadow") == [63]
        a.close()


def test_import_refusals_leave_nothing_behind(tmp_vol: MakeVol) -> None:
    m, sh, b = tmp_vol(SIZE, "m"), tmp_vol(SIZE, "s"), tmp_vol(BITMAP, "b")
    with Engine() as eng:
        a = eng.enable(m, sh, b, Kind.DEPENDENT)
        for vol in (m, sh):   # a volume of a set here is no imported shadow
            ib = tmp_vol(BITMAP, f"{vol.name}.ib")
            with pytest.raises(InUse):
                eng.import_shadow(vol, ib)
            assert ib.read_bytes() == bytes(BITMAP)
        small = tmp_vol(4096, "small")
        with pytest.raises(TooSmall, match="needs"):
            eng.import_shadow(tmp_vol(SIZE, "v"), small)
        assert small.read_bytes() == bytes(4096)
        v2 = tmp_vol(SIZE, "v2")
        with pytest.raises(SameVolume):
            eng.import_shadow(v2, v2)
        with pytest.raises(NotFound, match="/nonexistent/ib"):
            eng.import_shadow(tmp_vol(SIZE, "v3"), "/nonexistent/ib")
        imp = eng.import_shadow(v2, tmp_vol(BITMAP, "ib2"))
        with pytest.raises(InUse, match="imported shadow"):   # nor the master of a new set
            eng.enable(v2, tmp_vol(SIZE, "s9"), tmp_vol(BITMAP, "b9"), Kind.DEPENDENT)
        with pytest.raises(BadHeader, match="empty"):
            eng.open_imported(tmp_vol(SIZE, "v4"), tmp_vol(BITMAP, "ib4"))
        imp.release()
        with pytest.raises(Closed, match="closed"):
            imp.read(Side.SHADOW, 0, 1)
        a.close()


def _run_and_kill(vol: Path, bm: Path, journal: Path, seed: int, after: float) -> list[str]:
    journal.write_text("")
    proc = subprocess.Popen([sys.executable, str(CHILD), str(vol), str(bm), str(journal),
                             str(seed), "4"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not journal.read_text().startswith("READY"):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the child never got ready"
            time.sleep(0.005)
        time.sleep(after)
        assert proc.poll() is None, "the child died on its own"
    finally:
        proc.kill()
        proc.wait()
    return journal.read_text().splitlines()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_crash_never_loses_the_bit_of_a_chunk_written(tmp_vol: MakeVol, tmp_path: Path,
                                                        seed: int) -> None:
    """SIGKILL mid-writes, twice over the same import: every chunk whose bytes changed on the
    volume, and every chunk of every write that began, has its bit after the reopen."""
    size = 256 * C
    vol, bm = tmp_vol(size, "shadow"), tmp_vol(BITMAP, "ib")
    started: set[int] = set()
    for round_ in range(2):
        lines = _run_and_kill(vol, bm, tmp_path / f"journal{round_}", seed + 10 * round_,
                              0.3 + 0.2 * round_)
        for line in lines[1:]:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "W":
                off, length = int(parts[1]), int(parts[2])
                started.update(range(off // C, (off + length - 1) // C + 1))
        with Engine() as eng:
            s = eng.open_imported(vol, bm)
            bits = set(s.bits("shadow"))
            s.close()
        data = vol.read_bytes()
        changed = {c for c in range(size // C) if data[c * C:(c + 1) * C] != bytes(C)}
        assert changed, "the child wrote nothing before the kill"
        assert changed <= bits, f"chunks written but not marked: {sorted(changed - bits)}"
        # a write that began may not have marked yet, but every one that changed data has;
        # the marks are of writes that began (no bit from nowhere)
        assert bits <= started, f"bits of chunks never written: {sorted(bits - started)}"


def test_export_is_refused_unless_the_shadow_is_whole(tmp_vol: MakeVol) -> None:
    m, sh, b = tmp_vol(SIZE, "m"), tmp_vol(SIZE, "s"), tmp_vol(BITMAP, "b")
    with Engine() as eng:
        dep = eng.enable(tmp_vol(SIZE, "dm"), tmp_vol(SIZE, "ds"), tmp_vol(BITMAP, "db"),
                         Kind.DEPENDENT)
        with pytest.raises(WrongKind, match="not independent"):
            dep.export()
        a = eng.enable(m, sh, b, Kind.INDEPENDENT, copy_delay_ms=50, copy_units=1)
        with pytest.raises(CopyInProgress, match="copying"):
            a.export()
        a.abort()
        assert a.wait(10)
        with pytest.raises(Incomplete, match="incomplete"):
            a.export()
        a.update(Direction.TO_SHADOW)
        a.set_copy_params(0, 256)
        assert a.wait(10)
        a.export()
        assert a.status().flags & Flag.EXPORTED


def test_no_write_reaches_the_volume_without_its_mark(tmp_vol: MakeVol) -> None:
    """The bitmap fails: the write that needed a new mark is refused before its data is
    written, and the volume goes offline (no later write goes unmarked either)."""
    vol, bm = tmp_vol(SIZE, "shadow"), tmp_vol(BITMAP, "ib")
    with Engine() as eng:
        s = eng.import_shadow(vol, bm)
        s.write(Side.SHADOW, 0, b"marked")
        s.inject_error(VolumeRole.BITMAP)
        with pytest.raises(Offline):
            s.write(Side.SHADOW, 10 * C, b"never")
        with vol.open("rb") as f:
            f.seek(10 * C)
            assert f.read(5) == bytes(5)
        with pytest.raises(Offline):
            s.write(Side.SHADOW, 0, b"again")   # even where the bit is set: offline
        with pytest.raises(Offline):
            s.release()   # a bitmap that may miss writes is not handed back
        s.inject_error(VolumeRole.BITMAP, on=False)
        s.close()
