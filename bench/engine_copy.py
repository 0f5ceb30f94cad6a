"""Rows 1 and 2: full copy of a volume, and an update with 1 % of the chunks changed.

Files (on the data directory, a real disk, never tmpfs):
  M  the master, random data
  S  ptcopy's shadow, also the target of dd and cp (same file, so the same blocks)
  B  the bitmap volume of the set
  R  rsync's target: holds the master's previous image when rsync runs
Every timed step starts after ``sync`` and a drop of the page cache.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    Line,
    MiB,
    Section,
    copy_file,
    drop_caches,
    fdatasync_path,
    fill_random,
    fmt_s,
    fmt_samples,
    log,
    median,
    run,
    same_range,
    sparse_file,
    timed,
)

from ptcopy.engine import CHUNK_DEFAULT, Direction, Engine, Kind, Set, Side, bitmap_size


@dataclass
class Volumes:
    data_dir: Path
    size: int
    chunk: int = CHUNK_DEFAULT
    engine: Engine = field(default_factory=Engine)
    set: Set | None = None
    full_copy_s: float | None = None   # median of ptcopy's copy(TO_SHADOW), row 1

    M: Path = field(init=False)   # the files the module docstring names
    S: Path = field(init=False)
    B: Path = field(init=False)
    R: Path = field(init=False)

    def __post_init__(self) -> None:
        self.M, self.S, self.B, self.R = (self.data_dir / f"ptbench-{x}" for x in "MSBR")

    def files(self) -> list[Path]:
        return [self.M, self.S, self.B, self.R]

    def prepare(self) -> None:
        log(f"filling master {self.M} with {self.size / MiB:.0f} MiB of random data")
        fill_random(self.M, self.size)
        log("allocating the shadow (untimed copy of the master)")
        copy_file(self.M, self.S)
        sparse_file(self.B, bitmap_size(self.size, self.size, self.chunk, Kind.INDEPENDENT))

    def enable(self) -> Set:
        if self.set is not None:
            self.set.disable()
            self.set = None
        self.set = self.engine.enable(self.M, self.S, self.B, Kind.INDEPENDENT,
                                      chunk_size=self.chunk)
        return self.set

    def ensure_set(self) -> Set:
        if self.set is None:
            log("enabling the set (untimed full copy)")
            self.enable().wait()
        return self.set

    def close(self) -> None:
        if self.set is not None:
            self.set.disable()
            self.set = None
        self.engine.close()


# Orders of the four row-1 steps, round by round: each step follows each other step once.
WILLIAMS_4 = ((0, 1, 3, 2), (1, 2, 0, 3), (2, 3, 1, 0), (3, 0, 2, 1))


def row_full_copy(v: Volumes, reps: int) -> Section:
    size = v.size
    dd = ["dd", f"if={v.M}", f"of={v.S}", "bs=1M", "iflag=direct", "oflag=direct",
          "conv=notrunc,fsync"]
    cp = ["cp", "--sparse=never", str(v.M), str(v.S)]

    def enable_wait() -> None:
        if v.set is not None:   # untimed: the previous round's set goes first
            v.set.disable()
            v.set = None
        drop_caches()
        t0 = time.perf_counter()
        v.enable().wait()
        times["enable"].append(time.perf_counter() - t0)

    def copy_wait() -> None:
        s = v.ensure_set()
        drop_caches()
        t0 = time.perf_counter()
        s.copy(Direction.TO_SHADOW)
        s.wait()
        times["copy"].append(time.perf_counter() - t0)

    def dd_run() -> None:
        drop_caches()
        times["dd"].append(timed(lambda: run(*dd)))

    def cp_sync() -> None:
        drop_caches()
        t0 = time.perf_counter()
        run(*cp)
        fdatasync_path(v.S)
        times["cp"].append(time.perf_counter() - t0)

    steps = [("enable", enable_wait), ("copy", copy_wait), ("dd", dd_run), ("cp", cp_sync)]
    times: dict[str, list[float]] = {name: [] for name, _ in steps}
    # Interleaved, in the orders of a Williams Latin square: over 4 rounds every tool runs once
    # in each position and right after each of the other three, so a noisy neighbour, or a
    # step that leaves the machine busy for whatever runs next (cp, which truncates and
    # reallocates the target, does), hits every tool alike rather than one of them.
    for i in range(reps):
        for j in WILLIAMS_4[i % len(WILLIAMS_4)]:
            name, step = steps[j]
            log(f"row 1, round {i + 1}/{reps}: {name}")
            step()
    t_enable, t_copy, t_dd, t_cp = (times[n] for n, _ in steps)
    v.full_copy_s = median(t_copy)
    gib = f"{size / MiB / 1024:g} GiB" if size >= 1024 * MiB else f"{size / MiB:g} MiB"
    sec = Section()
    me, mc, mdd, mcp = median(t_enable), median(t_copy), median(t_dd), median(t_cp)
    what_e = f"full copy {gib}: enable INDEPENDENT → wait()"
    what_c = f"full copy {gib}: copy(TO_SHADOW) → wait()"

    def speed(pt: float, other: float) -> str:
        return f"{other / pt:.2f}x their speed"

    sec.lines += [
        Line("1a", what_e, fmt_s(me), "dd direct + fsync", fmt_s(mdd), speed(me, mdd),
             "≥ 1x dd", mdd / me >= 1.0),
        Line("1a", what_e, fmt_s(me), "cp + fdatasync", fmt_s(mcp), speed(me, mcp),
             "—", None),
        Line("1b", what_c, fmt_s(mc), "dd direct + fsync", fmt_s(mdd), speed(mc, mdd),
             "≥ 1x dd", mdd / mc >= 1.0),
        Line("1b", what_c, fmt_s(mc), "cp + fdatasync", fmt_s(mcp), speed(mc, mcp),
             "—", None),
    ]
    sec.notes += [
        f"Row 1 samples ({reps} rounds, interleaved; the order changes every round so that each "
        "tool runs once right after each of the others; median reported): "
        f"enable+wait {fmt_samples(t_enable)}; copy+wait {fmt_samples(t_copy)}; "
        f"dd {fmt_samples(t_dd)}; cp+fdatasync {fmt_samples(t_cp)}. From the fastest sample "
        f"of each instead of the median: enable+wait {min(t_dd) / min(t_enable):.2f}x and "
        f"copy+wait {min(t_dd) / min(t_copy):.2f}x dd's speed, "
        f"{min(t_cp) / min(t_enable):.2f}x and {min(t_cp) / min(t_copy):.2f}x cp's.",
    ]
    return sec


def row_update(v: Volumes, reps: int, seed: int) -> Section:
    s = v.ensure_set()
    rng = random.Random(seed)
    chunk = v.chunk
    nchunks = v.size // chunk
    k = max(1, nchunks // 100)
    log(f"row 2: rsync target {v.R} := master (untimed copy)")
    copy_file(v.M, v.R)
    if v.full_copy_s is None:
        log("row 2: no row-1 figure; timing one full copy(TO_SHADOW) for the comparison")
        drop_caches()

        def copy_wait() -> None:
            s.copy(Direction.TO_SHADOW)
            s.wait()

        v.full_copy_s = timed(copy_wait)
    t_upd: list[float] = []
    t_rs: list[float] = []
    rsync = ["rsync", "--inplace", "--no-whole-file", "--ignore-times", str(v.M), str(v.R)]
    for i in range(reps):
        # S and R both hold the master's current image; change 1 % of the master's chunks
        # through the set, so the set's bitmap knows them and R is one step behind.
        changed = sorted(rng.sample(range(nchunks), k))
        log(f"row 2, round {i + 1}/{reps}: writing {k} random chunks through the set")
        for c in changed:
            s.write(Side.MASTER, c * chunk, os.urandom(chunk))
        diff = s.status().diff_chunks
        if diff != k:
            raise RuntimeError(f"expected {k} chunks marked, the set has {diff}")
        drop_caches()

        def update_wait() -> None:
            s.update(Direction.TO_SHADOW)
            s.wait()

        t_upd.append(timed(update_wait))
        log(f"row 2, round {i + 1}/{reps}: rsync")
        drop_caches()

        def rsync_sync() -> None:
            run(*rsync)
            fdatasync_path(v.R)

        t_rs.append(timed(rsync_sync))
        for c in rng.sample(changed, min(8, k)):
            for tgt in (v.S, v.R):
                if not same_range(v.M, tgt, c * chunk, chunk):
                    raise RuntimeError(f"chunk {c} of {tgt} differs from the master")
    mu, mr = median(t_upd), median(t_rs)
    full = v.full_copy_s
    sec = Section()
    what = f"update, {k} of {nchunks} chunks (1 %) changed: update(TO_SHADOW) → wait()"
    sec.lines += [
        Line("2", what, fmt_s(mu), "rsync --inplace --no-whole-file -I + fdatasync", fmt_s(mr),
             f"{mr / mu:.0f}x faster", "≥ 50x faster", mr / mu >= 50),
        Line("2", what, fmt_s(mu), "ptcopy full copy (row 1b)", fmt_s(full),
             f"{100 * mu / full:.1f} % of it", "≤ 2 %", mu / full <= 0.02),
    ]
    sec.notes += [
        f"Row 2 samples ({reps} rounds, each with fresh random chunks; median reported): "
        f"update+wait {fmt_samples(t_upd)}; rsync+fdatasync {fmt_samples(t_rs)}. "
        f"Fastest samples: {min(t_rs) / min(t_upd):.0f}x faster than rsync, "
        f"{100 * min(t_upd) / full:.1f} % of the full copy. "
        f"Chunk size {chunk // 1024} KiB. After every round 8 changed chunks were checked "
        "byte for byte on both targets.",
    ]
    return sec
