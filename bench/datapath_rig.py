"""What bench/run_datapath.py measures on: the workloads (rows), the configurations (columns),
one cell's result, and the rig that sets the block devices up and tears every one down.

The rig keeps a stack of clean-ups: every loop device, FUSE mount, qemu-storage-daemon and set
it makes is undone in reverse order, whatever happened, and the run fails if any is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    Fio,
    FioResult,
    KiB,
    MiB,
    fmt_bytes,
    log,
    machine_ticks,
    proc_cpu_s,
)

from ptcopy.datapath import blockdev as loopdev
from ptcopy.datapath.userspace import UserspacePath, cleanup_stale
from ptcopy.engine import Engine, Kind, Set, bitmap_size


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    rw: str
    bs: int

    @property
    def write(self) -> bool:
        return "write" in self.rw


ROWS = [
    Row("seqr1m", "seq read 1 MiB", "read", MiB),
    Row("seqw1m", "seq write 1 MiB", "write", MiB),
    Row("randr4k", "rand read 4 KiB", "randread", 4 * KiB),
    Row("randw4k", "rand write 4 KiB", "randwrite", 4 * KiB),
    Row("randr1m", "rand read 1 MiB", "randread", MiB),
    Row("randw1m", "rand write 1 MiB", "randwrite", MiB),
]
ROW = {r.key: r for r in ROWS}


@dataclass(frozen=True)
class Column:
    key: str
    title: str


COLUMNS = [
    Column("raw", "raw loop (dio)"),
    Column("rawbuf", "raw loop, buffered"),
    Column("qsd", "qsd FUSE export + loop"),
    Column("plain", "ptcopy plain"),
    Column("cow", "ptcopy + dep. shadow, first writes (COW)"),
    Column("dep", "ptcopy + dep. shadow, rewrites"),
]
COLUMN = {c.key: c for c in COLUMNS}


@dataclass
class Result(FioResult):
    """One cell: fio's figures and what the machine did meanwhile."""

    server_us_per_io: float | None = None   # CPU time of the FUSE server process per I/O
    busy: float = 0.0                       # share of all CPUs busy during the run (0..1)
    samples: list[float] = field(default_factory=list)   # bw of every repetition
    note: str = ""

    def cell(self, row: Row) -> str:
        """MiB/s, and the IOPS for small blocks, as the tables show it."""
        s = f"{self.bw / MiB:.0f}" if self.bw >= 10 * MiB else f"{self.bw / MiB:.1f}"
        if row.bs < MiB:
            s += f" ({self.iops / 1000:.1f}k IOPS)"
        return s


def median_result(samples: list[Result]) -> Result:
    """The median run by bandwidth, with every run's bandwidth in ``samples``."""
    best = sorted(samples, key=lambda r: r.bw)[len(samples) // 2]
    best.samples = [r.bw for r in samples]
    return best


class Rig:
    """The backing files, the block devices over them, fio, and their clean-ups."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.size: int = args.size_mib * MiB
        self.root = Path(tempfile.mkdtemp(prefix="run-", dir=args.data_dir))
        self.fio = Fio(self.root, args.iodepth, ["--randrepeat=1"])
        self.master = self.root / "master.img"
        self.shadow = self.root / "shadow.img"
        self.notes: list[str] = []
        self.cleanups: list[tuple[str, Callable[[], object]]] = []
        self.engine = Engine()
        self._runs = 0
        self.chunk = 0

    # -- cleanup --

    def on_cleanup(self, what: str, fn: Callable[[], object]) -> None:
        self.cleanups.append((what, fn))

    def _unwind(self, mark: int) -> list[str]:
        failures = []
        while len(self.cleanups) > mark:
            what, fn = self.cleanups.pop()
            try:
                fn()
            except Exception as e:  # keep going: everything must be torn down
                failures.append(f"{what}: {e}")
        return failures

    def cleanup(self) -> list[str]:
        failures = self._unwind(0)
        try:
            self.engine.close()
        except Exception as e:
            failures.append(f"engine close: {e}")
        return failures

    @contextlib.contextmanager
    def scoped(self) -> Iterator[None]:
        """Tear down what was set up inside the block when it ends, whatever happened."""
        mark = len(self.cleanups)
        try:
            yield
        finally:
            failures = self._unwind(mark)
            if failures:
                raise RuntimeError("cleanup failed: " + "; ".join(failures))

    # -- fio --

    def run_fio(self, job: list[str], rw: str, pid: int | None) -> Result:
        """One fio job; ``pid``: the FUSE server, whose CPU time is counted, if any."""
        cpu0 = proc_cpu_s(pid) if pid else 0.0
        busy0, total0 = machine_ticks()
        (r,) = self.fio.run([job], "write" if "write" in rw else "read")
        busy1, total1 = machine_ticks()
        cpu1 = proc_cpu_s(pid) if pid else 0.0
        return Result(**dataclasses.asdict(r), samples=[r.bw],
                      server_us_per_io=(cpu1 - cpu0) * 1e6 / max(1, r.ios) if pid else None,
                      busy=(busy1 - busy0) / max(1, total1 - total0))

    def fio_timed(self, dev: str, row: Row, pid: int | None) -> Result:
        """A time-based run over the whole device; ``pid``: the FUSE server, if any."""
        return self.run_fio([f"--filename={dev}", f"--rw={row.rw}", f"--bs={row.bs}",
                             f"--runtime={self.args.runtime:g}", "--time_based"], row.rw, pid)

    def fio_pass(self, dev: str, row: Row, pid: int | None) -> Result:
        """One size-based pass; with ``--rw=randwrite`` fio's random map visits every block
        once. Stops early after ``--cap`` seconds."""
        return self.run_fio([f"--filename={dev}", f"--rw={row.rw}", f"--bs={row.bs}",
                             f"--size={self.size}", f"--runtime={self.args.cap:g}"], row.rw, pid)

    def fio_replay(self, dev: str, offsets: list[int], bs: int, pid: int | None) -> Result:
        """Writes of ``bs`` at ``offsets``, in that order, ``iodepth`` in flight (fio iolog)."""
        return self.run_fio([*self.fio.replay(dev, offsets, bs), f"--runtime={self.args.cap:g}"],
                            "randwrite", pid)

    # -- building blocks --

    def make_files(self) -> None:
        log(f"writing a {fmt_bytes(self.size)} master of random data and a fully allocated "
            f"shadow in {self.root}")
        block = 4 * MiB
        with self.master.open("wb") as m, self.shadow.open("wb") as s:
            zero = bytes(block)
            for _ in range(0, self.size, block):
                m.write(os.urandom(block))
                s.write(zero)
            m.flush()
            s.flush()
            os.fsync(m.fileno())
            os.fsync(s.fileno())

    def loop(self, path: Path | str, *, direct: bool = True) -> str:
        dev = loopdev.attach(str(path), direct_io=direct)
        self.on_cleanup(f"detach {dev}", lambda: loopdev.detach(dev))
        return dev

    @staticmethod
    def dio(dev: str) -> bool:
        p = Path(f"/sys/block/{os.path.basename(dev)}/loop/dio")
        return p.exists() and p.read_text().strip() == "1"

    # -- the configurations --

    def raw(self, direct: bool) -> str:
        col = "raw" if direct else "rawbuf"
        dev = self.loop(self.master, direct=direct)
        log(f"{COLUMN[col].title}: {dev} over {self.master} (dio={int(self.dio(dev))})")
        return dev

    def qsd(self) -> tuple[str, int]:
        mp = self.root / "qsd-export.img"
        mp.touch()
        self.on_cleanup(f"remove {mp}", lambda: mp.unlink(missing_ok=True))
        qlog = (self.root / "qsd.log").open("w")
        self.on_cleanup("close qsd log", qlog.close)
        cmd = ["qemu-storage-daemon",
               "--blockdev", f"driver=file,filename={self.master},node-name=f",
               "--blockdev", "driver=raw,file=f,node-name=r",
               "--export", f"type=fuse,id=e,node-name=r,mountpoint={mp},writable=on"]
        proc = subprocess.Popen(cmd, stdout=qlog, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.on_cleanup(f"stop qemu-storage-daemon (pid {proc.pid})",
                        lambda: self._stop_qsd(proc, mp))
        deadline = time.monotonic() + 15
        while not any(m == str(mp) for m in fuse_mounts()):
            if proc.poll() is not None:
                raise RuntimeError(f"qemu-storage-daemon exited ({proc.returncode}): "
                                   f"{(self.root / 'qsd.log').read_text().strip()}")
            if time.monotonic() > deadline:
                raise RuntimeError("qemu-storage-daemon did not mount its FUSE export")
            time.sleep(0.05)
        dev = self.loop(mp, direct=True)
        mode = "direct I/O"
        if not self.dio(dev):
            mode = "buffered (the kernel refused direct I/O on the exported file)"
            self.notes.append(f"qsd: the loop device over the FUSE export is {mode}.")
        log(f"qsd: pid {proc.pid}, {dev} over {mp}, {mode}")
        return dev, proc.pid

    @staticmethod
    def _stop_qsd(proc: subprocess.Popen[bytes], mp: Path) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if str(mp) in fuse_mounts():
            loopdev.lazy_unmount(str(mp))

    def serve(self, name: str, kind: Kind, shadow: Path) -> tuple[Set, UserspacePath, str]:
        """Enable a set on the master and serve it from a fresh run directory."""
        self._runs += 1
        bitmap = self.root / f"bitmap{self._runs}.img"
        with bitmap.open("wb") as f:
            f.truncate(bitmap_size(self.size, self.size, 0, kind))
        self.on_cleanup(f"remove {bitmap}", lambda: bitmap.unlink(missing_ok=True))
        set_ = self.engine.enable(self.master, shadow, bitmap, kind)
        self.on_cleanup(f"disable set {name}", lambda: disable(set_))
        self.chunk = set_.status().chunk_size
        if kind is Kind.INDEPENDENT:
            t0 = time.monotonic()
            set_.wait()
            log(f"{name}: initial copy of {fmt_bytes(self.size)} took "
                f"{time.monotonic() - t0:.1f} s")
        run_dir = self.root / f"serve{self._runs}"
        run_dir.mkdir()
        threads = getattr(self.args, "server_threads", None)
        up = (UserspacePath(self.engine, str(run_dir), max_threads=threads) if threads
              else UserspacePath(self.engine, str(run_dir)))
        self.on_cleanup(f"stop data path {run_dir}", lambda: stop_path(up, run_dir))
        served = up.serve(name, set_)
        dev = served.master_device
        assert dev is not None
        log(f"{name}: served {served.master_file} as {dev} (dio={int(self.dio(dev))})")
        return set_, up, dev


def disable(set_: Set) -> None:
    if not set_.closed:
        set_.disable()


def stop_path(up: UserspacePath, run_dir: Path) -> None:
    try:
        up.stop(force=True)
    finally:
        cleanup_stale(str(run_dir / "volumes"))


def fuse_mounts() -> list[str]:
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1].startswith("fuse"):
                found.append(fields[4].replace("\\040", " "))
    return found


def leftovers(root: Path) -> list[str]:
    """Loop devices and mounts under ``root`` (there must be none after a run)."""
    base = os.path.join(os.path.realpath(root), "")
    found = [f"loop device {lp.device} over {lp.backing_file}" for lp in loopdev.list_loops()
             if lp.backing_file.startswith(base)]
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(base):
                found.append(f"mount {mp}")
    return found
