"""Crash tests: a child process (crash_child.py) runs a set under load and is SIGKILLed at a random
moment; the parent reopens the set and checks what the contract promises after a crash:

(a) a dependent shadow still shows the point in time of the enable;
(b) an interrupted initial copy of an independent set resumes on open and completes;
(c) with writes on both sides and updates under load, the images a reader sees are what the
    journal of completed operations says, and an update to the shadow then makes the shadow
    equal the master byte for byte (no changed chunk missed).

The child journals each operation before it starts and after it returns, so the parent can
replay the completed ones on a model of both logical images. The one operation under way at the
kill (at most one: the load is single-threaded) may have happened or not: a write's bytes may
each be old or new, an update's chunks may each show the old or the new point in time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ptcopy.engine import Direction, Engine, Flag, Kind, Set, SetStatus, Side, bitmap_size

CHILD = Path(__file__).resolve().with_name("crash_child.py")
_spec = importlib.util.spec_from_file_location("ptcopy_crash_child", CHILD)
assert _spec is not None and _spec.loader is not None
_child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_child)
op_data = _child.op_data

MIB = 1 << 20
READY_TIMEOUT = 60.0   # generous: the sanitizer pass starts the child slowly


def slow_unless(default: bool) -> tuple[pytest.MarkDecorator, ...]:
    return () if default else (pytest.mark.slow,)


def fill(path: Path, data: bytes) -> None:
    with path.open("r+b") as f:
        f.write(data)


# ---- running the child ------------------------------------------------------------------------


def run_and_kill(tmp_path: Path, args: dict[str, object], kill_after: float) -> list[str]:
    """Start the child, wait until its set is ready, let it run ``kill_after`` seconds, SIGKILL it
    and return the complete lines of its journal."""
    n = len(list(tmp_path.glob("journal*.txt")))
    journal = tmp_path / f"journal{n}.txt"
    journal.touch()
    errlog = tmp_path / f"child{n}.err"
    args = {**args, "journal": str(journal)}
    with errlog.open("wb") as err:
        proc = subprocess.Popen([sys.executable, str(CHILD), json.dumps(args)],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not journal.read_text().startswith("READY"):
            if proc.poll() is not None:
                pytest.fail(f"crash child exited ({proc.returncode}) before it was ready:\n"
                            + errlog.read_text())
            if time.monotonic() > deadline:
                pytest.fail("crash child not ready in time:\n" + errlog.read_text())
            time.sleep(0.005)
        time.sleep(kill_after)
        assert proc.poll() is None, "the crash child exited on its own:\n" + errlog.read_text()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    text = journal.read_text()
    lines = text.split("\n")[:-1]   # a line without its newline was cut by the kill: ignore it
    errors = [ln for ln in lines if ln.startswith("E ")]
    assert not errors, f"the child's load failed: {errors}"
    return lines


# ---- the model --------------------------------------------------------------------------------


@dataclass
class Model:
    """The logical master and shadow images the completed operations of a journal imply."""

    seed: int
    master: bytearray
    shadow: bytearray
    pending: tuple[object, ...] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def replay(self, lines: list[str]) -> None:
        for line in lines:
            f = line.split()
            tag = f[0]
            self.counts[tag] = self.counts.get(tag, 0) + 1
            if tag == "W":
                i, side, off, length = int(f[1]), f[2], int(f[3]), int(f[4])
                self.pending = ("W", i, side, off, op_data(self.seed, i, length))
            elif tag == "D":
                assert self.pending is not None and self.pending[0] == "W"
                _, i, side, off, data = self.pending
                assert i == int(f[1])
                img = self.master if side == "m" else self.shadow
                img[off:off + len(data)] = data
                self.pending = None
            elif tag == "U":
                self.pending = ("U", int(f[1]))
            elif tag == "UD":
                self.shadow[:] = self.master
                self.pending = None
            elif tag == "UB":
                self.pending = None
            else:
                assert tag == "READY", f"unknown journal line {line!r}"

    def check(self, which: str, actual: bytes, chunk: int) -> None:
        """``actual`` (the master or the shadow as read) matches the model, allowing for the
        operation the kill interrupted."""
        expect = self.master if which == "m" else self.shadow
        assert len(actual) == len(expect)
        p = self.pending
        if p is not None and p[0] == "W" and p[2] == which:
            _, i, _, off, data = p
            end = off + len(data)
            old = expect[off:end]
            got = actual[off:end]
            bad = [k for k in range(len(data)) if got[k] != old[k] and got[k] != data[k]]
            assert not bad, (f"{which}: bytes of the interrupted write {i} at {off}+{len(data)} "
                             f"are neither old nor new, first at {off + bad[0]}")
            assert actual[:off] == expect[:off], mismatch(which, actual, expect, 0, off, chunk)
            assert actual[end:] == expect[end:], mismatch(which, actual, expect, end, None, chunk)
            return
        if p is not None and p[0] == "U" and which == "s":
            bad = []
            for c in range(0, len(expect), chunk):
                got = actual[c:c + chunk]
                if got != expect[c:c + chunk] and got != self.master[c:c + chunk]:
                    bad.append(c // chunk)
            assert not bad, (f"shadow chunks {bad[:10]} show neither the old nor the new point in "
                             f"time of the interrupted update {p[1]}")
            return
        assert actual == expect, mismatch(which, actual, expect, 0, None, chunk)


def mismatch(which: str, actual: bytes, expect: bytes | bytearray, start: int, end: int | None,
             chunk: int) -> str:
    a, e = actual[start:end], expect[start:end]
    bad = sorted({(start + k) // chunk for k in range(min(len(a), len(e))) if a[k] != e[k]})
    name = "master" if which == "m" else "shadow"
    return f"{name} differs from the model in chunks {bad[:20]} ({len(bad)} in all)"


def read_all(s: object, side: Side, size: int) -> bytes:
    out = bytearray()
    for off in range(0, size, MIB):
        out += s.read(side, off, min(MIB, size - off))  # type: ignore[attr-defined]
    return bytes(out)


@contextlib.contextmanager
def recovered(master: Path, shadow: Path, bitmap: Path) -> Iterator[tuple[Set, SetStatus]]:
    """The set reopened after the kill, and its status: the open must have recovered it."""
    with Engine() as eng:
        s = eng.open(master, shadow, bitmap)
        st = s.status()
        assert st.flags & Flag.RECOVERED, f"flags after the crash: {st.flags!r}"
        yield s, st


def assert_clean_reopen(master: Path, shadow: Path, bitmap: Path) -> None:
    """After the recovery and a clean close, the set opens as a clean one with nothing to copy."""
    with Engine() as eng:
        s = eng.open(master, shadow, bitmap)
        st = s.status()
        assert not st.flags & (Flag.RECOVERED | Flag.COPYING | Flag.INCOMPLETE), st.flags
        assert st.copy_chunks == 0
        s.close()


# ---- (a) dependent set: the shadow keeps the point in time ------------------------------------

DEP_SEEDS = range(20)


def dependent_volumes(tmp_vol, rng: random.Random, size: int, chunk: int, compact: bool
                      ) -> tuple[Path, Path, Path, bytes, int]:
    """A dependent set's volumes: the master holding the point in time (random bytes), a shadow
    of junk (compact: room for half the master and two chunks) and a bitmap volume; with the
    point in time and how far into the master the writes may go (compact: its first half)."""
    limit = size // 2 if compact else size
    shadow_size = (limit // chunk + 2) * chunk if compact else size
    master = tmp_vol(size, "master.img")
    shadow = tmp_vol(shadow_size, "shadow.img")
    bitmap = tmp_vol(bitmap_size(size, shadow_size, chunk, Kind.DEPENDENT), "bitmap.img")
    pit = rng.randbytes(size)
    fill(master, pit)
    fill(shadow, rng.randbytes(shadow_size))
    return master, shadow, bitmap, pit, limit


@pytest.mark.parametrize("seed", [pytest.param(s, marks=slow_unless(s < 2)) for s in DEP_SEEDS])
def test_crash_dependent_keeps_point_in_time(tmp_vol, tmp_path, seed):
    rng = random.Random(1000 + seed)
    chunk = rng.choice([4096, 16384, 32768, 65536])
    size = 2 * MIB + rng.choice([0, 4096, chunk // 2]) if chunk > 4096 else 2 * MIB
    compact = seed % 5 == 4
    master, shadow, bitmap, pit, limit = dependent_volumes(tmp_vol, rng, size, chunk, compact)
    lines = run_and_kill(tmp_path, {
        "master": str(master), "shadow": str(shadow), "bitmap": str(bitmap), "mode": "enable",
        "kind": "dependent", "chunk_size": chunk, "seed": seed, "ops": 1,
        "max_len": 3 * chunk, "write_limit": limit,
    }, rng.uniform(0.05, 0.3))
    model = Model(seed, bytearray(pit), bytearray(pit))
    model.replay(lines)

    with recovered(master, shadow, bitmap) as (s, st):
        assert bool(st.flags & Flag.COMPACT) == compact
        assert not st.flags & Flag.OUT_OF_SPACE
        shadow_img = read_all(s, Side.SHADOW, size)
        assert shadow_img == pit, mismatch("s", shadow_img, pit, 0, None, chunk)
        model.check("m", read_all(s, Side.MASTER, size), chunk)
        s.close()
    model.check("m", master.read_bytes(), chunk)


# ---- (b) independent set: the interrupted initial copy resumes and completes ------------------

IND_SEEDS = range(12)


@pytest.mark.parametrize("seed", [pytest.param(s, marks=slow_unless(s < 2)) for s in IND_SEEDS])
def test_crash_independent_initial_copy_resumes(tmp_vol, tmp_path, seed):
    rng = random.Random(2000 + seed)
    chunk = rng.choice([4096, 16384, 65536])
    size = 4 * MIB
    crashes = 2 if seed % 3 == 2 else 1
    master = tmp_vol(size, "master.img")
    shadow = tmp_vol(size, "shadow.img")
    bitmap = tmp_vol(bitmap_size(size, size, chunk, Kind.INDEPENDENT), "bitmap.img")
    image = rng.randbytes(size)
    fill(master, image)
    fill(shadow, rng.randbytes(size))
    # The copier pauses after every run of up to 1 MiB: four pauses of 150 ms keep the copy going
    # well past the latest kill.
    base = {"master": str(master), "shadow": str(shadow), "bitmap": str(bitmap), "seed": seed,
            "ops": 0}
    run_and_kill(tmp_path, {**base, "mode": "enable", "kind": "independent",
                            "chunk_size": chunk, "copy_delay_ms": 150, "copy_units": 1},
                 rng.uniform(0.05, 0.3))
    for _ in range(crashes - 1):   # crash again while the resumed copy runs
        run_and_kill(tmp_path, {**base, "mode": "open"}, rng.uniform(0.05, 0.3))

    with recovered(master, shadow, bitmap) as (s, st):
        assert st.flags & Flag.COPYING, "the interrupted initial copy did not resume on open"
        assert not st.flags & Flag.TO_MASTER
        assert (st.copy_delay_ms, st.copy_units) == (150, 1), "the throttle was not kept"
        # While the copy runs, the shadow already reads as the point in time.
        assert s.read(Side.SHADOW, size - chunk, chunk) == image[size - chunk:]
        s.set_copy_params(0, 256)
        assert s.wait(timeout=60), "the resumed copy did not finish"
        st = s.status()
        assert not st.flags & (Flag.COPYING | Flag.INCOMPLETE)
        assert st.copy_chunks == 0
        assert s.progress().result == 0
        s.close()
    assert master.read_bytes() == image, "the master changed"
    got = shadow.read_bytes()
    assert got == image, mismatch("s", got, image, 0, None, chunk)
    assert_clean_reopen(master, shadow, bitmap)


# ---- (c) writes on both sides and updates under load ------------------------------------------

LOAD_SEEDS = range(10)


@pytest.mark.parametrize("seed", [pytest.param(s, marks=slow_unless(s < 1)) for s in LOAD_SEEDS])
@pytest.mark.parametrize("kind", ["independent", "dependent"])
def test_crash_writes_and_updates(tmp_vol, tmp_path, kind, seed):
    rng = random.Random(3000 + seed + (0 if kind == "independent" else 500))
    chunk = rng.choice([4096, 16384, 32768, 65536])
    size = 2 * MIB
    k = Kind.INDEPENDENT if kind == "independent" else Kind.DEPENDENT
    master = tmp_vol(size, "master.img")
    shadow = tmp_vol(size, "shadow.img")
    bitmap = tmp_vol(bitmap_size(size, size, chunk, k), "bitmap.img")
    pit = rng.randbytes(size)
    fill(master, pit)
    fill(shadow, rng.randbytes(size))
    lines = run_and_kill(tmp_path, {
        "master": str(master), "shadow": str(shadow), "bitmap": str(bitmap), "mode": "enable",
        "kind": kind, "chunk_size": chunk, "copy_delay_ms": 10, "copy_units": 1, "seed": seed,
        "ops": 1, "max_len": 3 * chunk, "shadow_prob": 0.25, "update_prob": 0.1,
        "full_prob": 0.3,
    }, rng.uniform(0.05, 0.3))
    model = Model(seed, bytearray(pit), bytearray(pit))
    model.replay(lines)

    with recovered(master, shadow, bitmap) as (s, st):
        s.set_copy_params(0, 256)
        assert s.wait(timeout=60), "the resumed copy did not finish"
        assert s.progress().result == 0
        # What a reader sees after recovery is what the completed operations wrote.
        model.check("m", read_all(s, Side.MASTER, size), chunk)
        model.check("s", read_all(s, Side.SHADOW, size), chunk)
        if k == Kind.INDEPENDENT:   # the copy is done: the shadow volume holds the image itself
            model.check("s", shadow.read_bytes(), chunk)
        s.update(Direction.TO_SHADOW)
        assert s.wait(timeout=60), "the update did not finish"
        assert s.progress().result == 0
        st = s.status()
        assert not st.flags & (Flag.COPYING | Flag.INCOMPLETE)
        m_img = read_all(s, Side.MASTER, size)
        s_img = read_all(s, Side.SHADOW, size)
        assert s_img == m_img, mismatch("s", s_img, m_img, 0, None, chunk)
        s.close()
    m_file = master.read_bytes()
    model.check("m", m_file, chunk)
    if k == Kind.INDEPENDENT:
        s_file = shadow.read_bytes()
        assert s_file == m_file, mismatch("s", s_file, m_file, 0, None, chunk)
    assert_clean_reopen(master, shadow, bitmap)


# ---- (d) dependent set: first writes from several threads at once ----------------------------

THREAD_SEEDS = range(8)


@pytest.mark.parametrize("seed", [pytest.param(s, marks=slow_unless(s < 2)) for s in THREAD_SEEDS])
def test_crash_batched_first_writes(tmp_vol, tmp_path, seed):
    """Several threads make first writes at once, so the commit batches their copies and bits
    (one shadow sync and one bitmap flush for many requests); a kill lands among the batches.
    After it the shadow still shows the point in time, every completed write is on the master,
    the writes under way read old or new, and every chunk that changed has its shadow bit."""
    rng = random.Random(4000 + seed)
    chunk = rng.choice([4096, 16384, 32768, 65536])
    size = 4 * MIB
    nthreads = rng.choice([2, 4, 6])
    compact = seed % 4 == 3
    master, shadow, bitmap, pit, limit = dependent_volumes(tmp_vol, rng, size, chunk, compact)
    lines = run_and_kill(tmp_path, {
        "master": str(master), "shadow": str(shadow), "bitmap": str(bitmap), "mode": "enable",
        "kind": "dependent", "chunk_size": chunk, "seed": seed, "ops": 1, "threads": nthreads,
        "max_len": rng.choice([chunk, 4 * chunk, 32 * chunk]), "write_limit": limit,
    }, rng.uniform(0.05, 0.3))
    # Threads write disjoint slices: replay each op on its own, the ones under way old-or-new.
    expect = bytearray(pit)
    started: dict[int, tuple[int, bytes]] = {}
    done = 0
    for line in lines[1:]:
        f = line.split()
        i = int(f[1])
        if f[0] == "W":
            started[i] = (int(f[3]), op_data(seed, i, int(f[4])))
        else:
            assert f[0] == "D", f"unexpected journal line {line!r}"
            off, data = started.pop(i)
            expect[off:off + len(data)] = data
            done += 1
    assert done > nthreads, "too few writes completed before the kill to test anything"
    assert len(started) <= nthreads

    def check_master(got: bytes) -> None:
        allowed = {k for off, d in started.values() for k in range(off, off + len(d))}
        bad = [k for k in range(size) if got[k] != expect[k] and
               not (k in allowed and any(off <= k < off + len(d) and got[k] == d[k - off]
                                         for off, d in started.values()))]
        assert not bad, mismatch("m", got, bytes(expect), 0, None, chunk)

    with recovered(master, shadow, bitmap) as (s, st):
        assert not st.flags & Flag.OUT_OF_SPACE
        shadow_img = read_all(s, Side.SHADOW, size)
        assert shadow_img == pit, mismatch("s", shadow_img, pit, 0, None, chunk)
        master_img = read_all(s, Side.MASTER, size)
        check_master(master_img)
        changed = {k // chunk for k in range(0, size, chunk)
                   if master_img[k:k + chunk] != pit[k:k + chunk]}
        missed = sorted(changed - set(s.bits("shadow")))
        assert not missed, f"changed chunks without their shadow bit: {missed[:20]}"
        s.close()
    check_master(master.read_bytes())


# ---- (e) a restore from one of several shadows ------------------------------------------------

RESTORE_SEEDS = range(9)
RESTORE_KINDS = ("dependent", "independent", "compact")


@pytest.mark.parametrize("seed", [pytest.param(s, marks=slow_unless(s < 3))
                                  for s in RESTORE_SEEDS])
def test_crash_restore_with_siblings(tmp_vol, tmp_path, seed):
    """A master with a dependent, an independent and a compact dependent shadow (overflow
    attached) is restored from one of them (each in turn over the seeds) while the master is
    written; the kill lands during the restore. Reopened with the restored set first (the worst
    order), the restore is held until the others are open: none loses its point in time, the
    resumed restore completes, and the independent one's next update makes it equal again."""
    rng = random.Random(5000 + seed)
    chunk = rng.choice([4096, 16384, 65536])
    size = 2 * MIB
    nchunks = size // chunk
    source = seed % 3
    full = rng.random() < 0.5
    master = tmp_vol(size, "master.img")
    fill(master, rng.randbytes(size))
    vols: list[dict[str, str]] = []
    pits: list[bytes] = []
    with Engine() as eng:
        sets: list[Set] = []
        for i, name in enumerate(RESTORE_KINDS):
            kind = Kind.INDEPENDENT if name == "independent" else Kind.DEPENDENT
            ssize = size // 4 if name == "compact" else size
            spec = {"shadow": str(tmp_vol(ssize, f"shadow{i}.img")),
                    "bitmap": str(tmp_vol(bitmap_size(size, ssize, chunk, kind),
                                          f"bitmap{i}.img"))}
            ov = None
            if name == "compact":   # room for every chunk of the master
                spec["overflow"] = str(tmp_vol(2 * 4096 + size, "overflow.img"))
                ov = eng.init_overflow(spec["overflow"], chunk)
            sets.append(eng.enable(master, spec["shadow"], spec["bitmap"], kind,
                                   chunk_size=chunk, overflow=ov))
            assert sets[-1].wait(30)
            vols.append(spec)
        # points in time that differ from the master and from each other
        for s in sets:
            for _ in range(rng.randint(3, 8)):
                off = rng.randrange(0, size - 2 * chunk)
                s.write(Side.SHADOW if rng.random() < 0.7 else Side.MASTER, off,
                        rng.randbytes(rng.randint(1, 2 * chunk)))
        # the source's upper half differs too: its restore lasts 16 throttle pauses at least
        # (the load writes only the lower half, so its copy-on-demand cannot finish it early)
        sets[source].write(Side.SHADOW, size // 2, rng.randbytes(size // 2))
        pits = [read_all(s, Side.SHADOW, size) for s in sets]
        before = read_all(sets[0], Side.MASTER, size)
    lines = run_and_kill(tmp_path, {
        "master": str(master), "mode": "restore", "sets": vols, "source": source, "full": full,
        "copy_delay_ms": 50, "copy_units": max(1, nchunks // 32), "seed": seed, "ops": 1,
        "max_len": 2 * chunk, "write_limit": size // 2,
    }, rng.uniform(0.05, 0.3))
    model = Model(seed, bytearray(pits[source]), bytearray(pits[source]))
    model.replay(lines)

    with Engine() as eng:
        ov = eng.open_overflow(vols[2]["overflow"])
        order = [source] + [i for i in range(3) if i != source]
        sets = [None, None, None]   # type: ignore[list-item]
        for i in order:
            sets[i] = eng.open(master, vols[i]["shadow"], vols[i]["bitmap"],
                               overflow=ov if i == 2 else None)
            if i == source:
                st = sets[i].status()
                assert st.flags & Flag.RECOVERED
                assert st.flags & Flag.RESTORE_HELD, f"flags after the crash: {st.flags!r}"
                assert not sets[i].progress().active, "the restore resumed before its siblings"
        src = sets[source]
        model.check("m", read_all(src, Side.MASTER, size), chunk)
        for i, s in enumerate(sets):   # nothing lost its point in time
            got = read_all(s, Side.SHADOW, size)
            assert got == pits[i], mismatch("s", got, pits[i], 0, None, chunk)
        src.set_copy_params(0, 256)
        src.update(Direction.TO_MASTER)   # resumes the held restore
        assert src.wait(timeout=60), "the resumed restore did not finish"
        assert src.progress().result == 0
        st = src.status()
        assert not st.flags & (Flag.COPYING | Flag.INCOMPLETE | Flag.RESTORE_HELD), st.flags
        m_img = read_all(src, Side.MASTER, size)
        model.check("m", m_img, chunk)
        for i, s in enumerate(sets):
            got = read_all(s, Side.SHADOW, size)
            assert got == pits[i], mismatch("s", got, pits[i], 0, None, chunk)
        ind = sets[1]
        changed = {c for c in range(nchunks)
                   if m_img[c * chunk:(c + 1) * chunk] != pits[1][c * chunk:(c + 1) * chunk]}
        missed = sorted(changed - set(ind.bits("shadow")))
        assert not missed, f"changed chunks the independent sibling misses: {missed[:20]}"
        ind.update(Direction.TO_SHADOW)
        assert ind.wait(timeout=60)
        assert read_all(ind, Side.SHADOW, size) == m_img
        assert before != m_img or not changed
    model.check("m", master.read_bytes(), chunk)
