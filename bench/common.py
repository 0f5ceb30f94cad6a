"""What every ptcopy benchmark shares: logging, running commands, fio, cold caches, timing and
statistics, test files, the machine's description, side-by-side tables and the writer of the
generated blocks of docs/PERFORMANCE.md.

Nothing here is a test: these are measurements, printed side by side with the baselines they
are compared with, all taken in the same run. Standard library only: bench/kernel_guest.py
imports it inside the VM tier's guest too.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB


_log_name = "bench"


def set_log_name(name: str) -> None:
    """The tag of this script's progress lines (``[name HH:MM:SS] ...``)."""
    global _log_name
    _log_name = name


def log(msg: str) -> None:
    """Progress messages go to stderr so stdout stays the table."""
    print(f"[{_log_name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(*cmd: str, check: bool = True, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run a command, its output captured; with ``check``, a failure raises with its stderr."""
    r = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({r.returncode}): "
                           f"{(r.stderr or r.stdout).strip()[-2000:]}")
    return r


def prepare_root_run(why: str, tools: Sequence[str], setup: bool) -> None:
    """Exit unless root (``why`` says what needs it); with ``setup`` run bench/setup.sh first;
    exit naming the first of ``tools`` still missing."""
    if os.geteuid() != 0:
        raise SystemExit(f"run me as root: {why}")
    if setup:
        run("bash", str(Path(__file__).resolve().parent / "setup.sh"))
    for tool in tools:
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: run `sudo bash bench/setup.sh` "
                             "(and scripts/setup.sh)")


def run_main(main: Callable[[], int]) -> None:
    """Exit with ``main``'s status; Ctrl-C exits 130 (main's own clean-up has run by then)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; everything it set up was torn down")
        sys.exit(130)


# ---- cold caches -------------------------------------------------------------------------

_DROP = Path("/proc/sys/vm/drop_caches")
_drop_warned = False
_sync_scope: list[Path] = []


def set_sync_scope(paths: Sequence[Path]) -> None:
    """Make :func:`drop_caches` write back only the file systems holding ``paths`` (syncfs)
    instead of every one (sync): a hung device elsewhere on the machine (another user's stuck
    FUSE or loop device) then cannot hang the benchmark."""
    _sync_scope[:] = list(paths)


def _syncfs(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), f"syncfs {path}")
    finally:
        os.close(fd)


def can_drop_caches() -> bool:
    return os.geteuid() == 0 and _DROP.exists()


def drop_caches() -> None:
    """Write back dirty pages, then drop the page cache, so the next measurement starts cold.

    The write-back happens here, before any timer starts: no measurement pays for the dirty
    pages a previous one left behind.
    """
    global _drop_warned
    if _sync_scope:
        for p in _sync_scope:
            _syncfs(p)
    else:
        os.sync()
    if not can_drop_caches():
        if not _drop_warned:
            log("not root: cannot drop the page cache; measurements are NOT cold")
            _drop_warned = True
        return
    _DROP.write_text("3\n")


# ---- timing -------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(xs: Sequence[float]) -> float:
    """The median; NaN for no samples (a table cell then says so rather than the run failing)."""
    return statistics.median(xs) if xs else float("nan")


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


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process now (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fdatasync_path(path: Path) -> None:
    """fdatasync a file through a fresh descriptor (Linux flushes the inode's dirty pages)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def run_threads(nthreads: int, work: Callable[[int], None]) -> float:
    """Run work(i) on nthreads threads released together; seconds until the last finishes."""
    barrier = threading.Barrier(nthreads + 1)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(nthreads)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return elapsed


# ---- files --------------------------------------------------------------------------------


def need_space(path: Path, nbytes: int) -> None:
    free = shutil.disk_usage(path).free
    if free < nbytes:
        raise SystemExit(
            f"bench: {path} has {free / GiB:.1f} GiB free; this run needs {nbytes / GiB:.1f} GiB"
            " (use --size quick or a smaller --volume-gib)"
        )


def fill_random(path: Path, size: int) -> None:
    """Write size bytes of random data (os.urandom, 1 MiB at a time) and make them durable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        off = 0
        while off < size:
            n = min(MiB, size - off)
            os.pwrite(fd, os.urandom(n), off)
            off += n
        os.fdatasync(fd)
    finally:
        os.close(fd)


def fill_zero(path: Path, size: int) -> None:
    """A fully allocated (written, not fallocated) file of zeros."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        zeros = bytes(MiB)
        off = 0
        while off < size:
            n = min(MiB, size - off)
            os.pwrite(fd, zeros[:n], off)
            off += n
        os.fdatasync(fd)
    finally:
        os.close(fd)


def copy_file(src: Path, dst: Path) -> None:
    """Untimed set-up copy (dst fully allocated, same content as src)."""
    run("cp", "--sparse=never", str(src), str(dst))
    fdatasync_path(dst)


def sparse_file(path: Path, size: int) -> None:
    """A sparse file of ``size`` bytes, readable by root alone (as fill_random's)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def same_range(a: Path, b: Path, off: int, length: int) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        fa.seek(off)
        fb.seek(off)
        return fa.read(length) == fb.read(length)


# ---- machine description ---------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo."""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def mem_total() -> str:
    """The machine's memory, e.g. ``23.5 GiB``."""
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            kib = int(line.split()[1])
            return f"{kib / (1024 * 1024):.1f} GiB"
    return "?"


def mount_of(path: Path) -> tuple[str, str]:
    """(file system type, source) of the mount holding ``path``; ("?", "?") when unknown."""
    try:
        out = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", str(path)],
                             check=True, capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return "?", "?"
    return (out[0], out[1]) if len(out) >= 2 else ("?", "?")


def describe_fs(path: Path) -> str:
    """File system type, device and what the kernel says about the device under path."""
    fstype, source = mount_of(path)
    if fstype == "?":
        return "?"
    if not source.startswith("/dev/") or fstype == "tmpfs":
        return f"{fstype} ({source})"
    dev = Path(source).name
    blk = Path("/sys/class/block") / dev
    base = dev
    if (blk / "partition").exists():
        base = blk.resolve().parent.name
    q = Path("/sys/block") / base / "queue"
    rot = _read(str(q / "rotational"))
    sched = _read(str(q / "scheduler"))
    ra = _read(str(q / "read_ahead_kb"))
    model = _read(f"/sys/block/{base}/device/model")
    virtio = "virtio" if base.startswith("vd") else ""
    kind = " ".join(x for x in (virtio, model) if x) or "block device"
    return (f"{fstype} on {source} ({kind}; rotational={rot or '?'}, "
            f"scheduler {sched or '?'}, read_ahead_kb={ra or '?'})")


def machine_info(data_dir: Path) -> list[str]:
    virt = []
    for flag, what in (("--vm", "VM"), ("--container", "container")):
        with contextlib.suppress(OSError):
            out = subprocess.run(["systemd-detect-virt", flag], capture_output=True, text=True
                                 ).stdout.strip()
            if out and out != "none":
                virt.append(f"{what}: {out}")
    if Path("/sys/module/page_reporting").exists():
        virt.append("guest free page reporting on")
    return [
        f"CPU: {os.cpu_count()} x {cpu_model()}" + (f" ({', '.join(virt)})" if virt else ""),
        f"memory: {mem_total()}",
        f"kernel: {platform.release()}; Python {platform.python_version()}",
        f"data directory {data_dir}: {describe_fs(data_dir)}",
    ]


def loadavg() -> str:
    """The load averages over 1, 5 and 15 minutes, as /proc/loadavg gives them."""
    return " ".join(_read("/proc/loadavg").split()[:3])


def git(repo: Path, *args: str) -> str:
    """What a git command prints in ``repo``, stripped; "" when git fails or is missing."""
    try:
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                           check=False)
    except OSError:
        return ""
    return r.stdout.strip() if r.returncode == 0 else ""


def started_utc() -> str:
    """Now, as the first line of a generated block says when the run started."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


# ---- results --------------------------------------------------------------------------------


@dataclass
class Line:
    """One line of the summary table: ptcopy against one baseline."""

    row: str
    what: str
    ptcopy: str
    other: str
    other_val: str
    ratio: str
    target: str
    met: bool | None  # None: informational, no target

    def cells(self) -> list[str]:
        met = "—" if self.met is None else ("yes" if self.met else "**no**")
        return [self.row, self.what, self.ptcopy, self.other, self.other_val, self.ratio,
                self.target, met]


@dataclass
class Section:
    lines: list[Line] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra_tables: list[str] = field(default_factory=list)


HEADER = ["#", "measurement", "ptcopy", "compared with", "their result", "ratio", "target",
          "met"]


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def fmt_s(t: float, ms_digits: int = 1) -> str:
    """Seconds for a table: ``12.3 ms`` below a second (``ms_digits`` decimals), else ``1.23 s``."""
    if t < 1.0:
        return f"{t * 1000:.{ms_digits}f} ms"
    return f"{t:.2f} s"


def fmt_samples(ts: Sequence[float]) -> str:
    return ", ".join(fmt_s(t) for t in ts)


def fmt_bytes(n: float) -> str:
    """A size in the largest binary unit it reaches: ``64 MiB``, ``1.5 GiB``."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n:.0f} B"


# ---- fio ----------------------------------------------------------------------------------------


@dataclass
class FioResult:
    """One fio job's read or write side."""

    bw: float                 # bytes per second
    iops: float
    ios: int
    io_bytes: int
    runtime_s: float
    lat_mean_us: float        # completion latency
    lat_p99_us: float


class Fio:
    """fio with ``--direct=1 --ioengine=libaio`` at one queue depth, one job at a time, its JSON
    report parsed. Several jobs in one call run one after the other (``--stonewall``) in one fio
    process: a start-up each call, which under TCG takes seconds."""

    def __init__(self, workdir: Path, iodepth: int, extra: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.iodepth = iodepth
        self.extra = list(extra)   # options for every job, e.g. --runtime=300
        self._n = 0

    def run(self, jobs: Sequence[Sequence[str]], side: str = "write") -> list[FioResult]:
        """Run ``jobs`` (each a list of fio options); the ``side`` ("read" or "write") of each."""
        self._n += 1
        out = self.workdir / f"fio{self._n}.json"
        args = ["--direct=1", "--ioengine=libaio", f"--iodepth={self.iodepth}", "--numjobs=1",
                "--output-format=json", f"--output={out}", *self.extra]
        for i, job in enumerate(jobs):
            args += [f"--name=j{i}", *(["--stonewall"] if i else []), *job]
        run("fio", *args)
        found = json.loads(out.read_text())["jobs"]
        out.unlink()
        results = []
        for job in found:
            if job.get("error"):
                raise RuntimeError(f"fio {shlex.join(args)}: error {job['error']}")
            s = job[side]
            results.append(FioResult(
                bw=float(s["bw_bytes"]), iops=float(s["iops"]), ios=int(s["total_ios"]),
                io_bytes=int(s["io_bytes"]), runtime_s=s["runtime"] / 1000,
                lat_mean_us=s["clat_ns"]["mean"] / 1000,
                lat_p99_us=s["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1000))
        if len(results) != len(jobs):
            raise RuntimeError(f"fio ran {len(results)} of {len(jobs)} jobs")
        return results

    def replay(self, dev: str, offsets: Sequence[int], bs: int, loops: int = 1) -> list[str]:
        """The options of a job writing ``bs`` at ``offsets``, in that order, ``loops`` times, at
        the queue depth (a fio iolog)."""
        self._n += 1
        path = self.workdir / f"replay{self._n}.log"
        with path.open("w") as f:
            f.write(f"fio version 2 iolog\n{dev} add\n{dev} open\n")
            for _ in range(loops):
                f.writelines(f"{dev} write {o} {bs}\n" for o in offsets)
            f.write(f"{dev} close\n")
        return [f"--read_iolog={path}"]


# ---- generated blocks of docs/PERFORMANCE.md ---------------------------------------------------


@dataclass(frozen=True)
class DocBlock:
    """The block of a document a benchmark's ``--write-doc`` writes: between two marker lines that
    name the script, so everything around it (method, discussion) stays as written by hand."""

    script: str                  # e.g. "bench/run_engine.py"
    heading: str | None = None   # the section holding the block, if it has one of its own
    template: str | None = None  # a new section for a document without it: "{markers}" in it
                                 # stands for the markers

    @property
    def begin(self) -> str:
        return f"<!-- BEGIN {self.script} --write-doc: generated, do not edit by hand -->"

    @property
    def end(self) -> str:
        return f"<!-- END {self.script} --write-doc -->"

    def write(self, doc: Path, generated: str) -> None:
        """Put ``generated`` between the markers in ``doc``; without them, append the template."""
        text = doc.read_text() if doc.exists() else ""
        if self.begin not in text or self.end not in text:
            if self.heading and self.heading + "\n" in text:
                raise SystemExit(f"{doc}: section {self.heading!r} lacks the generated-block "
                                 "markers")
            if self.template is None:
                raise SystemExit(f"{doc} has no section {self.heading!r}: add it (with the "
                                 "markers) first")
            text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + self.template.replace(
                "{markers}", f"{self.begin}\n{self.end}")
        head, rest = text.split(self.begin, 1)
        _, tail = rest.split(self.end, 1)
        doc.write_text(f"{head}{self.begin}\n{generated.rstrip()}\n{self.end}{tail}")
        log(f"updated the section {self.heading!r} of {doc}" if self.heading
            else f"wrote the results into {doc}")
