#!/usr/bin/env python3
"""ptcopy's userspace data path (FUSE + loop) against the raw loop device and qemu's FUSE export.

    sudo .venv/bin/python bench/run_datapath.py                  # 1 GiB volume, 5 s per cell
    sudo .venv/bin/python bench/run_datapath.py --quick          # 64 MiB, 1 s: a smoke test
    sudo .venv/bin/python bench/run_datapath.py --write-doc      # also update docs/PERFORMANCE.md

fio (``--direct=1 --ioengine=libaio --iodepth=16``) runs the same six workloads (sequential
and random reads and writes, 4 KiB and 1 MiB) against block devices that all sit over the same
backing file, one configuration after the other:

  raw loop      ``losetup --direct-io=on`` straight on the master file
  raw loop, buffered   the same with ``--direct-io=off`` (context: the page cache path)
  qsd           ``qemu-storage-daemon --export type=fuse`` of the master file, a loop device
                (direct I/O when the kernel allows it) over the exported file
  ptcopy plain  an INDEPENDENT set whose initial copy finished and whose chunks were all written
                once (steady state: no write sets a bit), served by ``UserspacePath.serve``;
                fio drives ``Served.master_device``
  COW           a DEPENDENT set right after a new point in time: every write is the first one to
                its chunk since then, so each one copies the chunk to the shadow first (size
                based passes over chunks not written yet)
  dep. rewrite  the same DEPENDENT set once every chunk has been written after the point in time

The page cache is written back and dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``) before
every measurement. Every loop device, FUSE mount and qemu-storage-daemon started here is removed
in ``finally`` blocks, and the run fails if any is left behind. Needs root; installs fio and qemu
with ``bench/setup.sh`` (unless ``--no-setup``). The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import ptbench  # noqa: E402  (bench/, the script directory, is on sys.path)

from ptcopy.datapath import blockdev as loopdev  # noqa: E402
from ptcopy.datapath.userspace import UserspacePath, cleanup_stale  # noqa: E402
from ptcopy.engine import Direction, Engine, Kind, Set, bitmap_size  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

DOC = REPO / "docs" / "PERFORMANCE.md"
HEADING = "## Userspace data path (FUSE + loop)"
BEGIN = "<!-- BEGIN bench/run_datapath.py --write-doc: generated, do not edit by hand -->"
END = "<!-- END bench/run_datapath.py --write-doc -->"

TARGET_VS_RAW = 0.7
TARGET_VS_QSD = 1.5
TARGET_COW = 0.5


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
class Result:
    bw: float                 # bytes per second
    iops: float
    lat_mean_us: float
    lat_p99_us: float
    io_bytes: int
    ios: int
    runtime_s: float
    server_us_per_io: float | None = None   # CPU time of the FUSE server process per I/O
    busy: float = 0.0                       # share of all CPUs busy during the run (0..1)
    samples: list[float] = field(default_factory=list)   # bw of every repetition
    note: str = ""


def log(msg: str) -> None:
    print(f"[datapath {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({r.returncode}): "
                           f"{(r.stderr or r.stdout).strip()[-2000:]}")
    return r


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]   # idle + iowait
    total = sum(vals[:8])      # guest time is already in user
    return total - idle, total


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n:.0f} B"


# ---- fio -------------------------------------------------------------------------------------


class Fio:
    def __init__(self, workdir: Path, iodepth: int, runtime: float) -> None:
        self.workdir = workdir
        self.iodepth = iodepth
        self.runtime = runtime
        self._n = 0

    def _run(self, args: list[str], rw: str, pid: int | None) -> Result:
        self._n += 1
        out = self.workdir / f"fio{self._n}.json"
        cmd = ["fio", "--name=dp", "--direct=1", "--ioengine=libaio",
               f"--iodepth={self.iodepth}", "--numjobs=1", "--randrepeat=1",
               "--output-format=json", f"--output={out}", *args]
        cpu0 = proc_cpu_s(pid) if pid else 0.0
        busy0, total0 = machine_ticks()
        run(*cmd)
        busy1, total1 = machine_ticks()
        cpu1 = proc_cpu_s(pid) if pid else 0.0
        job = json.loads(out.read_text())["jobs"][0]
        side = job["write"] if "write" in rw else job["read"]
        if job.get("error"):
            raise RuntimeError(f"fio {shlex.join(args)}: error {job['error']}")
        pct = side["clat_ns"].get("percentile", {})
        bw = float(side["bw_bytes"])
        return Result(bw=bw, iops=float(side["iops"]),
                      lat_mean_us=side["clat_ns"]["mean"] / 1000,
                      lat_p99_us=pct.get("99.000000", 0) / 1000,
                      io_bytes=int(side["io_bytes"]), ios=int(side["total_ios"]),
                      runtime_s=side["runtime"] / 1000, samples=[bw],
                      server_us_per_io=(cpu1 - cpu0) * 1e6 / max(1, int(side["total_ios"]))
                      if pid else None,
                      busy=(busy1 - busy0) / max(1, total1 - total0))

    def timed(self, dev: str, row: Row, pid: int | None) -> Result:
        """A time-based run over the whole device; ``pid``: the FUSE server, if any."""
        return self._run([f"--filename={dev}", f"--rw={row.rw}", f"--bs={row.bs}",
                          f"--runtime={self.runtime:g}", "--time_based"], row.rw, pid)

    def pass_over(self, dev: str, row: Row, size: int, cap_s: float,
                  pid: int | None) -> Result:
        """One size-based pass; with ``--rw=randwrite`` fio's random map visits every block
        once. Stops early after ``cap_s`` seconds."""
        return self._run([f"--filename={dev}", f"--rw={row.rw}", f"--bs={row.bs}",
                          f"--size={size}", f"--runtime={cap_s:g}"], row.rw, pid)

    def replay(self, dev: str, offsets: list[int], bs: int, cap_s: float,
               pid: int | None) -> Result:
        """Writes of ``bs`` at ``offsets``, in that order, ``iodepth`` in flight (fio iolog)."""
        self._n += 1
        path = self.workdir / f"replay{self._n}.log"
        with path.open("w") as f:
            f.write(f"fio version 2 iolog\n{dev} add\n{dev} open\n")
            f.writelines(f"{dev} write {o} {bs}\n" for o in offsets)
            f.write(f"{dev} close\n")
        return self._run([f"--read_iolog={path}", f"--runtime={cap_s:g}"], "randwrite", pid)


# ---- what is measured --------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.size: int = args.size_mib * MiB
        self.root = Path(tempfile.mkdtemp(prefix="run-", dir=args.data_dir))
        self.fio = Fio(self.root, args.iodepth, args.runtime)
        self.master = self.root / "master.img"
        self.shadow = self.root / "shadow.img"
        self.results: dict[str, dict[str, Result]] = {c.key: {} for c in COLUMNS}
        self.notes: list[str] = []
        self.cleanups: list[tuple[str, Callable[[], object]]] = []
        self.engine = Engine()
        self._runs = 0
        self.chunk = 0

    # -- cleanup --

    def on_cleanup(self, what: str, fn: Callable[[], object]) -> None:
        self.cleanups.append((what, fn))

    def cleanup(self) -> list[str]:
        failures = []
        while self.cleanups:
            what, fn = self.cleanups.pop()
            try:
                fn()
            except Exception as e:  # keep going: everything must be torn down
                failures.append(f"{what}: {e}")
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
            failures = []
            while len(self.cleanups) > mark:
                what, fn = self.cleanups.pop()
                try:
                    fn()
                except Exception as e:
                    failures.append(f"{what}: {e}")
            if failures:
                raise RuntimeError("cleanup failed: " + "; ".join(failures))

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

    def measure(self, devices: dict[str, tuple[str, int | None]]) -> None:
        """Every row on every device, ``--reps`` rounds; the median round is kept.

        Interleaved (round by round, row by row, the column order rotating every round), so a
        noisy neighbour hurts all columns alike. ``devices`` maps a column to its block device
        and the pid of its FUSE server (None: no server).
        """
        cols = list(devices)
        got: dict[tuple[str, str], list[Result]] = {}
        for rnd in range(self.args.reps):
            order = cols[rnd % len(cols):] + cols[:rnd % len(cols)]
            for row in ROWS:
                for col in order:
                    dev, pid = devices[col]
                    drop_caches()
                    r = self.fio.timed(dev, row, pid)
                    got.setdefault((col, row.key), []).append(r)
                    log(f"  round {rnd + 1}: {COLUMN[col].title:42} {row.title:17} "
                        f"{self.cell(r, row)}")
        for (col, key), samples in got.items():
            self.results[col][key] = median_result(samples)

    @staticmethod
    def cell(r: Result, row: Row) -> str:
        s = f"{r.bw / MiB:.0f}" if r.bw >= 10 * MiB else f"{r.bw / MiB:.1f}"
        if row.bs < MiB:
            s += f" ({r.iops / 1000:.1f}k IOPS)"
        return s

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
        up = UserspacePath(self.engine, str(run_dir))
        self.on_cleanup(f"stop data path {run_dir}", lambda: stop_path(up, run_dir))
        served = up.serve(name, set_)
        dev = served.master_device
        assert dev is not None
        log(f"{name}: served {served.master_file} as {dev} (dio={int(self.dio(dev))})")
        return set_, up, dev

    def plain(self) -> str:
        """An INDEPENDENT set, copied, every chunk written once through its device."""
        set_, _up, dev = self.serve("plain", Kind.INDEPENDENT, self.shadow)
        drop_caches()
        r = self.fio.pass_over(dev, ROW["seqw1m"], self.size, self.args.cap, os.getpid())
        st = set_.status()
        self.notes.append(
            f"ptcopy plain: before measuring, one sequential 1 MiB pass wrote every chunk of "
            f"the INDEPENDENT set once ({r.bw / MiB:.0f} MiB/s; those writes set the "
            f"difference bits: {st.diff_chunks} of {st.chunks} chunks marked), so the "
            f"measured writes set no new bit.")
        if st.diff_chunks != st.chunks:
            raise RuntimeError(f"the pre-write pass marked {st.diff_chunks} of {st.chunks}")
        return dev

    def phase_a(self) -> None:
        """raw loop, raw loop buffered, qsd and ptcopy plain, side by side."""
        cols = [c for c in ("raw", "rawbuf", "qsd", "plain") if c in self.args.columns]
        if not cols:
            return
        with self.scoped():
            devices: dict[str, tuple[str, int | None]] = {}
            for col in cols:
                if col in ("raw", "rawbuf"):
                    devices[col] = (self.raw(col == "raw"), None)
                elif col == "qsd":
                    devices[col] = self.qsd()
                else:   # the FUSE server runs on engine threads of this process
                    devices[col] = (self.plain(), os.getpid())
            self.measure(devices)

    def first_writes(self, set_: Set, up: UserspacePath, dev: str, row: Row) -> Result:
        """One size-based pass of first writes right after a new point in time."""
        # the update copies nothing on a dependent set and clears every bit, so the next write
        # to every chunk copies it on write again
        up.copy(["dep"], Direction.TO_SHADOW, full=False)
        if set_.status().diff_chunks:
            raise RuntimeError("the new point in time left chunks marked")
        drop_caches()
        if row.bs < self.chunk:
            # one write per chunk, at a random place in it, chunks in random order: fio's random
            # map over 4 KiB blocks would hit most chunks several times
            rng = random.Random(42)
            order = list(range(self.size // self.chunk))
            rng.shuffle(order)
            per = self.chunk // row.bs
            offsets = [c * self.chunk + rng.randrange(per) * row.bs for c in order]
            r = self.fio.replay(dev, offsets, row.bs, self.args.cap, os.getpid())
        else:
            r = self.fio.pass_over(dev, row, self.size, self.args.cap, os.getpid())
        marked = set_.status().diff_chunks
        want = r.ios * max(1, row.bs // self.chunk)
        r.note = (f"{r.ios} writes of {fmt_bytes(row.bs)} in {r.runtime_s:.1f} s, {marked} "
                  f"chunks copied on write")
        if marked < want * 0.99:
            raise RuntimeError(f"{row.title}: only {marked} chunks copied on write for "
                               f"{r.ios} first writes")
        return r

    def phase_b(self) -> None:
        """A DEPENDENT set: first writes after a new point in time, then rewrites."""
        if "cow" not in self.args.columns and "dep" not in self.args.columns:
            return
        with self.scoped():
            set_, up, dev = self.serve("dep", Kind.DEPENDENT, self.shadow)
            # seqw1m last: it writes every chunk, which the rewrites need
            keys = ("randw4k", "randw1m", "seqw1m")
            got: dict[str, list[Result]] = {}
            for rnd in range(self.args.reps if "cow" in self.args.columns else 0):
                for key in keys:
                    r = self.first_writes(set_, up, dev, ROW[key])
                    got.setdefault(key, []).append(r)
                    log(f"  round {rnd + 1}: {COLUMN['cow'].title:42} {ROW[key].title:17} "
                        f"{self.cell(r, ROW[key])}  [{r.note}]")
            for key, samples in got.items():
                self.results["cow"][key] = median_result(samples)
            if "dep" not in self.args.columns:
                return
            if set_.status().diff_chunks != set_.status().chunks:
                self.first_writes(set_, up, dev, ROW["seqw1m"])
            if set_.status().diff_chunks != set_.status().chunks:
                raise RuntimeError("the sequential pass did not write every chunk")
            self.measure({"dep": (dev, os.getpid())})


def median_result(samples: list[Result]) -> Result:
    """The median run by bandwidth, with every run's bandwidth in ``samples``."""
    best = sorted(samples, key=lambda r: r.bw)[len(samples) // 2]
    best.samples = [r.bw for r in samples]
    return best


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


# ---- report ------------------------------------------------------------------------------


def ratio(a: Result | None, b: Result | None, target: float) -> float | None:
    return None if a is None or b is None or b.bw == 0 else a.bw / b.bw


def fmt_ratio(x: float | None, target: float) -> str:
    if x is None:
        return "—"
    return f"{x:.2f}x" if x >= target else f"**{x:.2f}x** ✗"


def checks(b: Bench) -> list[tuple[Row, str, float | None, float]]:
    """Every (row, target name, ratio, target) the issue sets."""
    res = b.results
    out: list[tuple[Row, str, float | None, float]] = []
    for row in ROWS:
        plain = res["plain"].get(row.key)
        out.append((row, "plain / raw loop", ratio(plain, res["raw"].get(row.key),
                                                     TARGET_VS_RAW), TARGET_VS_RAW))
        out.append((row, "plain / qsd", ratio(plain, res["qsd"].get(row.key), TARGET_VS_QSD),
                    TARGET_VS_QSD))
        if row.write:
            out.append((row, "COW / plain", ratio(res["cow"].get(row.key), plain, TARGET_COW),
                        TARGET_COW))
    return out


def missed(b: Bench) -> list[str]:
    return [f"{row.title}: {name} {x:.2f}x < {t}x" for row, name, x, t in checks(b)
            if x is not None and x < t]


def machine() -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
    fio = run("fio", "--version", check=False).stdout.strip()
    qsd = run("qemu-storage-daemon", "--version", check=False).stdout.splitlines()[:1]
    fuse = run("dpkg-query", "-W", "-f=${Version}", "libfuse3-3", check=False).stdout.strip()
    return [
        f"- CPU: {os.cpu_count()} x {cpu} (a 2-core VM shared with other work: expect noise)",
        f"- memory: {mem:.1f} GiB; kernel {platform.release()}; {fio}; "
        f"{' '.join(qsd)}; libfuse3 {fuse or '?'}",
    ]


def report(b: Bench, args: argparse.Namespace, started: str, load0: str, load1: str) -> str:
    res = b.results
    src = " on ".join(run("findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target",
                          str(args.data_dir), check=False).stdout.split())
    lines = [
        f"Run {started} with `bench/run_datapath.py {shlex.join(sys.argv[1:])}`: volume "
        f"{fmt_bytes(b.size)} (files in {args.data_dir}, {src or '?'}), chunk "
        f"{fmt_bytes(b.chunk)}, fio `--direct=1 --ioengine=libaio --iodepth={args.iodepth}`, "
        f"{args.runtime:g} s per time-based cell, median of {args.reps}. Load average before "
        f"{load0}, after {load1}.",
        "",
        *machine(),
        "",
        "MiB/s (and IOPS for 4 KiB); ratios against the targets (✗ = missed):",
        "",
    ]
    main_cols = ["raw", "qsd", "plain", "cow", "dep"]
    head = ["workload", *(COLUMN[c].title for c in main_cols),
            f"plain / raw loop (≥ {TARGET_VS_RAW}x)", f"plain / qsd (≥ {TARGET_VS_QSD}x)",
            f"COW / plain (≥ {TARGET_COW}x)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_row: dict[str, list[str]] = {}
    for row, _name, x, t in checks(b):
        by_row.setdefault(row.key, []).append(fmt_ratio(x, t))
    for row in ROWS:
        cells = [row.title]
        for c in main_cols:
            r = res[c].get(row.key)
            cells.append(b.cell(r, row) if r else "—")
        cells += by_row[row.key] + ([] if row.write else ["—"])
        lines.append("| " + " | ".join(cells) + " |")
    miss = missed(b)
    lines += ["", f"Targets missed ({len(miss)}): " + "; ".join(miss) + "." if miss
              else "Every target met."]
    lines += ["", "Context: the raw loop device without direct I/O (it reads and writes the "
              "master file through the page cache, as ptcopy's engine and qsd's file driver do) "
              "and mean / 99th percentile completion latency in µs, as fio sees it:", ""]
    ctx = ["raw", "rawbuf", "qsd", "plain", "cow", "dep"]
    head = ["workload", "raw loop, buffered: MiB/s",
            *(f"{COLUMN[c].title}: latency" for c in ctx)]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS:
        r = res["rawbuf"].get(row.key)
        cells = [row.title, b.cell(r, row) if r else "—"]
        for c in ctx:
            r = res[c].get(row.key)
            cells.append(f"{r.lat_mean_us:.0f} / {r.lat_p99_us:.0f}" if r else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += ["CPU: time the FUSE server process spent per I/O (user + system, all threads), "
              "and how busy all CPUs of the machine were during the run (fio, loop workers and "
              "any neighbour included):", ""]
    head = ["workload", *(f"{COLUMN[c].title}: CPU" for c in ctx)]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS:
        cells = [row.title]
        for c in ctx:
            r = res[c].get(row.key)
            if r is None:
                cells.append("—")
            elif r.server_us_per_io is None:
                cells.append(f"busy {100 * r.busy:.0f} %")
            else:
                cells.append(f"{r.server_us_per_io:.1f} µs/IO, busy {100 * r.busy:.0f} %")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for row in ROWS:
        r = res["cow"].get(row.key)
        if r is not None:
            raw = res["raw"].get(row.key)
            vs = (f"; {r.bw / raw.bw:.2f}x the raw loop device (dio), whose writes reach the "
                  "disk too" if raw else "")
            lines.append(f"- COW {row.title}: {r.note}{vs}.")
    lines += [f"- {n}" for n in b.notes]
    if args.reps > 1:
        for column in COLUMNS:
            parts = [f"{ROW[k].title} " + ", ".join(f"{x / MiB:.0f}" for x in r.samples)
                     for k, r in res[column.key].items() if len(r.samples) > 1]
            if parts:
                lines.append(f"- samples, {column.title} (MiB/s): " + "; ".join(parts) + ".")
    return "\n".join(lines)


SECTION_TEMPLATE = f"""{HEADING}

How fast applications read and write through a set served by the userspace data path
(`UserspacePath.serve`: the FUSE server of `cffi_build/fuse.c` on engine threads, a loop device
with direct I/O over each served file), next to the raw loop device and qemu-storage-daemon's
FUSE export over the same backing file. The numbers come from `bench/run_datapath.py`; the
table below is its output (`--write-doc`).

```
sudo bash bench/setup.sh                                  # fio, qemu-storage-daemon, qemu-img
sudo .venv/bin/python bench/run_datapath.py --quick --reps 1   # 64 MiB, 1 s: a smoke test
sudo flock /tmp/ptcopy-bench.lock .venv/bin/python bench/run_datapath.py --write-doc  # ~10 min
```

### Method

One run measures every configuration over one backing file, a 1 GiB master of random data in
`/var/tmp` (ext4 on the VM's disk). The load is fio
`--direct=1 --ioengine=libaio --iodepth=16 --numjobs=1`, 5 s time-based per cell, on a block
device; the page cache is written back and dropped before every cell. The raw loop devices,
qsd and ptcopy plain are set up together and measured interleaved (round by round, row by row,
the column order rotating each round); then the DEPENDENT set is measured on its own. Each
cell is the median of `--reps` rounds (default 3).

The columns, each the block device fio drives:

- *raw loop (dio)*: `losetup --direct-io=on` on the master file. *raw loop, buffered*: the
  same with `--direct-io=off` (context only).
- *qsd FUSE export + loop*: `qemu-storage-daemon --blockdev driver=file,filename=M,node-name=f
  --blockdev driver=raw,file=f,node-name=r --export
  type=fuse,id=e,node-name=r,mountpoint=F,writable=on` (qemu's defaults: `aio=threads`, page
  cache on), then `losetup --direct-io=on F`.
- *ptcopy plain*: `Served.master_device` of an INDEPENDENT set (master M, a fully written
  shadow, a bitmap file) after its initial copy finished and one sequential 1 MiB pass wrote
  every chunk once, so no measured write sets a bit.
- *ptcopy + dep. shadow, first writes (COW)*: `Served.master_device` of a DEPENDENT set right
  after a new point in time (`UserspacePath.copy([name], TO_SHADOW, full=False)` copies nothing
  and clears the bits), written by one size-based pass that writes each chunk once, so every
  write first copies its chunk(s) to the shadow. 1 MiB: a sequential pass and a random pass
  (fio's random map) over the whole volume; 4 KiB: one write per 32 KiB chunk at a random
  4 KiB place in it, chunks in random order (a fio iolog replayed at depth 16). The bench
  checks that the set marked one chunk per chunk written.
- *ptcopy + dep. shadow, rewrites*: the same DEPENDENT set once every chunk was written after
  the point in time.

{BEGIN}
{END}
"""


def write_doc(generated: str) -> None:
    block = f"{BEGIN}\n{generated}\n{END}"
    if not DOC.exists():
        DOC.write_text(SECTION_TEMPLATE.replace(f"{BEGIN}\n{END}", block))
        return
    text = DOC.read_text()
    new = ptbench.replace_generated(text, HEADING, BEGIN, END, block, DOC)
    if new is None:
        new = text.rstrip("\n") + "\n\n" + SECTION_TEMPLATE.replace(f"{BEGIN}\n{END}", block)
    DOC.write_text(new)


# ---- main --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, help="volume size (default 1024; --quick: 64)")
    p.add_argument("--runtime", type=float,
                   help="seconds per time-based cell (default 5; --quick: 1)")
    p.add_argument("--iodepth", type=int, default=16)
    p.add_argument("--reps", type=int, default=3,
                   help="rounds; each cell shows its median round (default 3)")
    p.add_argument("--cap", type=float, default=120,
                   help="longest a size-based pass may take, seconds (default 120)")
    p.add_argument("--columns", default=",".join(c.key for c in COLUMNS),
                   help="comma-separated subset of " + ",".join(c.key for c in COLUMNS))
    p.add_argument("--quick", action="store_true", help="64 MiB volume, 1 s per cell")
    p.add_argument("--data-dir", type=Path, default=Path("/var/tmp/ptcopy-datapath"),
                   help="where the volume files go: a real disk, not tmpfs")
    p.add_argument("--keep", action="store_true", help="keep the volume files")
    p.add_argument("--no-setup", action="store_true", help="do not run bench/setup.sh")
    p.add_argument("--write-doc", action="store_true", help=f"update the section in {DOC}")
    args = p.parse_args()
    if args.size_mib is None:
        args.size_mib = 64 if args.quick else 1024
    if args.runtime is None:
        args.runtime = 1 if args.quick else 5
    args.columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    bad = [c for c in args.columns if c not in COLUMN]
    if bad:
        p.error(f"unknown column(s) {', '.join(bad)}")
    if args.size_mib < 8 or args.size_mib % 4:
        p.error("--size-mib must be a multiple of 4, at least 8")
    return args


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run me as root: loop devices, FUSE mounts and dropping the page cache")
    if not args.no_setup:
        run("bash", str(REPO / "bench" / "setup.sh"))
    for tool in ("fio", "qemu-storage-daemon", "losetup", "findmnt"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run `sudo bash bench/setup.sh`")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    fstype = run("findmnt", "-n", "-o", "FSTYPE", "--target", str(args.data_dir)).stdout.strip()
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(f"{args.data_dir} is on {fstype}: pick a directory on a disk")
    # a SIGTERM must run the finally blocks too
    signal.signal(signal.SIGTERM, interrupted)

    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    b = Bench(args)
    log(f"run directory {b.root}")
    failures: list[str] = []
    try:
        b.make_files()
        b.phase_a()
        b.phase_b()
    finally:
        failures = b.cleanup()
        left = leftovers(b.root)
        if not args.keep and not left:
            shutil.rmtree(b.root, ignore_errors=True)
        if failures or left:
            for f in failures + left:
                log(f"CLEANUP PROBLEM: {f}")
    if failures or left:
        return 1
    load1 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if not b.chunk:
        b.chunk = 32 * KiB
    text = report(b, args, started, load0, load1)
    print(text)
    if args.write_doc:
        write_doc(text)
        log(f"updated the section {HEADING!r} of {DOC}")
    miss = missed(b)
    log(f"{len(miss)} ratio(s) below target: " + "; ".join(miss) if miss else "every target met")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; everything it set up was torn down")
        sys.exit(130)
