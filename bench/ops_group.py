"""Row 7 of bench/run_ops.py: the write stall a group point in time causes.

A group of 16 independent sets, each master served by ptcopyd; one fio process runs a writer on
every served master (4 KiB random O_DIRECT writes over a 1 MiB hot region, one in flight, so
each write completes before the next is issued and a write's latency is the gap a writer sees).
fio logs every write's completion time (Unix epoch, ms) and latency (ns). While they write, the
group ``Update`` is called; the writes that complete between the call and the job's end are the
ones a freeze would hold. Baseline: the writes completing in the second before the call, the
same writers without a point in time.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import MiB, fill_random, fill_zero, log, sparse_file
from ops_rig import OpsRig

from ptcopy.datapath import blockdev as loopdev
from ptcopy.engine import Direction, Engine, Kind, Side, bitmap_size
from tests.helpers.names import IGROUP

WARM_S = 2.0      # every writer writing: the hot chunks' bits all set, the baseline second
AFTER_S = 0.5     # writing on after the job ended
MARGIN_S = 0.02   # a write the freeze held may complete just after the reply left
HOT = MiB         # each writer's region


@dataclass
class Stalls:
    """Per round: the longest write and the 99th percentile, in the window and before it."""

    max_s: list[float] = field(default_factory=list)
    p99_s: list[float] = field(default_factory=list)
    base_max_s: list[float] = field(default_factory=list)
    base_p99_s: list[float] = field(default_factory=list)
    call_s: list[float] = field(default_factory=list)   # group Update to Completed
    reply_s: list[float] = field(default_factory=list)  # group Update to its reply
    copy_max_s: list[float] = field(default_factory=list)   # longest write after the reply
    gap_s: list[float] = field(default_factory=list)   # longest time no writer completed one
    engine_s: list[float] = field(default_factory=list)   # pt_group_copy's frozen time
    writes: list[int] = field(default_factory=list)     # writes completing in the window


def p99(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * 0.99))]


class GroupRow:
    """16 sets in a group, a writer on each served master, the group update between them."""

    def __init__(self, rig: OpsRig, nsets: int, size: int, reps: int) -> None:
        self.rig = rig
        self.nsets = nsets
        self.size = size
        self.reps = reps
        self.res = Stalls()

    def prepare(self) -> None:
        log(f"row 7: {self.nsets} independent sets of {self.size // MiB} MiB in a group")
        self.sets: list[str] = []
        jobs: list[tuple[str, float]] = []
        for i in range(self.nsets):
            vols = self.rig.set_volumes(f"g{i}", self.size, Kind.INDEPENDENT)
            t0 = time.monotonic()
            s, job = self.rig.create_set(f"g{i}", "independent", vols)
            self.sets.append(s)
            jobs.append((job, t0))
        for job, t0 in jobs:
            self.rig.job_end(job, t0)
        self.group = self.rig.run(self.rig.c.create_group("freeze", self.sets))
        self.devs = [self.rig.master_device(s) for s in self.sets]

    def measure(self) -> None:
        for rnd in range(self.reps):
            self.one_round(rnd)
        self.rig.run(self.rig.c.ok(self.group, IGROUP, "Delete", "a{sv}", [{}]))
        for s in self.sets:
            self.rig.disable(s)
        log(f"row 7, the engine alone: {self.nsets} sets on loop devices, pt_group_copy's "
            "frozen time")
        self.res.engine_s = engine_freeze(self.rig.root, self.nsets, self.size,
                                          max(3, self.reps))
        log("  held " + ", ".join(f"{x * 1000:.1f}" for x in self.res.engine_s) + " ms")

    def one_round(self, rnd: int) -> None:
        logdir = self.rig.root / f"lat{rnd}"
        logdir.mkdir()
        runtime = WARM_S + 60   # fio is stopped once the job has ended
        args = ["fio", "--direct=1", "--ioengine=psync", "--rw=randwrite", "--bs=4k",
                f"--size={HOT}", "--time_based", f"--runtime={runtime:g}",
                "--log_avg_msec=0", "--log_unix_epoch=1", "--group_reporting=1",
                "--output-format=terse"]
        for i, dev in enumerate(self.devs):
            args += [f"--name=w{i}", f"--filename={dev}",
                     f"--write_lat_log={logdir}/w{i}"]
        before = [writes_done(d) for d in self.devs]
        fio = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.rig.on_cleanup("stop fio", lambda: stop(fio))
        try:
            wait_writing(fio, self.devs, before)
            time.sleep(WARM_S)   # the baseline second and more
            t_call = time.time()
            t0 = time.monotonic()
            job = self.rig.run(self.rig.c.update(self.group, "shadow", iface=IGROUP))
            t_reply = t_call + (time.monotonic() - t0)
            took = self.rig.job_end(job, t0)
            t_end = t_call + took
            time.sleep(AFTER_S)
        finally:
            stop(fio)
        w = read_window(logdir, t_call, t_reply + MARGIN_S, t_end)
        r = self.res
        r.call_s.append(took)
        r.reply_s.append(t_reply - t_call)
        r.max_s.append(max(w.pit, default=float("nan")))
        r.p99_s.append(p99(w.pit))
        r.base_max_s.append(max(w.before, default=float("nan")))
        r.base_p99_s.append(p99(w.before))
        r.copy_max_s.append(max(w.copy, default=float("nan")))
        r.writes.append(len(w.pit))
        r.gap_s.append(w.all_stalled())
        log(f"  round {rnd + 1}: group Update reply {r.reply_s[-1] * 1000:.1f} ms, job end "
            f"{took * 1000:.0f} ms; longest write until the reply {r.max_s[-1] * 1000:.1f} ms "
            f"(p99 {r.p99_s[-1] * 1000:.1f} ms, {len(w.pit)} writes); during the copy after it "
            f"{r.copy_max_s[-1] * 1000:.1f} ms; no writer progressing for "
            f"{r.gap_s[-1] * 1000:.0f} ms at most; the second before: longest "
            f"{r.base_max_s[-1] * 1000:.1f} ms, p99 {r.base_p99_s[-1] * 1000:.1f} ms")


def writes_done(dev: str) -> int:
    """Write requests a block device completed so far (/sys/block/X/stat)."""
    return int(Path(f"/sys/block/{os.path.basename(dev)}/stat").read_text().split()[4])


def wait_writing(fio: subprocess.Popen[bytes], devs: list[str], before: list[int]) -> None:
    """Until every writer has completed writes (fio starts its processes one by one)."""
    deadline = time.monotonic() + 60
    while any(writes_done(d) <= b for d, b in zip(devs, before, strict=True)):
        if fio.poll() is not None:
            err = fio.stderr.read().decode()[-2000:] if fio.stderr else ""
            raise RuntimeError(f"fio ended early: {err}")
        if time.monotonic() > deadline:
            raise RuntimeError("the writers did not start within 60 s")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End fio (SIGTERM makes it write its logs and exit)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Window:
    """Write latencies (s) by when the write completed: before the call (1 s), from the call to
    its reply (the point in time), after the reply until the job ended (the copy)."""

    before: list[float] = field(default_factory=list)
    pit: list[float] = field(default_factory=list)
    copy: list[float] = field(default_factory=list)
    done_ms: list[float] = field(default_factory=list)   # completion times, every writer

    def all_stalled(self) -> float:
        """The longest time (s) no writer on any master completed a write, from the call to
        the reply: a freeze of every master shows as this gap; one slow writer does not."""
        t = sorted(self.done_ms)
        return max((b - a for a, b in itertools.pairwise(t)), default=float("nan")) / 1000


def read_window(logdir: Path, t_call: float, t_pit: float, t_end: float) -> Window:
    """fio's per-write logs (completion time in ms since the epoch, latency in ns) sorted into
    the windows; the log's 1 ms resolution is given to the point in time."""
    lo, mid, hi = t_call * 1000 - 1, t_pit * 1000 + 1, t_end * 1000 + 1
    w = Window()
    top: list[tuple[float, float, str]] = []
    files = sorted(logdir.glob("*_clat.*.log"))
    if not files:
        raise RuntimeError(f"fio wrote no latency logs in {logdir}")
    for f in files:
        for line in f.read_text().splitlines():
            parts = line.split(",")
            if len(parts) < 2:
                continue
            t, lat = float(parts[0]), int(parts[1]) / 1e9
            if lo - 1000 <= t < lo:
                w.before.append(lat)
            elif lo <= t <= mid:
                w.pit.append(lat)
                w.done_ms.append(t)
                top.append((lat, t - lo, f.name.split("_")[0]))
            elif mid < t <= hi:
                w.copy.append(lat)
    top.sort(reverse=True)
    log("  longest writes until the reply (ms, completed ms after the call, writer): "
        + "; ".join(f"{lat * 1000:.1f} at +{t:.0f} {n}" for lat, t, n in top[:5]))
    return w


def engine_freeze(root: Path, nsets: int, size: int, reps: int) -> list[float]:
    """The engine's own account of the freeze: how long ``pt_group_copy`` held every master's
    gate (its ``frozen_ns``), for ``nsets`` independent sets on loop devices over files in
    ``root``, each with 32 chunks changed before every update. No daemon, no writers."""
    held: list[float] = []
    undo: list[tuple[str, object]] = []
    eng = Engine()
    try:
        sets = []
        for i in range(nsets):
            devs = []
            for ext, fill, n in (("m", fill_random, size), ("s", fill_zero, size),
                                 ("b", sparse_file, bitmap_size(size, size, 32768,
                                                                Kind.INDEPENDENT))):
                p = root / f"e{i}.{ext}"
                fill(p, n)
                undo.append(("file", p))
                devs.append(loopdev.attach(str(p), direct_io=True))
                undo.append(("loop", devs[-1]))
            s = eng.enable(devs[0], devs[1], devs[2], Kind.INDEPENDENT, chunk_size=32768)
            undo.append(("set", s))
            sets.append(s)
        for s in sets:
            s.wait()
        for _ in range(reps):
            for s in sets:
                for c in range(32):
                    s.write(Side.MASTER, c * 32768, os.urandom(4096))
                s.flush(Side.MASTER)
            held.append(eng.group_copy(sets, Direction.TO_SHADOW))
            for s in sets:
                s.wait()
    finally:
        for kind, x in reversed(undo):
            try:
                if kind == "set":
                    x.disable()  # type: ignore[attr-defined]
                elif kind == "loop":
                    loopdev.detach(str(x))
                else:
                    Path(str(x)).unlink(missing_ok=True)
            except Exception as e:  # keep going: everything must be torn down
                log(f"CLEANUP PROBLEM: {kind} {x}: {e}")
        eng.close()
    return held
