#!/usr/bin/env python3
"""Guest side of bench/run_kernel.py: runs inside the VM tier's guest (tests/vm/vmkit.py), never
on the host. Measures the kernel data path against plain device-mapper in one boot and writes
every sample as JSON to ``--out`` (a path in the repository, which the guest shares read-write).

The host attaches six virtio disks, in this order:

  /dev/vda  the master (random data)
  /dev/vdb  the shadow of the ptcopy DEPENDENT set (its dm-snapshot store)
  /dev/vdc  that set's bitmap volume
  /dev/vdd  the exception store of the plain dmsetup snapshot
  /dev/vde  the shadow of the ptcopy INDEPENDENT set
  /dev/vdf  that set's bitmap volume (engine bitmaps and the dm-era metadata)

Write throughput: fio (``--direct=1 --ioengine=libaio``) writes a device stacked over
/dev/vda in four configurations, each built, measured and taken down in turn ("a block"), the
order of the blocks rotating every round:

  none    no shadow: ``bench-none`` (linear) over ``bench-none-real`` (linear over /dev/vda), two
          dm layers like the others
  plain   an LVM-style snapshot made with dmsetup: ``bench-origin`` (snapshot-origin) over
          ``bench-real`` (linear over /dev/vda); ``bench-snap`` (snapshot bench-real bench-cow P
          128: persistent, 64 KiB chunks), store ``bench-cow`` (linear over /dev/vdd); fio
          writes bench-origin
  dep     ptcopy's DEPENDENT set served by KernelPath; fio writes
          /dev/mapper/ptcopy-dep-master (linear over ptcopy's snapshot-origin over /dev/vda)
  ind     ptcopy's INDEPENDENT set (dm-era between the origin and the master device); fio
          writes /dev/mapper/ptcopy-ind-master

In each block: a new point in time, then a sequential pass of 1 MiB writes over the whole
device (first writes: every chunk is copied on write), the same pass again ``--rewrite-loops``
times (rewrites), one 4 KiB write per 64 KiB chunk, chunks in random order, also
``--rewrite-loops`` times (rewrites: the chunks are copied already), a new point in time, and
the same 4 KiB pattern once more (first writes). One fio process runs the first three passes
(``--stonewall``), another the last: fio takes over a second to start under TCG. A new point
in time is: nothing for ``none``; remove the snapshot, zero its store's header and create it
again under a suspended origin for ``plain`` (what lvremove + lvcreate --snapshot do);
``KernelPath.copy(TO_SHADOW, full=False)`` for ``dep`` (ptcopy re-creates its snapshot on an
emptied store); for ``ind`` the updates below, and before the second 4 KiB pass an update of
everything the passes wrote: each update starts a new dm-era era, so the next writes are first
writes for era too. After each first-write pass the snapshot's store must hold one exception per
chunk.

The INDEPENDENT block also times the copies: ``KernelPath.copy(full=True)`` + ``wait`` (the
whole master from a frozen snapshot to the shadow); then 1 % of the chunks changed through the
master device and ``copy(full=False)`` + ``wait``, twice (the first update after the full copy,
and the next one); and, with nothing served, ``dd if=/dev/vda of=/dev/vde bs=1M iflag=direct
oflag=direct conv=fsync`` and the same dd through the page cache (``conv=fsync`` only, page
cache dropped before), before the set is served in even rounds and after it is taken down in
odd ones. Each update must copy the chunks changed since the last copy (and at most those the
previous update copied besides); after the second update of every round (and the first one of
round 0) the shadow device is compared with the master device in full.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common import (  # bench/, the script directory, is on sys.path
    Fio,
    FioResult,
    KiB,
    MiB,
    drop_caches,
    log,
    run,
    set_log_name,
    timed,
)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ptcopy.datapath.kernel import KernelPath, KernelSet, opened_volumes, tables  # noqa: E402
from ptcopy.engine import Direction, Engine, Kind, Set  # noqa: E402

CHUNK = 64 * KiB
SECTOR = 512

MASTER, DEP_SHADOW, DEP_BITMAP, PLAIN_COW, IND_SHADOW, IND_BITMAP = (
    f"/dev/vd{c}" for c in "abcdef")
VARIANTS = ["none", "plain", "dep", "ind"]
WORKLOADS = ["seq1m_first", "seq1m_re", "rand4k_re", "rand4k_first"]

Sample = dict[str, Any]


def dev_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


# ---- plain device-mapper with dmsetup ---------------------------------------------------------


def dmsetup_create(name: str, table: str) -> str:
    run("dmsetup", "create", name, "--table", table)
    return f"/dev/mapper/{name}"


def dmsetup_remove(name: str) -> None:
    run("dmsetup", "remove", name)


def snapshot_chunks(name: str) -> int:
    """Data chunks a snapshot's store holds (``<alloc>/<total> <metadata>``, in sectors)."""
    fields = run("dmsetup", "status", name).stdout.split()
    if len(fields) < 5 or "/" not in fields[3]:
        raise RuntimeError(f"snapshot {name} is not valid: {' '.join(fields)}")
    alloc = int(fields[3].split("/")[0])
    return (alloc - int(fields[4])) // (CHUNK // SECTOR)


def zero_header(dev: str) -> None:
    """An all-zero first chunk makes dm-snapshot start an empty persistent store."""
    run("dd", "if=/dev/zero", f"of={dev}", f"bs={CHUNK}", "count=1", "oflag=direct",
        "status=none")


# ---- I/O ------------------------------------------------------------------------------------


def sample(r: FioResult) -> Sample:
    """A fio result as the JSON the host reads (bench/run_kernel.py)."""
    return {"bw": r.bw, "iops": r.iops, "ios": r.ios, "bytes": r.io_bytes,
            "runtime_s": r.runtime_s, "lat_mean_us": r.lat_mean_us, "lat_p99_us": r.lat_p99_us}


def seq_job(dev: str, size: int, loops: int = 1) -> list[str]:
    """Sequential passes of 1 MiB writes over ``size`` bytes."""
    return [f"--filename={dev}", "--rw=write", f"--bs={MiB}", f"--size={size}",
            f"--loops={loops}"]


def scattered_4k(size: int, seed: int) -> list[int]:
    """One 4 KiB write per chunk, at a random 4 KiB place in it, chunks in random order."""
    rng = random.Random(seed)
    chunks = list(range(size // CHUNK))
    rng.shuffle(chunks)
    return [c * CHUNK + rng.randrange(CHUNK // (4 * KiB)) * 4 * KiB for c in chunks]


def scribble(dev: str, size: int, count: int, seed: int) -> list[int]:
    """Random data in ``count`` random chunks (O_DIRECT, then fsync); the chunks written."""
    rng = random.Random(seed)
    chunks = sorted(rng.sample(range(size // CHUNK), count))
    buf = mmap.mmap(-1, CHUNK)
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        for c in chunks:
            buf[:] = rng.randbytes(CHUNK)
            if os.pwritev(fd, [buf], c * CHUNK) != CHUNK:
                raise OSError(f"short write to {dev} at chunk {c}")
        os.fsync(fd)
    finally:
        os.close(fd)
    return chunks


def same_data(a: str, b: str, size: int) -> int | None:
    """Compare two devices (O_DIRECT, 1 MiB at a time); the first differing MiB, or None."""
    fa = os.open(a, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    fb = os.open(b, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    ba, bb = mmap.mmap(-1, MiB), mmap.mmap(-1, MiB)
    try:
        for off in range(0, size, MiB):
            if os.preadv(fa, [ba], off) != MiB or os.preadv(fb, [bb], off) != MiB \
                    or ba[:] != bb[:]:
                return off // MiB
        return None
    finally:
        os.close(fa)
        os.close(fb)


# ---- the benchmark --------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.size = dev_size(MASTER)
        self.nchunks = self.size // CHUNK
        self.work = Path("/tmp/kernel-bench")
        self.work.mkdir(parents=True, exist_ok=True)
        self.fio = Fio(self.work, args.iodepth, ["--runtime=300"])
        self.engine = Engine()
        self.kp = KernelPath(self.engine, str(self.work / "run"))
        self.fds: list[int] = []
        self.write: dict[str, dict[str, list[Sample]]] = {
            v: {w: [] for w in WORKLOADS} for v in VARIANTS}
        self.copies: dict[str, list[Any]] = {}
        self.problems: list[str] = []
        self.checks: list[str] = []
        self.order: list[list[str]] = []
        self.dep: Set | None = None
        self.ind: Set | None = None

    def add(self, key: str, value: object) -> None:
        self.copies.setdefault(key, []).append(value)

    def problem(self, msg: str) -> None:
        log(f"PROBLEM: {msg}")
        self.problems.append(msg)

    def spec(self, path: str) -> tuple[str, int]:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)   # not O_EXCL: dm claims the volumes
        self.fds.append(fd)
        return path, fd

    def enable(self) -> None:
        self.dep = self.engine.enable(self.spec(MASTER), self.spec(DEP_SHADOW),
                                      self.spec(DEP_BITMAP), kind=Kind.DEPENDENT,
                                      chunk_size=CHUNK)
        self.ind = self.engine.enable(self.spec(MASTER), self.spec(IND_SHADOW),
                                      self.spec(IND_BITMAP), kind=Kind.INDEPENDENT,
                                      chunk_size=CHUNK)

    # -- the four write configurations --

    def passes(self, variant: str, dev: str, new_pit: Callable[[], None],
               copied: Callable[[], int | None], rnd: int) -> None:
        offsets = scattered_4k(self.size, seed=1000 + rnd)
        res = self.write[variant]
        loops = self.args.rewrite_loops
        new_pit()
        first, again, scattered = map(sample, self.fio.run([
            seq_job(dev, self.size), seq_job(dev, self.size, loops),
            self.fio.replay(dev, offsets, 4 * KiB, loops)]))
        res["seq1m_first"].append(first | {"copied": copied()})
        res["seq1m_re"].append(again)
        res["rand4k_re"].append(scattered)
        new_pit()
        (first,) = map(sample, self.fio.run([self.fio.replay(dev, offsets, 4 * KiB)]))
        res["rand4k_first"].append(first | {"copied": copied()})
        for w in ("seq1m_first", "rand4k_first"):
            got = res[w][-1]["copied"]
            if got is not None and got != self.nchunks:
                self.problem(f"{variant} round {rnd} {w}: {got} chunks copied on write, "
                             f"expected {self.nchunks}")

    def block_none(self, rnd: int) -> None:
        real = dmsetup_create("bench-none-real", f"0 {self.size // SECTOR} linear {MASTER} 0")
        try:
            dev = dmsetup_create("bench-none", f"0 {self.size // SECTOR} linear {real} 0")
            try:
                self.passes("none", dev, lambda: None, lambda: None, rnd)
            finally:
                dmsetup_remove("bench-none")
        finally:
            dmsetup_remove("bench-none-real")

    def block_plain(self, rnd: int) -> None:
        sectors = self.size // SECTOR
        made: list[str] = []
        try:
            real = dmsetup_create("bench-real", f"0 {sectors} linear {MASTER} 0")
            made.append("bench-real")
            cow = dmsetup_create("bench-cow",
                                 f"0 {dev_size(PLAIN_COW) // SECTOR} linear {PLAIN_COW} 0")
            made.append("bench-cow")
            origin = dmsetup_create("bench-origin", f"0 {sectors} snapshot-origin {real}")
            made.append("bench-origin")

            def new_pit() -> None:   # what lvremove + lvcreate --snapshot do, in dmsetup terms
                if "bench-snap" in made:
                    dmsetup_remove("bench-snap")
                    made.remove("bench-snap")
                zero_header(cow)
                run("dmsetup", "suspend", "bench-origin")
                try:
                    dmsetup_create("bench-snap",
                                   f"0 {sectors} snapshot {real} {cow} P {CHUNK // SECTOR}")
                    made.append("bench-snap")
                finally:
                    run("dmsetup", "resume", "bench-origin")

            self.passes("plain", origin, new_pit, lambda: snapshot_chunks("bench-snap"), rnd)
        finally:
            for name in reversed(made):
                dmsetup_remove(name)

    def block_dep(self, rnd: int) -> None:
        assert self.dep is not None
        with opened_volumes(MASTER, DEP_SHADOW, DEP_BITMAP) as vols:
            ks = self.kp.serve("dep", self.dep, vols)
        try:
            def new_pit() -> None:
                t = timed(lambda: self.kp.copy(["dep"], Direction.TO_SHADOW, full=False))
                self.add("dep_pit_s", t)
                if not self.kp.wait("dep", 60):
                    self.problem("dep: a new point in time did not finish")

            def copied() -> int:
                use = tables.snapshot_usage("ptcopy-dep-shadow")
                if not use.valid or use.overflow:
                    self.problem(f"dep round {rnd}: the snapshot is invalid ({use})")
                    return -1
                return (use.allocated - use.metadata) // (CHUNK // SECTOR)

            self.passes("dep", ks.master_device, new_pit, copied, rnd)
        finally:
            self.kp.unserve("dep")

    def dd(self, rnd: int) -> None:
        """The copy a user could make instead, with nothing served: direct I/O both ways; and
        through the page cache (as ptcopy's copier goes), after dropping it."""
        t = timed(lambda: run("dd", f"if={MASTER}", f"of={IND_SHADOW}", f"bs={MiB}",
                              "iflag=direct", "oflag=direct", "conv=fsync", "status=none"))
        self.add("dd_s", t)
        drop_caches()
        tb = timed(lambda: run("dd", f"if={MASTER}", f"of={IND_SHADOW}", f"bs={MiB}",
                               "conv=fsync", "status=none"))
        self.add("dd_buffered_s", tb)
        drop_caches()   # no stale pages of vda/vde
        log(f"round {rnd}: dd direct {t:.2f} s, buffered {tb:.2f} s")

    def copy_and_wait(self, name: str, full: bool, what: str) -> tuple[float, int]:
        t0 = time.monotonic()
        self.kp.copy([name], Direction.TO_SHADOW, full=full)
        call = time.monotonic() - t0
        if not self.kp.wait(name, 600):
            self.problem(f"{what} did not finish in 600 s")
        t = time.monotonic() - t0
        p = self.kp.progress(name)
        if p.result != 0:
            self.problem(f"{what} ended with result {p.result}")
        # the engine's copier alone; the copy() call (point in time, era fold); everything
        self.add("copier_s", [what, round(p.elapsed_s, 4), round(call, 4), round(t, 4)])
        return t, p.chunks_total

    def update_step(self, ks: KernelSet, rnd: int, key: str, seed: int,
                    before: set[int]) -> set[int]:
        """1 % of the chunks changed through the master device, then an update, timed and
        checked: it copies the chunks changed since the last copy; ``before``: the chunks the
        previous update copied (dm-era's baseline may count them again)."""
        master, shadow = ks.master_device, ks.shadow_device
        changed = set(scribble(master, self.size, self.nchunks // 100, seed=seed))
        era0 = tables.era_current(ks.dev("mera"))
        t, n = self.copy_and_wait("ind", False, f"round {rnd}: {key}")
        era1 = tables.era_current(ks.dev("mera"))
        for what, value in (("s", t), ("chunks", n), ("changed", len(changed)),
                            ("again", len(before - changed)), ("era", [era0, era1])):
            self.add(f"{key}_{what}", value)
        log(f"round {rnd}: {key} {t * 1000:.0f} ms, {n} chunks copied, {len(changed)} changed "
            f"({len(before - changed)} others changed before the last update); master era "
            f"{era0} -> {era1}")
        if not len(changed) <= n <= len(changed | before):
            self.problem(f"round {rnd}: {key} copied {n} chunks; {len(changed)} were changed "
                         f"since the last update, {len(before - changed)} others before it")
        if key == "update" and rnd:   # the full compare takes seconds under TCG
            return changed
        t0 = time.monotonic()
        bad = same_data(master, shadow, self.size)
        log(f"round {rnd}: compared in {time.monotonic() - t0:.1f} s")
        if bad is not None:
            self.problem(f"round {rnd}: after {key} the shadow differs from the master in MiB "
                         f"{bad}")
        else:
            self.checks.append(f"round {rnd}: shadow device == master device after {key}")
        return changed

    def block_ind(self, rnd: int) -> None:
        assert self.ind is not None
        if rnd % 2 == 0:
            self.dd(rnd)
        with opened_volumes(MASTER, IND_SHADOW, IND_BITMAP) as vols:
            ks = self.kp.serve("ind", self.ind, vols)
        try:
            t, n = self.copy_and_wait("ind", True, f"round {rnd}: full copy")
            self.add("full_s", t)
            self.add("full_chunks", n)
            if n != self.nchunks:
                self.problem(f"round {rnd}: the full copy copied {n} of {self.nchunks} chunks")
            log(f"round {rnd}: full copy {t:.2f} s, {n} chunks")
            first = self.update_step(ks, rnd, "update", 2 * rnd, set())
            self.update_step(ks, rnd, "update2", 2 * rnd + 1, first)

            calls = [0]

            def new_pit() -> None:
                """The update above began a new era; the second time, an update of what the
                passes wrote (every chunk) begins the next one."""
                calls[0] += 1
                if calls[0] > 1:
                    t, n = self.copy_and_wait("ind", False, f"round {rnd}: update of all")
                    self.add("update_all_s", t)
                    self.add("update_all_chunks", n)

            self.passes("ind", ks.master_device, new_pit, lambda: None, rnd)
        finally:
            self.kp.unserve("ind")
        if rnd % 2 == 1:
            self.dd(rnd)

    def round(self, rnd: int) -> None:
        k = rnd % len(VARIANTS)
        order = VARIANTS[k:] + VARIANTS[:k]
        self.order.append(order)
        blocks: dict[str, Callable[[int], None]] = {
            "none": self.block_none, "plain": self.block_plain, "dep": self.block_dep,
            "ind": self.block_ind}
        for v in order:
            t0 = time.monotonic()
            blocks[v](rnd)
            w = self.write[v]
            log(f"round {rnd}: {v} block {time.monotonic() - t0:.1f} s; "
                + ", ".join(f"{name} {s[-1]['bw'] / MiB:.0f} MiB/s" for name, s in w.items()))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.kp.teardown()
        with contextlib.suppress(Exception):
            self.engine.close()
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def environment(size: int) -> dict[str, Any]:
    disks = {d: dev_size(d) for d in (MASTER, DEP_SHADOW, DEP_BITMAP, PLAIN_COW, IND_SHADOW,
                                      IND_BITMAP)}
    with open("/proc/meminfo", encoding="ascii") as f:
        mem_kib = int(f.readline().split()[1])
    sched = Path("/sys/block/vda/queue/scheduler").read_text().strip()
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "mem_mib": mem_kib // 1024,
            "fio": run("fio", "--version").stdout.strip(), "disks": disks, "scheduler": sched,
            "size": size, "chunk": CHUNK,
            "dmsetup": run("dmsetup", "--version").stdout.split("\n")[0].strip()}


def leftovers() -> list[str]:
    out = run("dmsetup", "ls").stdout.strip()
    return [] if out in ("", "No devices found") else out.splitlines()


@contextlib.contextmanager
def bench(args: argparse.Namespace) -> Iterator[Bench]:
    b = Bench(args)
    try:
        yield b
    finally:
        b.close()


def main() -> int:
    set_log_name("kernel-guest")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--iodepth", type=int, default=16)
    p.add_argument("--rewrite-loops", type=int, default=3,
                   help="passes per rewrite measurement (first writes: one pass)")
    p.add_argument("--out", type=Path, required=True, help="JSON result (in the repository)")
    args = p.parse_args()
    if os.environ.get("PTCOPY_IN_VM") != "1":
        raise SystemExit("bench/kernel_guest.py runs inside the VM: use bench/run_kernel.py")
    started = time.monotonic()
    result: dict[str, Any] = {"rounds": args.rounds, "iodepth": args.iodepth,
                              "rewrite_loops": args.rewrite_loops}
    try:
        with bench(args) as b:
            try:
                result["env"] = environment(b.size)
                log(f"master {b.size // MiB} MiB, {b.nchunks} chunks of {CHUNK // KiB} KiB, "
                    f"{args.rounds} rounds")
                b.enable()
                for rnd in range(args.rounds):
                    b.round(rnd)
            finally:   # partial results help too
                result.update(write=b.write, copies=b.copies, order=b.order, checks=b.checks,
                              problems=b.problems)
    except Exception as exc:   # the host reports it
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {result['error']}")
        result.setdefault("problems", []).append(result["error"])
    result["leftover_devices"] = leftovers()
    result["seconds"] = time.monotonic() - started
    args.out.write_text(json.dumps(result, indent=1))
    return 1 if "error" in result or result["leftover_devices"] else 0


if __name__ == "__main__":
    sys.exit(main())
