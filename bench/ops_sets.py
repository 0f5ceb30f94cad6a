"""Rows 1-4 of bench/run_ops.py, all through ptcopyd, each next to its baseline in the same run:

  1 update of an independent set with 1 % of its chunks changed (written through the served
    master device), ``Update`` to the job's ``Completed``, vs ``rsync --inplace
    --no-whole-file --ignore-times`` of the same change + fdatasync;
  2 an update with nothing to copy, call to ``Completed``;
  3 copy-on-write first writes through a dependent set's served master vs rewrites of the same
    blocks (fio, 1 MiB sequential, O_DIRECT, queue depth 4);
  4 a full copy, ``CreateSet`` to ``Completed``, vs ``dd bs=1M iflag=direct oflag=direct``
    between the same two volumes.

Rows 3 and 4 also time what no design can skip, from the same cold cache, with fio at the depth
the row's writer or ptcopy's copier keeps: row 3 reads the master (a first write must save the
chunk's old data), row 4 reads the master and writes the shadow at once (a copy's I/O, with no
copy program in between). That puts a ceiling on each row's ratio for this disk, measured in
the same run.

Rows 1, 2 and 4 share one independent set per round (created, updated, disabled); row 3 then
uses a dependent set on the same volumes.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import Fio, MiB, copy_file, drop_caches, fdatasync_path, log, run
from ops_rig import CHUNK, OpsRig

from ptcopy.engine import Kind

NOOP_SAMPLES = 5   # row 2: updates with nothing to copy, per round


@dataclass
class Samples:
    """Every sample of one row: ptcopy's and its baseline's (seconds or bytes per second)."""

    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    # what no design can beat on this disk (rows 3 and 4: reading the source alone, cold)
    bound: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class SetRows:
    """Rows 1-4 on one master/shadow/bitmap triple of ``size`` bytes."""

    def __init__(self, rig: OpsRig, size: int, rows: set[int], reps: int) -> None:
        self.rig = rig
        self.size = size
        self.rows = rows
        self.reps = reps
        self.res: dict[int, Samples] = {r: Samples() for r in (1, 2, 3, 4) if r in rows}
        self.rng = random.Random(13)

    def prepare(self) -> None:
        log(f"rows {sorted(self.res)}: {self.size // MiB} MiB master of random data, shadow and "
            "bitmap as loop devices")
        self.vols = self.rig.set_volumes("ind", self.size, Kind.INDEPENDENT)
        if 1 in self.rows:   # rsync's pair: M2 as the master was before the change, R2 = M2
            d = self.rig.root / "rsync"
            d.mkdir()
            self.m2, self.r2 = d / "M", d / "R"
            self.rig.on_cleanup("remove the rsync files", lambda: [p.unlink(missing_ok=True)
                                                                 for p in (self.m2, self.r2)])
            run("dd", f"if={self.vols[0]}", f"of={self.m2}", "bs=1M", "iflag=direct",
                "status=none")
            fdatasync_path(self.m2)
            copy_file(self.m2, self.r2)

    def measure(self) -> None:
        independent = self.rows & {1, 2, 4}
        for rnd in range(self.reps if independent else 0):
            self.independent_round(rnd)
        if 3 in self.rows:
            self.dependent_rounds()

    # -- rows 1, 2, 4 --

    def independent_round(self, rnd: int) -> None:
        m, s, _b = self.vols
        if 4 in self.rows:
            drop_caches()
            t0 = time.monotonic()
            run("dd", f"if={m}", f"of={s}", "bs=1M", "iflag=direct", "oflag=direct",
                f"count={self.size // MiB}", "status=none")
            self.res[4].theirs.append(time.monotonic() - t0)
            # the copier keeps up to 8 MiB of 1 MiB runs in flight: move at that depth
            self.res[4].bound.append(self.copy_cold(m, s, 8))
        drop_caches()
        t0 = time.monotonic()
        set_path, job = self.rig.create_set(f"ind{rnd}", "independent", self.vols)
        full = self.rig.job_end(job, t0)
        if 4 in self.rows:
            self.res[4].ours.append(full)
        log(f"  round {rnd + 1}: full copy {full:.2f} s"
            + (f", dd {self.res[4].theirs[-1]:.2f} s" if 4 in self.rows else ""))
        dev = self.rig.master_device(set_path)
        if 1 in self.rows:
            self.one_percent(rnd, set_path, dev)
        if 2 in self.rows:
            for _ in range(NOOP_SAMPLES):
                self.res[2].ours.append(self.rig.call_to_end(
                    lambda: self.rig.c.update(set_path, "shadow")))
            log(f"  round {rnd + 1}: updates with nothing to copy "
                + ", ".join(f"{t * 1000:.1f}" for t in self.res[2].ours[-NOOP_SAMPLES:]) + " ms")
        self.rig.disable(set_path)

    def one_percent(self, rnd: int, set_path: str, dev: str) -> None:
        """Row 1: write 1 % of the chunks through the served master (and into rsync's M2), then
        time the update and rsync, each from a cold page cache."""
        nchunks = self.size // CHUNK
        chunks = sorted(self.rng.sample(range(nchunks), max(1, nchunks // 100)))
        data = {c: os.urandom(CHUNK) for c in chunks}
        write_direct(dev, data)
        fd = os.open(self.m2, os.O_WRONLY)
        try:
            for c, buf in data.items():
                os.pwrite(fd, buf, c * CHUNK)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        drop_caches()
        t_up = self.rig.call_to_end(lambda: self.rig.c.update(set_path, "shadow"))
        drop_caches()
        t0 = time.monotonic()
        run("rsync", "--inplace", "--no-whole-file", "--ignore-times", str(self.m2),
            str(self.r2))
        fdatasync_path(self.r2)
        t_rs = time.monotonic() - t0
        self.res[1].ours.append(t_up)
        self.res[1].theirs.append(t_rs)
        check = self.rng.sample(chunks, min(8, len(chunks)))
        bad = [c for c in check if read_direct(self.vols[1], c * CHUNK, CHUNK) != data[c]
               or read_file(self.r2, c * CHUNK, CHUNK) != data[c]]
        if bad:
            raise RuntimeError(f"row 1: chunks {bad} differ from what was written after the "
                               "update or rsync")
        log(f"  round {rnd + 1}: update of {len(chunks)} chunks {t_up * 1000:.1f} ms, rsync "
            f"{t_rs:.2f} s ({len(check)} chunks checked on both)")
        self.res[1].notes.append(f"{len(chunks)} of {nchunks} chunks changed")

    # -- row 3 --

    def dependent_rounds(self) -> None:
        """A dependent set on the same volumes: first writes after a new point in time, then
        rewrites of the same blocks, ``reps`` times."""
        set_path, _job = self.rig.create_set("dep", "dependent", self.vols)
        dev = self.rig.master_device(set_path)
        fio = Fio(self.rig.root, 4)
        job = [f"--filename={dev}", "--rw=write", "--bs=1M", f"--size={self.size}"]
        for rnd in range(self.reps):
            self.rig.call_to_end(lambda: self.rig.c.update(set_path, "shadow"))
            self.res[3].bound.append(self.read_cold(self.vols[0], 4))
            drop_caches()
            (first,) = fio.run([job])
            drop_caches()
            (again,) = fio.run([job])
            self.res[3].ours.append(first.bw)
            self.res[3].theirs.append(again.bw)
            log(f"  round {rnd + 1}: first writes {first.bw / MiB:.0f} MiB/s, rewrites "
                f"{again.bw / MiB:.0f} MiB/s")
        self.rig.disable(set_path)

    def copy_cold(self, src: str, dst: str, depth: int) -> float:
        """Seconds to read ``src`` and write ``dst`` whole, both at once, from a cold cache:
        fio, 1 MiB, O_DIRECT, ``depth`` requests each (the longer of the two jobs)."""
        drop_caches()
        out = self.rig.root / "fio-copy.json"
        run("fio", "--direct=1", "--ioengine=libaio", f"--iodepth={depth}", "--bs=1M",
            f"--size={self.size}", "--output-format=json", f"--output={out}",
            "--name=read", f"--filename={src}", "--rw=read",
            "--name=write", f"--filename={dst}", "--rw=write")
        jobs = json.loads(out.read_text())["jobs"]
        out.unlink()
        return max(j[side]["runtime"] for j, side in zip(jobs, ("read", "write"),
                                                          strict=True)) / 1000

    def read_cold(self, dev: str, depth: int) -> float:
        """Bytes per second reading ``dev`` whole from a cold cache: fio, 1 MiB, O_DIRECT."""
        drop_caches()
        (r,) = Fio(self.rig.root, depth).run([[f"--filename={dev}", "--rw=read", "--bs=1M",
                                               f"--size={self.size}"]], side="read")
        return r.bw


def _aligned(n: int) -> mmap.mmap:
    return mmap.mmap(-1, n)   # page aligned, as O_DIRECT needs


def write_direct(dev: str, data: dict[int, bytes]) -> None:
    """Write each chunk (number -> bytes) with O_DIRECT, then fsync the device."""
    buf = _aligned(CHUNK)
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    try:
        for c, b in data.items():
            buf[:] = b
            if os.pwrite(fd, buf, c * CHUNK) != CHUNK:
                raise RuntimeError(f"short write to {dev}")
        os.fsync(fd)
    finally:
        os.close(fd)
        buf.close()


def read_direct(dev: str, off: int, n: int) -> bytes:
    buf = _aligned(n)
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    try:
        got = os.preadv(fd, [buf], off)
        return bytes(buf[:got])
    finally:
        os.close(fd)
        buf.close()


def read_file(path: Path, off: int, n: int) -> bytes:
    with path.open("rb") as f:
        f.seek(off)
        return f.read(n)

