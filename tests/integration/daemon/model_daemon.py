"""A randomized model test of ptcopyd, the way users drive it: D-Bus calls, and I/O on the
devices the daemon serves (``MasterDevice``/``ShadowDevice`` of each set).

The model: each side of each set (its master, its shadow) is a byte array. A write changes one
side (every set on that master sees a master write). ``Copy``/``Update`` X -> Y makes Y equal to X
as it was at the call; for a dependent set an update to the shadow is a new point in time and one
to the master restores it. A group copy does this for every member at one instant. Reads of
either side, at any time, must match the model: on the userspace path also while a copy runs
(both sides stay usable); on the kernel path a copy's target is read-only while it runs and a
dependent shadow is taken away while it merges, so the driver waits for the copy before
writing the target (or touching such a shadow) there.

Refusals the contract names are "no change": a restore of a master with several shadows
(``Dependency``), a group merge on the kernel path (``WrongType``), a copy while one runs
(``Busy``, only when a copy of ours may still be running). The driver then checks at once that
nothing changed. Any other refusal, a failed job, or a byte that differs is a failure.

An aborted copy leaves its target partly copied, so an abort is followed by a full copy in the
same direction. A restart (SIGTERM or SIGKILL, with or without waiting for the jobs first) keeps
what every ended job did; a copy still running at the stop is finished by an Update in its
direction after the restart (the contract promises no more after a crash), then every side of
every set is checked.

Operations are drawn from a seed up front (:func:`generate`), so a run is a seed plus an op list;
a failure names the op where the daemon and the model parted, and :func:`shrink` replays
prefixes and drops ops to get a short sequence that still fails, printed as a replayable list.

Used by tests/daemon/test_daemon_model.py (userspace path) and
tests/vm/guest/test_kernel_model.py (kernel path, in the VM tier).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import astuple, dataclass, field
from typing import Any

from dbus_fast import Variant

from ptcopy.engine import Kind, bitmap_size
from tests.helpers.blockio import read_dev, write_dev
from tests.helpers.client import CallFailed, Client, b, o, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import ERR, IGROUP, IJOB, ISET, MANAGER, MIB, ROOT

KIB = 1 << 10
CHUNK = 32 * KIB
SHADOW, MASTER = "shadow", "master"
CALL_TIMEOUT = 120.0   # calls that build device-mapper stacks run long under TCG


class Divergence(AssertionError):
    """The daemon and the model parted at op ``index`` (-1: during setup)."""

    def __init__(self, index: int, text: str) -> None:
        super().__init__(text)
        self.index = index
        self.text = text


# ---- configuration and operations --------------------------------------------------------------


@dataclass(frozen=True)
class SetSpec:
    name: str
    kind: str            # "dependent" or "independent"
    master: int          # which master volume (sets may share one)
    compact: bool = False
    delay: int = 0       # copy throttle (ms after every ``units`` chunks): copies that last
    units: int = 0       # long enough for I/O, aborts and restarts to meet them running


@dataclass(frozen=True)
class Config:
    seed: int
    size: int
    sets: tuple[SetSpec, ...]
    group: tuple[int, ...]   # indexes of the sets in the group ((): no group)

    def masters(self) -> list[int]:
        return sorted({s.master for s in self.sets})

    def shared(self, i: int) -> bool:
        return sum(1 for s in self.sets if s.master == self.sets[i].master) > 1

    def describe(self) -> str:
        sets = ", ".join(f"{s.name}={s.kind}{'(compact)' if s.compact else ''}@master{s.master}"
                         f"{f' throttled {s.delay}ms/{s.units}' if s.delay else ''}"
                         for s in self.sets)
        grp = ", ".join(self.sets[i].name for i in self.group) or "none"
        return f"seed {self.seed}: size {self.size}, sets {sets}; group {grp}"


@dataclass(frozen=True)
class Op:
    kind: str            # write read copy group wait check abort restart
    s: int = 0           # set index
    side: str = ""       # write/read: master|shadow; copy/group/abort: the direction
    off: int = 0
    length: int = 0
    mode: str = ""       # write: direct|buffered; restart: term|kill
    data: int = 0        # write: seed of the bytes
    full: bool = False   # copy/group: Copy (True) or Update
    wait: bool = False   # copy/group: wait for the job; restart: wait for every job first

    def __str__(self) -> str:
        k = self.kind
        if k == "write":
            return (f"write {self.mode} set{self.s}.{self.side} [{self.off}, +{self.length}) "
                    f"(chunks {self.off // CHUNK}..{(self.off + self.length - 1) // CHUNK}, "
                    f"data seed {self.data})")
        if k == "read":
            return f"read set{self.s}.{self.side} [{self.off}, +{self.length})"
        if k in ("copy", "group"):
            who = f"set{self.s}" if k == "copy" else "group"
            return (f"{'Copy' if self.full else 'Update'} {who} -> {self.side}"
                    f"{', wait' if self.wait else ''}")
        if k == "abort":
            return f"Copy set{self.s} -> {self.side}, Abort, wait, Copy -> {self.side}, wait"
        if k == "restart":
            return f"restart ptcopyd ({self.mode}{', jobs waited' if self.wait else ''})"
        return k


def config_for(seed: int, size: int = 4 * MIB) -> Config:
    """Three sets (dependent, independent, compact dependent with an overflow volume) on one to
    three masters, and maybe a group of two of them: drawn from the seed."""
    rng = random.Random(f"config-{seed}")
    kinds = [("dependent", False), ("independent", False), ("dependent", True)]
    rng.shuffle(kinds)
    specs: list[SetSpec] = []
    nmasters = 0
    for i, (kind, compact) in enumerate(kinds):
        if i and rng.random() < 0.3:
            m = rng.randrange(nmasters)        # several shadows on one master
        else:
            m = nmasters
            nmasters += 1
        specs.append(SetSpec(f"s{i}", kind, m, compact))
    group: tuple[int, ...] = ()
    if rng.random() < 0.75:
        group = tuple(sorted(rng.sample(range(len(specs)), 2)))
    for i, spec in enumerate(specs):
        if rng.random() < 0.5:
            specs[i] = dataclasses.replace(spec, delay=rng.choice([5, 10, 20]),
                                           units=rng.choice([4, 8, 16]))
    return Config(seed, size, tuple(specs), group)


def generate(cfg: Config, n: int, *, restarts: bool = True) -> list[Op]:
    rng = random.Random(f"ops-{cfg.seed}")
    size = cfg.size
    nsets = len(cfg.sets)
    kinds = ["write", "read", "copy", "wait", "check", "abort"]
    weights = [36, 14, 22, 9, 4, 3]
    if cfg.group:
        kinds.append("group")
        weights.append(6)
    if restarts:
        kinds.append("restart")
        weights.append(2)
    ops: list[Op] = []
    s = 0
    for _ in range(n):
        k = rng.choices(kinds, weights)[0]
        # often the same set again: faults show in short stories on one set (write, restore,
        # write, restore) more than in ops spread thinly over every set
        if rng.random() < 0.5:
            s = rng.randrange(nsets)
        if k == "write":
            side = rng.choice([MASTER, SHADOW])
            if rng.random() < 0.6:
                unit = CHUNK if rng.random() < 0.5 else 4096
                off = rng.randrange(size // unit) * unit
                length = min(rng.randint(1, 32) * 4096, size - off)
                ops.append(Op("write", s, side, off, length, "direct", rng.getrandbits(32)))
            else:
                off = rng.randrange(size)
                length = min(rng.randint(1, 96 * KIB), size - off)
                ops.append(Op("write", s, side, off, length, "buffered", rng.getrandbits(32)))
        elif k == "read":
            off = rng.randrange(size // 4096) * 4096
            ops.append(Op("read", s, rng.choice([MASTER, SHADOW]), off,
                          min(rng.randint(1, 64) * 4096, size - off)))
        elif k in ("copy", "group"):
            ops.append(Op(k, s, SHADOW if rng.random() < 0.6 else MASTER,
                          full=rng.random() < 0.3, wait=rng.random() < 0.5))
        elif k == "abort":
            ops.append(Op("abort", s, rng.choice([SHADOW, MASTER])))
        elif k == "restart":
            ops.append(Op("restart", mode=rng.choice(["term", "kill"]),
                          wait=rng.random() < 0.5))
        else:
            ops.append(Op(k))
    return ops


# ---- the model -------------------------------------------------------------------------------


@dataclass
class Model:
    cfg: Config
    masters: dict[int, bytearray] = field(default_factory=dict)
    shadows: dict[int, bytearray] = field(default_factory=dict)

    def side(self, s: int, side: str) -> bytearray:
        return self.masters[self.cfg.sets[s].master] if side == MASTER else self.shadows[s]

    def write(self, s: int, side: str, off: int, data: bytes) -> None:
        self.side(s, side)[off:off + len(data)] = data

    def copy(self, sets: list[int], direction: str) -> None:
        """Every member at one instant: read every source first, then write the targets."""
        if direction == SHADOW:
            src = {s: bytes(self.masters[self.cfg.sets[s].master]) for s in sets}
            for s in sets:
                self.shadows[s][:] = src[s]
        else:
            src = {s: bytes(self.shadows[s]) for s in sets}
            for s in sets:
                self.masters[self.cfg.sets[s].master][:] = src[s]


# ---- the driver ------------------------------------------------------------------------------


@dataclass
class Pending:
    job: str
    sets: list[int]
    direction: str


def start_daemon(d: Ptcopyd, timeout: float = 120) -> None:
    """Ptcopyd.start, patient with a slow machine: under TCG with a loaded host, busctl's own
    5 s limit in the ownership check can pass before the bus answers."""
    try:
        d.start(timeout=timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    assert d.proc is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if d.proc.poll() is not None:
            raise AssertionError(f"ptcopyd exited with {d.proc.returncode} at start:\n"
                                 f"{d.log_tail()}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            if d.bus.owner_pid() == d.proc.pid:
                return
        time.sleep(0.2)
    raise AssertionError(f"ptcopyd did not take the bus name in {timeout}s:\n{d.log_tail()}")


def _buffered_write(dev: str, off: int, data: bytes) -> None:
    fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    try:
        done = 0
        while done < len(data):
            n = os.pwrite(fd, data[done:], off + done)
            assert n > 0, f"short buffered write to {dev}"
            done += n
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_direct(dev: str, off: int, data: bytes) -> None:
    write_dev(dev, off, data)


def _read(dev: str, off: int, length: int) -> bytes:
    """O_DIRECT read of any range (widened to 4 KiB boundaries)."""
    lo = off // 4096 * 4096
    hi = -(-(off + length) // 4096) * 4096
    got = read_dev(dev, lo, hi - lo)
    return got[off - lo:off - lo + length]


def _first_diff(a: bytes, b_: bytes) -> int:
    n = min(len(a), len(b_))
    for i in range(0, n, 4096):
        if a[i:i + 4096] != b_[i:i + 4096]:
            return i + next(j for j in range(min(4096, n - i)) if a[i + j] != b_[i + j])
    return n


class Driver:
    """One run: a daemon, a client, volumes for ``cfg``, and the model; :meth:`run` plays ops."""

    def __init__(self, cfg: Config, daemon: Ptcopyd, client: Client, path: str) -> None:
        self.cfg = cfg
        self.d = daemon
        self.c = client
        self.path = path               # "userspace" or "kernel"
        self.model = Model(cfg)
        self.set_paths: list[str] = []
        self.devs: list[dict[str, str]] = []
        self.group = ""
        self.pending: list[Pending] = []
        self.index = -1
        self.initial: dict[tuple[int, str], bytes] = {}   # each side at setup, for diagnosis
        self.done: Counter[str] = Counter()   # what the run did, so a run that did little shows

    # -- helpers --

    def fail(self, text: str) -> Divergence:
        return Divergence(self.index, text)

    def _sizes(self, spec: SetSpec) -> tuple[int, int]:
        """(shadow, bitmap) volume sizes for this path."""
        size = self.cfg.size
        kind = Kind.DEPENDENT if spec.kind == "dependent" else Kind.INDEPENDENT
        if spec.compact:
            shadow = size // 4
        elif self.path == "kernel" and kind is Kind.DEPENDENT:
            from ptcopy.kernelpath import KernelPath
            shadow = KernelPath.store_needed(size, CHUNK)
        else:
            shadow = size
        if self.path == "kernel":
            from ptcopy.kernelpath import KernelPath
            return shadow, KernelPath.layout_for(size, shadow, CHUNK, kind).total
        return shadow, bitmap_size(size, shadow, CHUNK, kind)

    async def refresh_devices(self) -> None:
        self.devs = []
        for sp in self.set_paths:
            p = await self.c.props(sp, ISET)
            self.devs.append({MASTER: p["MasterDevice"], SHADOW: p["ShadowDevice"]})

    def pending_for(self, s: int) -> list[Pending]:
        return [p for p in self.pending if s in p.sets]

    async def wait_job(self, p: Pending) -> None:
        props = await self.c.wait_job(p.job, timeout=240)
        if not props["Success"]:
            raise self.fail(f"job {p.job} ({p.direction}, sets {p.sets}) failed: "
                            f"{props.get('Message')}\n{self.d.log_tail(30)}")
        self.pending.remove(p)

    async def wait_all(self) -> None:
        for p in list(self.pending):
            await self.wait_job(p)

    async def wait_sets(self, sets: list[int]) -> None:
        for p in list(self.pending):
            if set(p.sets) & set(sets):
                await self.wait_job(p)

    async def before_io(self, s: int, side: str, writing: bool) -> None:
        """The kernel path's promises: a copy's target is read-only while it runs; a dependent
        shadow is gone while it merges into the master. Wait for such a copy first."""
        if self.path != "kernel":
            return
        for p in self.pending_for(s):
            merging = self.cfg.sets[s].kind == "dependent" and p.direction == MASTER
            if (writing and side == p.direction) or (merging and side == SHADOW):
                await self.wait_job(p)

    async def compare(self, s: int, side: str, off: int = 0, length: int | None = None) -> None:
        length = self.cfg.size - off if length is None else length
        dev = self.devs[s][side]
        try:
            got = _read(dev, off, length)
        except OSError as e:
            raise self.fail(f"reading set{s}.{side} ({dev}) [{off}, +{length}): {e}") from None
        want = bytes(self.model.side(s, side)[off:off + length])
        if got != want:
            raise self.fail(self._explain(s, side, dev, off, got, want))

    def _explain(self, s: int, side: str, dev: str, off: int, got: bytes, want: bytes) -> str:
        """Where the device differs, and what it holds there instead: the other side's bytes,
        the volume's content at setup, or something else (and whether a second read agrees)."""
        at = off + _first_diff(got, want)
        blocks = [off + i for i in range(0, len(got), 512) if got[i:i + 512] != want[i:i + 512]]
        runs: list[list[int]] = []
        for blk in blocks:
            if runs and runs[-1][1] == blk:
                runs[-1][1] = blk + 512
            else:
                runs.append([blk, blk + 512])
        other = bytes(self.model.side(s, SHADOW if side == MASTER else MASTER))
        first = self.initial.get((s, side), b"")
        what = []
        for lo, hi in runs[:6]:
            g = got[lo - off:hi - off]
            src = ("the other side's bytes" if g == other[lo:hi] else
                   "the bytes at setup" if first and g == first[lo:hi] else
                   "zeros" if g == bytes(len(g)) else "other bytes")
            what.append(f"[{lo}, {hi}) chunks {lo // CHUNK}..{(hi - 1) // CHUNK}: {src}")
        try:
            again = "a second read agrees" if _read(dev, off, len(got)) == got else \
                "a second read differs"
        except OSError as e:
            again = f"a second read fails: {e}"
        return (f"set{s}.{side} ({dev}) differs from the model at byte {at} (chunk "
                f"{at // CHUNK}), {len(blocks) * 512} bytes in {len(runs)} run(s): "
                f"{'; '.join(what)}{' ...' if len(runs) > 6 else ''}; {again}")

    async def check_all(self) -> None:
        for s in range(len(self.cfg.sets)):
            for side in (MASTER, SHADOW):
                await self.before_io(s, side, False)
                await self.compare(s, side)

    # -- setup --

    async def setup(self) -> None:
        rng = random.Random(f"data-{self.cfg.seed}")
        size = self.cfg.size
        master_files: dict[int, str] = {}
        for m in self.cfg.masters():
            data = rng.randbytes(size)
            master_files[m] = self.d.volume(size, f"master{m}.img", data)
            self.model.masters[m] = bytearray(data)
        ov = ""
        if any(s.compact for s in self.cfg.sets):
            ov_file = self.d.volume(2 * size, "overflow.img")
            (ov,) = await self.c.ok(ROOT, MANAGER, "CreateOverflow", "sa{sv}",
                                    [ov_file, {"chunk_size": u(CHUNK)}])
        for i, spec in enumerate(self.cfg.sets):
            shadow, bitmap = self._sizes(spec)
            sfile = self.d.volume(shadow, f"shadow{i}.img")
            bfile = self.d.volume(bitmap, f"bitmap{i}.img")
            opts: dict[str, Any] = {"chunk_size": u(CHUNK)}
            if spec.compact:
                opts["overflow"] = o(ov)
            if spec.delay:
                opts["copy_delay"] = u(spec.delay)
                opts["copy_units"] = u(spec.units)
            sp, job = await self.c.ok(ROOT, MANAGER, "CreateSet", "sssssa{sv}",
                                      [spec.name, spec.kind, master_files[spec.master], sfile,
                                       bfile, opts], timeout=CALL_TIMEOUT)
            self.set_paths.append(sp)
            self.model.shadows[i] = bytearray(self.model.masters[spec.master])
            if job != "/":
                self.pending.append(Pending(job, [i], SHADOW))
        if self.cfg.group:
            self.group = await self.c.create_group(
                "g", [self.set_paths[i] for i in self.cfg.group])
        await self.refresh_devices()
        await self.wait_all()
        for i in range(len(self.cfg.sets)):
            for side in (MASTER, SHADOW):
                self.initial[(i, side)] = bytes(self.model.side(i, side))
        await self.check_all()

    # -- operations --

    def _allowed(self, sets: list[int], direction: str, group: bool) -> dict[str, str]:
        """Refusal names the contract allows for this copy now, with why."""
        ok: dict[str, str] = {}
        if direction == MASTER and any(self.cfg.shared(s) for s in sets):
            ok[ERR + "Dependency"] = "a master with several shadows"
        if (direction == MASTER and group and self.path == "kernel"
                and any(self.cfg.sets[s].kind == "dependent" for s in sets)):
            ok[ERR + "WrongType"] = "the kernel path merges dependent shadows one at a time"
        if any(self.pending_for(s) for s in sets):
            ok[ERR + "Busy"] = "a copy of ours may still run"
        return ok

    async def start_copy(self, sets: list[int], direction: str, full: bool, group: bool,
                         ) -> str | None:
        """Copy/Update one set or the group; the job, or None after an allowed refusal (then
        the sets are checked unchanged at once)."""
        for s in sets:   # a copy into a device needs it closed; ours are; the kernel path
            await self.before_io(s, SHADOW, False)   # needs the merged shadow back
        opts: dict[str, Variant] = {"confirm": b(True)} if direction == MASTER else {}
        obj = self.group if group else self.set_paths[sets[0]]
        iface = IGROUP if group else ISET
        try:
            (job,) = await self.c.ok(obj, iface, "Copy" if full else "Update", "sa{sv}",
                                     [direction, opts], timeout=CALL_TIMEOUT)
        except CallFailed as e:
            allowed = self._allowed(sets, direction, group)
            if e.name not in allowed:
                raise self.fail(f"{'Copy' if full else 'Update'} -> {direction} of "
                                f"{'the group' if group else f'set{sets[0]}'} refused: "
                                f"{e.name}: {e.text}") from None
            self.done[f"refused {e.name.rsplit('.', 1)[-1]}"] += 1
            for s in sets:
                for side in (MASTER, SHADOW):
                    await self.before_io(s, side, False)
                    await self.compare(s, side)
            return None
        self.model.copy(sets, direction)
        self.pending.append(Pending(job, list(sets), direction))
        kinds = "+".join(sorted({self.cfg.sets[s].kind for s in sets}))
        self.done[f"{'group ' if group else ''}{kinds} -> {direction}"] += 1
        return str(job)

    async def op_write(self, op: Op) -> None:
        await self.before_io(op.s, op.side, True)
        data = random.Random(op.data).randbytes(op.length)
        dev = self.devs[op.s][op.side]
        try:
            if op.mode == "direct":
                _write_direct(dev, op.off, data)
            else:
                _buffered_write(dev, op.off, data)
        except (OSError, AssertionError) as e:
            raise self.fail(f"{op} on {dev} failed: {e}") from None
        self.model.write(op.s, op.side, op.off, data)
        self.done[f"write {op.mode}"] += 1

    async def op_abort(self, op: Op) -> None:
        await self.wait_sets([op.s])
        job = await self.start_copy([op.s], op.side, True, False)
        if job is None:
            return
        with contextlib.suppress(CallFailed):   # it may have ended already, or be a merge
            await self.c.set_call(self.set_paths[op.s], "Abort")
        p = self.pending[-1]
        await self.c.wait_job(job, timeout=240)   # an aborted job may end unsuccessfully
        self.pending.remove(p)
        job = await self.start_copy([op.s], op.side, True, False)
        assert job is not None, "the copy after an abort was refused with an allowed name"
        await self.wait_job(self.pending[-1])

    async def op_restart(self, op: Op) -> None:
        if op.wait:
            await self.wait_all()
        # jobs that ended survive any stop; the targets of those still running are unknown
        # until an update in the same direction after the restart
        redo: list[tuple[int, str]] = []
        for p in self.pending:
            jp = await self.c.props(p.job, IJOB)
            if jp["Done"]:
                if not jp["Success"]:
                    raise self.fail(f"job {p.job} failed: {jp.get('Message')}")
                continue
            redo += [(s, p.direction) for s in p.sets]
        self.pending.clear()
        if op.mode == "term":
            rc = self.d.stop(timeout=120)
            if rc != 0:
                raise self.fail(f"ptcopyd exited with {rc} on SIGTERM:\n{self.d.log_tail(30)}")
        else:
            self.d.kill()
        start_daemon(self.d)
        await self.refresh_devices()
        for s, direction in redo:
            await self.redo(s, direction)
        await self.check_all()

    async def redo(self, s: int, direction: str) -> None:
        """Update one set after a restart interrupted its copy; a resumed copy may still run."""
        opts: dict[str, Variant] = {"confirm": b(True)} if direction == MASTER else {}
        end = time.monotonic() + 240
        while True:
            try:
                (job,) = await self.c.ok(self.set_paths[s], ISET, "Update", "sa{sv}",
                                         [direction, opts], timeout=CALL_TIMEOUT)
                break
            except CallFailed as e:
                if e.name != ERR + "Busy" or time.monotonic() > end:
                    raise self.fail(f"Update set{s} -> {direction} after the restart refused: "
                                    f"{e.name}: {e.text}") from None
                await asyncio.sleep(0.2)
        self.model.copy([s], direction)
        p = Pending(job, [s], direction)
        self.pending.append(p)
        await self.wait_job(p)

    async def play(self, i: int, op: Op) -> None:
        self.index = i
        if op.kind == "write":
            await self.op_write(op)
        elif op.kind == "read":
            await self.before_io(op.s, op.side, False)
            await self.compare(op.s, op.side, op.off, op.length)
        elif op.kind == "copy":
            job = await self.start_copy([op.s], op.side, op.full, False)
            if job is not None and op.wait:
                await self.wait_job(self.pending[-1])
        elif op.kind == "group":
            job = await self.start_copy(list(self.cfg.group), op.side, op.full, True)
            if job is not None and op.wait:
                await self.wait_job(self.pending[-1])
        elif op.kind == "wait":
            await self.wait_all()
        elif op.kind == "check":
            await self.check_all()
        elif op.kind == "abort":
            await self.op_abort(op)
        elif op.kind == "restart":
            await self.op_restart(op)
            self.done[f"restart {op.mode}"] += 1
        else:
            raise ValueError(f"unknown op {op.kind}")

    async def run(self, ops: list[Op]) -> None:
        """Set up, play every op, then wait for every job and check every side (reported as
        op ``len(ops)``): a shortened list still ends with the check that finds a fault."""
        await self.setup()
        for i, op in enumerate([*ops, Op("wait"), Op("check")]):
            try:
                await self.play(min(i, len(ops)), op)
            except Divergence:
                raise
            except (AssertionError, CallFailed, OSError) as e:
                raise Divergence(min(i, len(ops)), f"{op}: {type(e).__name__}: {e}") from e


# ---- running, shrinking, reporting -------------------------------------------------------------


# A run: (cfg, ops) -> None, raising Divergence. The caller provides a fresh daemon each time.
Runner = Callable[[Config, list[Op]], Awaitable[None]]


async def first_failure(run: Runner, cfg: Config, ops: list[Op]) -> Divergence | None:
    try:
        await run(cfg, ops)
    except Divergence as e:
        return e
    return None


async def shrink(run: Runner, cfg: Config, ops: list[Op], failure: Divergence,
                 deadline: float) -> tuple[list[Op], Divergence]:
    """A shorter op list that still fails (delta debugging): the prefix up to the failing op,
    then runs of ops dropped, halves first, down to single ops, until ``deadline``
    (time.monotonic())."""
    if failure.index < 0:
        return [], failure
    best = ops[:failure.index + 1]
    parts = 2
    while len(best) > 1 and time.monotonic() < deadline:
        size = max(1, len(best) // parts)
        dropped = False
        for start in range(0, len(best), size):
            if time.monotonic() >= deadline:
                break
            trial = best[:start] + best[start + size:]
            got = await first_failure(run, cfg, trial)
            # a failure while setting up is another fault (the ops never ran): not this one
            if got is not None and got.index >= 0:
                best = trial[:got.index + 1] if got.index < len(trial) else trial
                failure = got
                dropped = True
                break
        if dropped:
            parts = max(parts - 1, 2)
        elif size == 1:
            break
        else:
            parts = min(parts * 2, len(best))
    return best, failure


def report(cfg: Config, ops: list[Op], failure: Divergence, path: str,
           original: tuple[int, int] | None = None) -> str:
    lines = [f"{path} path diverged from the model: {cfg.describe()}"]
    if original is not None:
        lines.append(f"(shrunk from op {original[0]} of a {original[1]}-op run)")
    where = "the final check" if failure.index >= len(ops) else f"op {failure.index}"
    lines.append(f"failing at {where}: {failure.text}")
    lines.append("sequence:")
    lines += [f"  {i:3d}. {op}" for i, op in enumerate(ops)]
    lines.append(f"  {len(ops)}. (wait for every job, check every side)")
    lines.append("replay: PTCOPY_MODEL_REPLAY='" + json.dumps(
        {"seed": cfg.seed, "size": cfg.size, "ops": [astuple(op) for op in ops]},
        separators=(",", ":")) + "'")
    return "\n".join(lines)


def replay_request() -> tuple[Config, list[Op]] | None:
    """PTCOPY_MODEL_REPLAY (the JSON a failure prints): the one run to play instead."""
    text = os.environ.get("PTCOPY_MODEL_REPLAY")
    if not text:
        return None
    data = json.loads(text)
    cfg = config_for(int(data["seed"]), int(data.get("size", 4 * MIB)))
    return cfg, [Op(*op) for op in data["ops"]]


def issue18() -> tuple[Config, list[Op]]:
    """The sequence of issue 18: restore, write, restore again; the second restore must undo
    the write (the kernel path once merged nothing the second time)."""
    cfg = Config(18, 4 * MIB, (SetSpec("s0", "dependent", 0),), ())
    ops = [Op("write", 0, MASTER, 116 * CHUNK, CHUNK, "direct", 1),
           Op("copy", 0, MASTER, wait=True),
           Op("read", 0, MASTER, 116 * CHUNK, CHUNK),
           Op("write", 0, MASTER, 100 * CHUNK, CHUNK, "direct", 2),
           Op("copy", 0, MASTER, wait=True),
           Op("read", 0, MASTER, 100 * CHUNK, CHUNK)]
    return cfg, ops


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, "") or default)


def seeds(default: list[int]) -> list[int]:
    """PTCOPY_MODEL_SEEDS: a number (that many seeds from 1) or a comma list."""
    text = os.environ.get("PTCOPY_MODEL_SEEDS", "")
    if not text:
        return default
    if "," in text or "-" in text:
        out: list[int] = []
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
        return out
    return list(range(1, int(text) + 1))
