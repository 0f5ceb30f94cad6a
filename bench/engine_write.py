"""Row 3: write throughput through a DEPENDENT set, against plain pwrite on the same disk.

Each pass writes the whole volume once, sequentially, split into equal contiguous slices, one per
writer thread (the engine releases the GIL inside its calls, so threads write concurrently and
its group commit can merge their syncs).

  first writes  a new point in time was just taken (update(TO_SHADOW)), so every chunk's first
                write copies it to the shadow, makes that durable, records the bit, then
                writes the master
  rewrites      the same pass again: every chunk already has its own copy
  plain         os.pwrite to a separate, fully allocated file on the same file system
                (rewrites and plain passes are short, so each round runs them CHEAP_PASSES times)
  durable       os.pwrite + os.fdatasync after every write, same file (a durable baseline)

The set's bitmap volume is a file on the same disk unless stated ("bitmap in memory").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from common import (
    KiB,
    Line,
    MiB,
    Section,
    drop_caches,
    fill_zero,
    fmt_samples,
    log,
    md_table,
    median,
    run_threads,
    sparse_file,
)

from ptcopy.engine import CHUNK_DEFAULT, Direction, Engine, Kind, Set, Side, bitmap_size

WriteFn = Callable[[int, bytes], None]

IO_SIZES = (MiB, 32 * KiB)
THREADS = (1, 4)
# Rewrite and plain passes take tens of milliseconds: run them this many times per round.
CHEAP_PASSES = 3


def _pass(write: WriteFn, nthreads: int, io: int, total: int) -> float:
    per = total // nthreads
    bufs = [os.urandom(io) for _ in range(nthreads)]

    def work(i: int) -> None:
        buf = bufs[i]
        for off in range(i * per, (i + 1) * per, io):
            write(off, buf)

    return run_threads(nthreads, work)


def _mibs(total: int, t: float) -> float:
    return total / MiB / t


def _io_name(io: int) -> str:
    return f"{io // MiB} MiB" if io >= MiB else f"{io // KiB} KiB"


def row_writes(data_dir: Path, size: int, reps: int, keep: bool = False) -> Section:
    wm, ws, wb, wp = (data_dir / f"ptbench-W{x}" for x in "MSBP")
    chunk = CHUNK_DEFAULT
    log(f"row 3: allocating {size / MiB:.0f} MiB master, shadow and plain target")
    for p in (wm, ws, wp):
        fill_zero(p, size)
    sparse_file(wb, bitmap_size(size, size, chunk, Kind.DEPENDENT))
    pfd = os.open(wp, os.O_RDWR)
    eng = Engine()
    results: dict[tuple[str, int, int], list[float]] = {}

    def plain(off: int, buf: bytes) -> None:
        os.pwrite(pfd, buf, off)

    def durable(off: int, buf: bytes) -> None:
        os.pwrite(pfd, buf, off)
        os.fdatasync(pfd)

    def engine_passes(s: Set, label: str, with_rewrites: bool) -> None:
        def ptw(off: int, buf: bytes) -> None:
            s.write(Side.MASTER, off, buf)

        for io in IO_SIZES:
            for nt in THREADS:
                for r in range(reps):
                    log(f"row 3 {label}: {_io_name(io)} x {nt} threads, round {r + 1}/{reps}")
                    s.update(Direction.TO_SHADOW)   # dependent: a new point in time, no copy
                    s.wait()
                    if s.status().diff_chunks != 0:
                        raise RuntimeError("a new point in time should leave no chunk marked")
                    drop_caches()
                    t = _pass(ptw, nt, io, size)
                    results.setdefault((f"first {label}", io, nt), []).append(t)
                    if s.status().diff_chunks != size // chunk:
                        raise RuntimeError("every chunk should have been copied on write")
                    for _ in range(CHEAP_PASSES if with_rewrites else 0):
                        drop_caches()
                        t = _pass(ptw, nt, io, size)
                        results.setdefault((f"rewrite {label}", io, nt), []).append(t)

    try:
        s = eng.enable(wm, ws, wb, Kind.DEPENDENT, chunk_size=chunk)
        engine_passes(s, "bitmap file", True)
        s.disable()
        s = eng.enable(wm, ws, None, Kind.DEPENDENT, chunk_size=chunk)
        engine_passes(s, "bitmap in memory", False)
        s.disable()
        for io in IO_SIZES:
            for nt in THREADS:
                for r in range(reps):
                    log(f"row 3 baselines: {_io_name(io)} x {nt} threads, round {r + 1}/{reps}")
                    for _ in range(CHEAP_PASSES):
                        drop_caches()
                        results.setdefault(("plain", io, nt), []).append(
                            _pass(plain, nt, io, size))
                    drop_caches()
                    results.setdefault(("durable", io, nt), []).append(
                        _pass(durable, nt, io, size))
    finally:
        os.close(pfd)
        eng.close()
        if not keep:
            for p in (wm, ws, wb, wp):
                p.unlink(missing_ok=True)

    def rate(key: tuple[str, int, int]) -> float:
        return _mibs(size, median(results[key]))

    sec = Section()
    vol = f"{size / MiB:.0f} MiB"
    for io in IO_SIZES:
        for nt in THREADS:
            cfg = f"{_io_name(io)} writes x {nt} thread{'s' if nt > 1 else ''}"
            first = rate(("first bitmap file", io, nt))
            rew = rate(("rewrite bitmap file", io, nt))
            pl = rate(("plain", io, nt))
            du = rate(("durable", io, nt))
            sec.lines += [
                Line("3", f"first writes (COW), {cfg}, {vol}", f"{first:.0f} MiB/s",
                     "plain pwrite", f"{pl:.0f} MiB/s", f"{first / pl:.2f}x", "≥ 0.5x",
                     first / pl >= 0.5),
                Line("3", f"first writes (COW), {cfg}, {vol}", f"{first:.0f} MiB/s",
                     "pwrite + fdatasync each (durable)", f"{du:.0f} MiB/s",
                     f"{first / du:.2f}x", "—", None),
                Line("3", f"rewrites, {cfg}, {vol}", f"{rew:.0f} MiB/s", "plain pwrite",
                     f"{pl:.0f} MiB/s", f"{rew / pl:.2f}x", "≥ 0.9x", rew / pl >= 0.9),
            ]
    rows = []
    for io in IO_SIZES:
        for nt in THREADS:
            rows.append([
                _io_name(io), str(nt),
                f"{rate(('first bitmap file', io, nt)):.0f}",
                f"{rate(('first bitmap in memory', io, nt)):.0f}",
                f"{rate(('rewrite bitmap file', io, nt)):.0f}",
                f"{rate(('plain', io, nt)):.0f}",
                f"{rate(('durable', io, nt)):.0f}",
            ])
    sec.extra_tables.append(
        f"Row 3 in full (MiB/s, medians of {reps} passes, {reps * CHEAP_PASSES} for rewrites and "
        f"plain pwrite; {vol} written per pass; chunk "
        f"{chunk // KiB} KiB):\n\n" + md_table(
            ["write size", "threads", "first writes", "first writes, bitmap in memory",
             "rewrites", "plain pwrite", "pwrite + fdatasync"], rows))
    samples = "; ".join(
        f"{k[0]} {_io_name(k[1])}x{k[2]}: {fmt_samples(v)}" for k, v in results.items())
    sec.notes.append(f"Row 3 samples (seconds per pass): {samples}.")
    return sec
