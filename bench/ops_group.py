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

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import MiB, log
from ops_rig import OpsRig

from ptcopy.engine import Kind
from tests.helpers.names import IGROUP

WARM_S = 2.0      # fio start-up and the hot chunks' bits all set before the call
AFTER_S = 1.0     # writing on after the job ended
HOT = MiB         # each writer's region


@dataclass
class Stalls:
    """Per round: the longest write and the 99th percentile, in the window and before it."""

    max_s: list[float] = field(default_factory=list)
    p99_s: list[float] = field(default_factory=list)
    base_max_s: list[float] = field(default_factory=list)
    base_p99_s: list[float] = field(default_factory=list)
    call_s: list[float] = field(default_factory=list)   # group Update to Completed
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

    def one_round(self, rnd: int) -> None:
        logdir = self.rig.root / f"lat{rnd}"
        logdir.mkdir()
        runtime = WARM_S + 10 + AFTER_S   # fio is stopped early once the window has passed
        args = ["fio", "--direct=1", "--ioengine=psync", "--rw=randwrite", "--bs=4k",
                f"--size={HOT}", "--time_based", f"--runtime={runtime:g}",
                "--log_avg_msec=0", "--log_unix_epoch=1", "--group_reporting=1",
                "--output-format=terse"]
        for i, dev in enumerate(self.devs):
            args += [f"--name=w{i}", f"--filename={dev}",
                     f"--write_lat_log={logdir}/w{i}"]
        fio = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.rig.on_cleanup("stop fio", lambda: stop(fio))
        try:
            time.sleep(WARM_S)
            if fio.poll() is not None:
                raise RuntimeError(f"fio ended early: {fio.stderr.read().decode()[-2000:]}"
                                   if fio.stderr else "fio ended early")
            t_call = time.time()
            t0 = time.monotonic()
            took = self.rig.call_to_end(lambda: self.rig.c.update(self.group, "shadow",
                                                                   iface=IGROUP))
            t_end = t_call + (time.monotonic() - t0)
            time.sleep(AFTER_S)
        finally:
            stop(fio)
        window, before = read_window(logdir, t_call, t_end)
        r = self.res
        r.call_s.append(took)
        r.max_s.append(max(window, default=float("nan")))
        r.p99_s.append(p99(window))
        r.base_max_s.append(max(before, default=float("nan")))
        r.base_p99_s.append(p99(before))
        r.writes.append(len(window))
        log(f"  round {rnd + 1}: group update {took * 1000:.1f} ms; longest write in it "
            f"{r.max_s[-1] * 1000:.1f} ms (p99 {r.p99_s[-1] * 1000:.1f} ms, {len(window)} "
            f"writes); the second before: longest {r.base_max_s[-1] * 1000:.1f} ms, p99 "
            f"{r.base_p99_s[-1] * 1000:.1f} ms")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End fio (SIGTERM makes it write its logs and exit)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_window(logdir: Path, t_call: float, t_end: float) -> tuple[list[float], list[float]]:
    """Latencies (s) of the writes completing from the call to the job's end (plus the ms the
    log's resolution blurs), and of those completing in the second before the call."""
    lo, hi = t_call * 1000, t_end * 1000 + 1
    window: list[float] = []
    before: list[float] = []
    files = sorted(logdir.glob("*_clat.*.log"))
    if not files:
        raise RuntimeError(f"fio wrote no latency logs in {logdir}")
    for f in files:
        for line in f.read_text().splitlines():
            parts = line.split(",")
            if len(parts) < 2:
                continue
            t, lat = float(parts[0]), int(parts[1]) / 1e9
            if lo <= t <= hi:
                window.append(lat)
            elif lo - 1000 <= t < lo:
                before.append(lat)
    return window, before
