"""Shared helpers for the ptcopy benchmarks: timing, cold caches, test files, result lines.

Nothing here is a test: these are measurements, printed side by side with the baselines they
are compared with, all taken in the same run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB


def log(msg: str) -> None:
    """Progress messages go to stderr so stdout stays the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- cold caches -------------------------------------------------------------------------

_DROP = Path("/proc/sys/vm/drop_caches")
_drop_warned = False


def can_drop_caches() -> bool:
    return os.geteuid() == 0 and _DROP.exists()


def drop_caches() -> None:
    """Write back dirty pages, then drop the page cache, so the next measurement starts cold.

    The write-back happens here, before any timer starts: no measurement pays for the dirty
    pages a previous one left behind.
    """
    global _drop_warned
    os.sync()
    if not can_drop_caches():
        if not _drop_warned:
            log("not root: cannot drop the page cache; measurements are NOT cold")
            _drop_warned = True
        return
    _DROP.write_text("3\n")


# ---- timing -------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def run_cmd(argv: Sequence[str]) -> None:
    subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


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


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def need_space(path: Path, nbytes: int) -> None:
    free = free_bytes(path)
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
    run_cmd(["cp", "--sparse=never", str(src), str(dst)])
    fdatasync_path(dst)


def sparse_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def same_range(a: Path, b: Path, off: int, length: int) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        fa.seek(off)
        fb.seek(off)
        return fa.read(length) == fb.read(length)


@contextlib.contextmanager
def removing(*paths: Path, keep: bool = False) -> Iterator[None]:
    try:
        yield
    finally:
        if not keep:
            for p in paths:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


# ---- machine description ---------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _mem_total() -> str:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            kib = int(line.split()[1])
            return f"{kib / (1024 * 1024):.1f} GiB"
    return "?"


def describe_fs(path: Path) -> str:
    """File system type, device and what the kernel says about the device under path."""
    try:
        out = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", str(path)],
                             check=True, capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    if len(out) < 2:
        return "?"
    source, fstype = out[0], out[1]
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
        f"CPU: {os.cpu_count()} x {_cpu_model()}" + (f" ({', '.join(virt)})" if virt else ""),
        f"memory: {_mem_total()}",
        f"kernel: {platform.release()}; Python {platform.python_version()}",
        f"data directory {data_dir}: {describe_fs(data_dir)}",
    ]


def loadavg() -> str:
    return " ".join(_read("/proc/loadavg").split()[:3])


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


def fmt_s(t: float) -> str:
    if t < 1.0:
        return f"{t * 1000:.1f} ms"
    return f"{t:.2f} s"


def fmt_rate(nbytes: int, t: float) -> str:
    return f"{nbytes / MiB / t:.0f} MiB/s"


def fmt_samples(ts: Sequence[float]) -> str:
    return ", ".join(fmt_s(t) for t in ts)


def replace_generated(text: str, heading: str, begin: str, end: str, block: str,
                      doc: Path) -> str | None:
    """``text`` with the generated block (between the ``begin`` and ``end`` markers) of the
    section ``heading`` replaced by ``block``; None when there is no such section."""
    start = text.find(heading + "\n")
    if start < 0:
        return None
    nxt = text.find("\n## ", start + len(heading))
    stop = len(text) if nxt < 0 else nxt + 1
    section = text[start:stop]
    b, e = section.find(begin), section.find(end)
    if b < 0 or e < b:
        raise SystemExit(f"{doc}: section {heading!r} lacks the generated-block markers")
    return text[:start] + section[:b] + block + section[e + len(end):] + text[stop:]
