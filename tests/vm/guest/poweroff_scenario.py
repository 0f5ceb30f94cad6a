"""Power-off crash scenario for the kernel data path, run inside the VM test tier's guest.

Not a pytest file: tests/vm/test_kernel_poweroff.py and tests/stress/torture_kernel.py (through
tests/vm/poweroff.py) boot the guest twice over the same virtio disks::

    .venv/bin/python -m tests.vm.guest.poweroff_scenario load STATE_DIR --variant V --seed N
    .venv/bin/python -m tests.vm.guest.poweroff_scenario recover STATE_DIR

Disks, in order (raw image files on the host, kept across the boots):

    /dev/vda  master of the independent set "pi" (random data)
    /dev/vdb  its shadow
    /dev/vdc  its bitmap volume
    /dev/vdd  master of the dependent set "pd" (random data; unused in the "shared" variant,
              where pd's master is /dev/vda too)
    /dev/vde  pd's shadow: the dm-snapshot exception store, smaller than the master
    /dev/vdf  pd's bitmap volume

``load`` (boot 1) enables and serves both sets, brings them to the state its variant names,
writes STATE_DIR/state.json (durably: the repository share caches writes), starts two writer
threads, prints ``PTCOPY-LOAD-RUNNING`` and writes until the host cuts the power:

    steady    full copy of pi, an update cycle, a new point in time of pd; then the writers
    update    crash during an update of pi (throttled so it is still running at the cut)
    fullcopy  crash during pi's first full copy (throttled)
    group     crash during a group update of pi and pd at one point in time (pi throttled)
    shared    pd on pi's master (an era chain and a snapshot on one origin); a group update
              of both, then the writers
    cycles    as steady, then update after update of pi under the writers: the cut lands
              anywhere in a cycle (point in time, fold, copy, dismantle)

The writers (two threads) write random data to pi's and pd's master devices and pi's shadow
device: whole chunks and 4 KiB-aligned pieces across chunk boundaries with O_DIRECT in the lower
half of each device's region, whole chunks and byte-unaligned pieces through the page cache in
its upper half (mixed on the same pages, the kernel would flag the page cache stale and fail a
later fsync), 30 % of them followed by fsync. Writes to pd's master stay in its first
DEP_REGION bytes so its exception store cannot run out; pi's shadow refuses writes while a copy
into it runs (it is read-only then), which is counted, not an error. A failed master write is.

``recover`` (boot 2) reopens both sets from the disks and checks the promise that no changed
chunk is ever missed after a crash:

    (a) pd's shadow still shows the point in time recorded in state.json;
    (b) after an update of pi (no writes meanwhile) pi's shadow equals its master byte for
        byte: a chunk written before the crash that era or the fold missed would differ;
    (c) pd takes a new point in time after the crash: its shadow then equals its master;
    (d) after teardown no ptcopy device-mapper device and no loop device is left.

It writes STATE_DIR/result.json (``ok``, ``problems``, chunks copied, timings) and exits 0
only when every check held. ``recover --control`` (a later boot, after the host wrote some
chunks of /dev/vda's image behind era's back) does (b) only and writes result-control.json: it
must name exactly those chunks as lost, which shows the check can fail.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import random
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

from ptcopy.datapath.kernel import KernelPath, KernelSet
from ptcopy.engine import Direction, Engine, Flag, Kind, dm_list
from tests.vm.guest.kernel_helpers import (
    CHUNK,
    MIB,
    Pool,
    Vol,
    digest,
    read_at,
    reopen,
    scribble,
    set_volumes,
)

MARKER = "PTCOPY-LOAD-RUNNING"
VARIANTS = ("steady", "update", "fullcopy", "group", "shared", "cycles")
DISKS = ("/dev/vda", "/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde", "/dev/vdf")
MASTER_SIZE = 32 * MIB
DEP_SHADOW_SIZE = 24 * MIB
DEP_REGION = 16 * MIB          # writes to pd's master stay here: its store holds all of it
THROTTLE = (250, 1)            # ms after every chunk: a copy of >= 40 chunks outlasts the cut
RUN_DIR = "/tmp/ptcopy-poweroff"
IND, DEP = "pi", "pd"


def disk_sizes() -> list[int]:
    """Bytes of /dev/vda.. /dev/vdf (the host makes the image files this size)."""
    ind = KernelPath.layout_for(MASTER_SIZE, MASTER_SIZE, CHUNK, Kind.INDEPENDENT).total
    dep = KernelPath.layout_for(MASTER_SIZE, DEP_SHADOW_SIZE, CHUNK, Kind.DEPENDENT).total
    return [MASTER_SIZE, MASTER_SIZE, ind, MASTER_SIZE, DEP_SHADOW_SIZE, dep]


def say(*words: object) -> None:
    print(*words, flush=True)


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


class Steps:
    """Wall time of each step, printed as it ends and kept for the JSON files."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Any:
        t0 = time.monotonic()
        yield
        self.times[name] = round(time.monotonic() - t0, 3)
        say(f"PTCOPY-STEP {name} {self.times[name]:.2f}s")


def write_json(path: str, data: dict[str, Any]) -> None:
    """Durable on return: the repository share is mounted cache=loose, and boot 1 ends in a
    power cut rather than the guest's final sync."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def volumes(pool: Pool, shared: bool) -> dict[str, Vol]:
    v = [pool.device(d) for d in DISKS]
    for vol, want in zip(v, disk_sizes(), strict=True):
        if vol.size != want:
            raise SystemExit(f"{vol.path} has {vol.size} bytes, the scenario needs {want}")
    return {"im": v[0], "is": v[1], "ib": v[2], "dm": v[0] if shared else v[3], "ds": v[4],
            "db": v[5]}


# ---- the write load ---------------------------------------------------------------------------


class Writers:
    """Two threads writing random data to pi's and pd's masters and pi's shadow until stopped.
    Shadow writes start only once ``shadow_on`` is set: an open shadow device would make the
    copy into it refuse (InUse)."""

    def __init__(self, ind: KernelSet, dep: KernelSet, seed: int) -> None:
        self.ind, self.dep = ind, dep
        self.seed = seed
        self.stop = threading.Event()
        self.shadow_on = threading.Event()
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {"im": 0, "dm": 0, "is": 0, "is_refused": 0, "fsync": 0,
                                       "errors": 0}
        self.last_error = ""
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(2)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def total(self) -> int:
        with self.lock:
            return self.counts["im"] + self.counts["dm"] + self.counts["is"]

    def line(self, elapsed: float, cycles: int) -> str:
        with self.lock:
            c = dict(self.counts)
        return (f"PTCOPY-WRITES t={elapsed:.1f} cycles={cycles} "
                + " ".join(f"{k}={v}" for k, v in c.items())
                + (f" last_error={self.last_error!r}" if self.last_error else ""))

    def _count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        shared = self.ind.master == self.dep.master
        region = {"im": DEP_REGION if shared else self.ind.master_size,
                  "dm": DEP_REGION, "is": self.ind.master_size}
        paths = {"im": self.ind.master_device, "dm": self.dep.master_device,
                 "is": self.ind.shadow_device}
        direct = os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC
        buffered = os.O_WRONLY | os.O_CLOEXEC
        # masters: fds held for the whole run; the shadow: opened for each write
        fds = {(t, d): os.open(paths[t], direct if d else buffered)
               for t in ("im", "dm") for d in (True, False)}
        buf = mmap.mmap(-1, 4 * CHUNK)
        while not self.stop.is_set():
            target = rng.choices(["im", "dm", "is"], [5, 3, 2])[0]
            if target == "is" and not self.shadow_on.is_set():
                target = "im"
            # direct writes in the lower half of the region, buffered ones in the upper half:
            # a direct write over pages another thread dirtied meanwhile makes the kernel flag
            # the whole device's page cache stale, and fsync then fails with EIO
            half = region[target] // 2
            kind = rng.random()
            if kind < 0.35:        # one whole chunk, direct
                n, direct_io = CHUNK, True
                off = rng.randrange(half // CHUNK) * CHUNK
            elif kind < 0.65:      # 4 KiB-aligned, across chunk boundaries, direct
                n, direct_io = rng.choice([4096, 3 * 4096, CHUNK + 4096, 2 * CHUNK + 8192]), True
                off = rng.randrange((half - n) // 4096) * 4096
            elif kind < 0.8:       # one whole chunk through the page cache
                n, direct_io = CHUNK, False
                off = half + rng.randrange(half // CHUNK) * CHUNK
            else:                  # any byte, any length, through the page cache
                n, direct_io = rng.randrange(1, 3 * CHUNK), False
                off = half + rng.randrange(half - n)
            sync = rng.random() < 0.3
            data = rng.randbytes(n)
            step = "open"
            try:
                if target == "is":
                    fd = os.open(paths["is"], direct if direct_io else buffered)
                else:
                    fd = fds[(target, direct_io)]
                try:
                    step = "write"
                    if direct_io:
                        buf[:n] = data
                        done = os.pwritev(fd, [memoryview(buf)[:n]], off)
                    else:
                        done = os.pwrite(fd, data, off)
                    if done != n:
                        raise OSError(f"short write: {done} of {n} bytes")
                    if sync:
                        step = "fsync"
                        os.fsync(fd)
                        self._count("fsync")
                finally:
                    if target == "is":
                        step = "close"
                        os.close(fd)
                self._count(target)
            except OSError as e:
                if target == "is":   # read-only while a copy into it runs
                    self._count("is_refused")
                else:
                    self._count("errors")
                    self.last_error = (f"{step} of {target} {off}+{n} "
                                       f"({'direct' if direct_io else 'buffered'}): {e}")


class Reporter(threading.Thread):
    """Prints the write counters twice a second; on the first failed master write, the kernel's
    recent messages too (the console shows only its critical ones)."""

    def __init__(self, writers: Writers) -> None:
        super().__init__(daemon=True)
        self.writers = writers
        self.cycles = 0
        self.start_time = time.monotonic()

    def run(self) -> None:
        dumped = False
        while not self.writers.stop.wait(0.5):
            say(self.writers.line(time.monotonic() - self.start_time, self.cycles))
            if self.writers.counts["errors"] and not dumped:
                dumped = True
                log = subprocess.run(["dmesg"], capture_output=True, text=True,
                                     check=False).stdout.splitlines()
                for ln in log[-40:]:
                    say(f"PTCOPY-DMESG {ln}")


# ---- phase 1: load, then the power cut -------------------------------------------------------


def phase_load(state_dir: str, variant: str, seed: int, max_seconds: float) -> int:
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
    steps = Steps()
    rng = random.Random(seed)
    pool = Pool(RUN_DIR)
    v = volumes(pool, variant == "shared")
    engine = Engine()
    kp = KernelPath(engine, RUN_DIR)   # before enable: defers the engine's own copies
    with steps("enable"):
        st = engine.enable(v["im"].spec, v["is"].spec, v["ib"].spec, kind=Kind.INDEPENDENT,
                           chunk_size=CHUNK)
        ind = kp.serve(IND, st, set_volumes(v["im"], v["is"], v["ib"]))
        st = engine.enable(v["dm"].spec, v["ds"].spec, v["db"].spec, kind=Kind.DEPENDENT,
                           chunk_size=CHUNK)
        dep = kp.serve(DEP, st, set_volumes(v["dm"], v["ds"], v["db"]))
    writers = Writers(ind, dep, seed)

    def full_copy() -> None:
        with steps("full copy"):
            kp.copy([IND], Direction.TO_SHADOW, full=True)
            if not kp.wait(IND, 300) or kp.progress(IND).result != 0:
                raise SystemExit(f"full copy failed: {kp.progress(IND)}")

    def changes() -> None:
        with steps("scribble"):
            seeds = rng.sample(range(1 << 30), 3)
            scribble(ind.master_device, DEP_REGION if variant == "shared" else ind.master_size,
                     48, seeds[0])
            scribble(dep.master_device, DEP_REGION, 16, seeds[1])
            scribble(ind.shadow_device, ind.master_size, 6, seeds[2])

    def update(names: list[str], *, wait: bool) -> None:
        with steps(f"update {'+'.join(names)}"):
            kp.copy(names, Direction.TO_SHADOW, full=False)
            for name in names if wait else ():
                if not kp.wait(name, 300) or kp.progress(name).result != 0:
                    raise SystemExit(f"update of {name} failed: {kp.progress(name)}")

    early = variant in ("update", "group")   # the writers race with the point in time
    if variant in ("steady", "cycles"):
        full_copy()
        changes()
        update([IND], wait=True)
        update([DEP], wait=True)
    elif variant == "update":
        full_copy()
        changes()
        update([DEP], wait=True)
        writers.start()
        ind.set.set_copy_params(*THROTTLE)
        update([IND], wait=False)
    elif variant == "fullcopy":
        ind.set.set_copy_params(*THROTTLE)
        with steps("full copy (throttled)"):
            kp.copy([IND], Direction.TO_SHADOW, full=True)
    elif variant == "group":
        full_copy()
        changes()
        writers.start()
        ind.set.set_copy_params(*THROTTLE)
        update([IND, DEP], wait=False)
    else:   # shared
        full_copy()
        changes()
        update([IND, DEP], wait=True)
    copying = kp.busy(IND)
    if variant in ("update", "fullcopy", "group") and not copying:
        raise SystemExit(f"variant {variant}: pi's copy ended before the power cut")
    with steps("pd point-in-time digest"):
        pit = digest(dep.shadow_device)
    write_json(os.path.join(state_dir, "state.json"), {
        "variant": variant, "seed": seed, "dep_pit": pit, "copying_at_cut": copying,
        "load_steps": steps.times, "ind_flags": int(ind.set.status().flags),
    })
    if variant != "cycles":   # cycles: pi's shadow changes between its updates only
        writers.shadow_on.set()
    if not early:
        writers.start()
    start = time.monotonic()
    while writers.total() < 20 and time.monotonic() - start < 30:
        time.sleep(0.02)
    say(f"PTCOPY-STEP writers run at uptime {uptime():.2f}s")
    reporter = Reporter(writers)
    say(writers.line(time.monotonic() - reporter.start_time, 0))
    reporter.start()
    say(MARKER)
    while time.monotonic() - start < max_seconds:
        if variant == "cycles":   # update after update: the cut hits one somewhere
            kp.copy([IND], Direction.TO_SHADOW, full=False)
            if not kp.wait(IND, 300) or kp.progress(IND).result != 0:
                raise SystemExit(f"update cycle {reporter.cycles} failed: {kp.progress(IND)}")
            reporter.cycles += 1
            scribble(ind.shadow_device, ind.master_size, 2, rng.randrange(1 << 30))
        else:
            time.sleep(0.1)
    writers.stop.set()
    say(writers.line(time.monotonic() - start, reporter.cycles))
    say(f"PTCOPY-ERROR: no power cut within {max_seconds:.0f} s of the marker")
    return 2


# ---- phase 2: reboot, reassemble, update, check ----------------------------------------------


def chunk_diff(a: str, b: str, size: int, limit: int = 20) -> list[int]:
    """Chunks whose content differs between two devices (the first ``limit``)."""
    found = []
    for off in range(0, size, MIB):
        x, y = read_at(a, off, MIB), read_at(b, off, MIB)
        if x == y:
            continue
        for c in range(0, MIB, CHUNK):
            if x[c:c + CHUNK] != y[c:c + CHUNK]:
                found.append((off + c) // CHUNK)
                if len(found) >= limit:
                    return found
    return found


def leftovers() -> dict[str, list[str]]:
    loops = subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                           capture_output=True, text=True, check=False).stdout.split("\n")
    return {"dm": sorted(n for n in dm_list() if n.startswith("ptcopy-")),
            "loop": [ln.strip() for ln in loops if ln.strip()]}


def phase_recover(state_dir: str, control: bool) -> int:
    with open(os.path.join(state_dir, "state.json")) as f:
        state = json.load(f)
    variant = state["variant"]
    steps = Steps()
    problems: list[str] = []
    result: dict[str, Any] = {"variant": variant, "seed": state["seed"], "problems": problems,
                              "ok": False, "control": control}
    out = os.path.join(state_dir, "result-control.json" if control else "result.json")
    try:
        _recover(state, steps, problems, result, control)
    except BaseException as e:   # report what broke, whatever it was
        problems.append(f"recover raised {type(e).__name__}: {e}")
        result["traceback"] = traceback.format_exc()
        say(result["traceback"])
    result["ok"] = not problems
    result["steps"] = steps.times
    write_json(out, result)
    for p in problems:
        say(f"PTCOPY-PROBLEM: {p}")
    say(f"PTCOPY-RESULT {json.dumps({k: v for k, v in result.items() if k != 'traceback'})}")
    return 0 if result["ok"] else 1


def _recover(state: dict[str, Any], steps: Steps, problems: list[str],
             result: dict[str, Any], control: bool) -> None:
    pool = Pool(RUN_DIR)
    v = volumes(pool, state["variant"] == "shared")
    engine = Engine()
    kp = KernelPath(engine, RUN_DIR)
    try:
        with steps("reopen"):
            ind = reopen(engine, kp, IND, v["im"], v["is"], v["ib"])
            dep = reopen(engine, kp, DEP, v["dm"], v["ds"], v["db"])
        st = ind.set.status()
        result["ind_incomplete_at_open"] = bool(st.flags & Flag.INCOMPLETE)
        result["ind_diff_chunks_at_open"] = st.diff_chunks
        if state["copying_at_cut"] and not control and not st.flags & Flag.INCOMPLETE:
            problems.append("pi's copy was cut by the power-off, yet pi is not INCOMPLETE at "
                            "reopen")

        # (a) the dependent shadow kept its point in time
        if not control:
            with steps("pd shadow digest"):
                pit = digest(dep.shadow_device)
            result["dep_pit_kept"] = pit == state["dep_pit"]
            if pit != state["dep_pit"]:
                problems.append(f"pd's shadow changed across the crash: {pit} != "
                                f"{state['dep_pit']}")

        # (b) update pi; then its shadow must be its master, byte for byte
        ind.set.set_copy_params(0, 256)   # the throttle of boot 1 is kept in the header
        with steps("update pi"):
            kp.copy([IND], Direction.TO_SHADOW, full=False)
            finished = kp.wait(IND, 600)
        p = kp.progress(IND)
        result["chunks_copied"] = p.chunks_total
        result["update_result"] = p.result
        if not finished or p.result != 0:
            problems.append(f"pi's update after the crash did not finish cleanly: {p}")
        if ind.set.status().flags & Flag.INCOMPLETE:
            problems.append("pi is still INCOMPLETE after a finished update")
        with steps("pi compare"):
            m, s = digest(ind.master_device), digest(ind.shadow_device)
        result["ind_equal"] = m == s
        if m != s:
            lost = chunk_diff(ind.master_device, ind.shadow_device, ind.master_size)
            problems.append(f"LOST CHUNKS: pi's shadow differs from its master after the "
                            f"update, in chunks {lost} (first 20)")
            result["lost_chunks"] = lost

        # (c) pd works on: a new point in time equals its master
        if not control:
            with steps("pd new point in time"):
                kp.copy([DEP], Direction.TO_SHADOW, full=False)
                kp.wait(DEP, 60)
                pm, ps = digest(dep.master_device), digest(dep.shadow_device)
            result["dep_new_pit_equal"] = pm == ps
            if pm != ps:
                problems.append("pd's new point in time after the crash differs from its "
                                "master")
    finally:
        with steps("teardown"):
            kp.teardown()
            engine.close()
            pool.release()
            os.sync()
    # (d) nothing left behind
    left = leftovers()
    result["left_behind"] = left
    if left["dm"] or left["loop"]:
        problems.append(f"left behind after teardown: {left}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phase", choices=["load", "recover"])
    ap.add_argument("state_dir")
    ap.add_argument("--variant", default="steady", choices=VARIANTS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-seconds", type=float, default=60.0,
                    help="load: give up when no power cut came this long after the marker")
    ap.add_argument("--control", action="store_true",
                    help="recover: only update and compare pi, into result-control.json")
    args = ap.parse_args(argv)
    if os.environ.get("PTCOPY_IN_VM") != "1":
        raise SystemExit("poweroff_scenario.py runs inside the VM test tier's guest")
    say(f"PTCOPY-STEP {args.phase} starts at uptime {uptime():.2f}s")
    if args.phase == "load":
        return phase_load(args.state_dir, args.variant, args.seed, args.max_seconds)
    return phase_recover(args.state_dir, args.control)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
