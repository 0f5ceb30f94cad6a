"""What the crash-safety rule alone costs a first write, without ptcopy (issue 13, row 3).

A first write of a chunk after a point in time must, before the master write reaches the disk,
have the chunk's old data and its bit durable. This measures the least work that obeys the rule,
done by plain syscalls from 4 threads (fio's queue depth in bench/run_ops.py row 3), each
taking the next 1 MiB of the master, on the same kind of volumes as row 3 (loop devices with
direct I/O over files on the disk, opened buffered as the engine opens them), page cache
dropped before each pass:

  two flushes  read the old 1 MiB, write it to the shadow, fdatasync the shadow, write a bit
               block, fdatasync the bitmap, write the master (what the engine does today);
  one flush    read the old 1 MiB, append it with its bit to a journal, fdatasync the journal,
               write it to the shadow unsynced, write the master; the pass ends with one sync
               of the shadow and the bitmap (what an undo journal would do);
  self-described  read the old 1 MiB, write it to the shadow with a header naming its chunk,
               fdatasync the shadow, write the master; the bitmap is synced once at the end
               (a shadow whose places describe themselves, rebuilt by a scan after a crash);
  rewrites     write the master (what a rewrite does: no copy, no flush).

Syncs are group-committed across the threads, as the engine's are. The ratios say how far the
rule itself, on this disk, lets first writes come to rewrites: the ceiling for any design
that acknowledges a write only once it is safe.

    sudo .venv/bin/python bench/cow_floor.py [--size-mib 1024] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common import drop_caches, fill_random, log, sparse_file

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ptcopy.datapath import blockdev as loopdev  # noqa: E402

MiB = 1 << 20
STEP = MiB
depth = 4   # threads (--threads)


class GroupSync:
    """fdatasync shared by concurrent callers: each caller returns after a sync that began
    after it asked, and one sync serves everyone who asked while the previous one ran."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.cv = threading.Condition()
        self.started = 0
        self.done = 0
        self.running = False

    def sync(self) -> None:
        with self.cv:
            need = self.started + 1
            while self.done < need:
                if not self.running:
                    self.running = True
                    self.started += 1
                    gen = self.started
                    break
                self.cv.wait()
            else:
                return
        try:
            os.fdatasync(self.fd)
        finally:
            with self.cv:
                self.running = False
                self.done = gen
                self.cv.notify_all()


class Volumes:
    """master (random data), shadow, bitmap and journal: loop devices over files in a dir."""

    def __init__(self, root: Path, size: int) -> None:
        self.size = size
        self.devs: list[str] = []
        files = {"master": size, "shadow": size, "bitmap": 16 * MiB,
                 "journal": size + size // 64 + MiB}
        self.paths = {n: root / f"floor-{n}.img" for n in files}
        fill_random(self.paths["master"], size)
        for n in ("shadow", "bitmap", "journal"):
            sparse_file(self.paths[n], files[n])
        self.fd: dict[str, int] = {}
        for n, p in self.paths.items():
            dev = loopdev.attach(str(p), direct_io=True)
            self.devs.append(dev)
            self.fd[n] = os.open(dev, os.O_RDWR | os.O_CLOEXEC)

    def close(self) -> None:
        for fd in self.fd.values():
            os.close(fd)
        for dev in self.devs:
            loopdev.detach(dev)
        for p in self.paths.values():
            p.unlink(missing_ok=True)


def run_threads(size: int, work: Callable[[int, int], None]) -> float:
    """work(thread, offset) for every STEP of the volume, ``depth`` threads; MiB/s."""
    nxt = [0]
    mu = threading.Lock()

    def loop(t: int) -> None:
        while True:
            with mu:
                off = nxt[0]
                nxt[0] += STEP
            if off >= size:
                return
            work(t, off)

    threads = [threading.Thread(target=loop, args=(t,)) for t in range(depth)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return size / MiB / (time.perf_counter() - t0)


def two_flushes(v: Volumes) -> float:
    ss, sb = GroupSync(v.fd["shadow"]), GroupSync(v.fd["bitmap"])
    bits = bytes(4096)

    def work(t: int, off: int) -> None:
        old = os.pread(v.fd["master"], STEP, off)
        os.pwrite(v.fd["shadow"], old, off)
        ss.sync()
        os.pwrite(v.fd["bitmap"], bits, (off // STEP % 256) * 4096)
        sb.sync()
        os.pwrite(v.fd["master"], old, off)

    return run_threads(v.size, work)


def one_flush(v: Volumes) -> float:
    sj = GroupSync(v.fd["journal"])
    pos = [0]
    mu = threading.Lock()
    rec = STEP + 4096

    def work(t: int, off: int) -> None:
        old = os.pread(v.fd["master"], STEP, off)
        with mu:
            at = pos[0]
            pos[0] += rec
        os.pwrite(v.fd["journal"], bytes(4096) + old, at)
        sj.sync()
        os.pwrite(v.fd["shadow"], old, off)
        os.pwrite(v.fd["master"], old, off)

    t0 = time.perf_counter()
    run_threads(v.size, work)
    os.fdatasync(v.fd["shadow"])      # the checkpoint that frees the journal
    os.pwrite(v.fd["bitmap"], bytes(4096), 0)
    os.fdatasync(v.fd["bitmap"])
    return v.size / MiB / (time.perf_counter() - t0)


def self_described(v: Volumes) -> float:
    ss = GroupSync(v.fd["shadow"])

    def work(t: int, off: int) -> None:
        old = os.pread(v.fd["master"], STEP, off)
        os.pwrite(v.fd["shadow"], old, off)   # the header would ride in the same write
        ss.sync()
        os.pwrite(v.fd["master"], old, off)

    t0 = time.perf_counter()
    run_threads(v.size, work)
    os.pwrite(v.fd["bitmap"], bytes(4096), 0)
    os.fdatasync(v.fd["bitmap"])
    return v.size / MiB / (time.perf_counter() - t0)


def rewrites(v: Volumes) -> float:
    data = os.urandom(STEP)

    def work(t: int, off: int) -> None:
        os.pwrite(v.fd["master"], data, off)

    return run_threads(v.size, work)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--data-dir", type=Path, default=Path("/var/tmp/ptbench"))
    p.add_argument("--threads", type=int, default=4, help="writers at once (default 4)")
    p.add_argument("--modes", default="", help="comma list of modes (default: all)")
    a = p.parse_args()
    global depth
    depth = a.threads
    if os.geteuid() != 0:
        print("cow_floor.py: needs root (loop devices, dropping caches)", file=sys.stderr)
        return 2
    a.data_dir.mkdir(parents=True, exist_ok=True)
    v = Volumes(a.data_dir, a.size_mib * MiB)
    modes: dict[str, Callable[[Volumes], float]] = {
        "two flushes": two_flushes, "one flush": one_flush,
        "self-described": self_described, "rewrites": rewrites}
    if a.modes:
        modes = {m: modes[m] for m in a.modes.split(",")}
    res: dict[str, list[float]] = {m: [] for m in modes}
    try:
        for rnd in range(a.reps):
            for name, fn in modes.items():
                drop_caches()
                bw = fn(v)
                res[name].append(bw)
                log(f"round {rnd + 1}: {name} {bw:.0f} MiB/s")
    finally:
        v.close()
    med = {m: statistics.median(r) for m, r in res.items()}
    print(f"\n{a.size_mib} MiB, 1 MiB steps, {depth} threads, {a.reps} rounds (median, range):")
    for m, r in res.items():
        print(f"  {m:14s} {med[m]:6.0f} MiB/s ({min(r):.0f}-{max(r):.0f})  "
              + (f"{med[m] / med['rewrites']:.3f}x rewrites" if "rewrites" in med else ""))
    for m in ("one flush", "self-described"):
        if m in med and "two flushes" in med:
            print(f"  {m} / two flushes: {med[m] / med['two flushes']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
