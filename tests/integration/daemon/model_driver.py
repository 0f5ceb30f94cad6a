"""The daemon model test's driver: plays operations against ptcopyd over D-Bus and on the devices
it serves, and checks every side of every set against the model (model_daemon.py says how)."""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import random
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from dbus_fast import Variant

from ptcopy.engine import Kind, bitmap_size
from tests.helpers.blockio import read_dev, write_dev
from tests.helpers.client import CallFailed, Client, b, o, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import ERR, IGROUP, IJOB, ISCHEDULE, ISET, MANAGER, ROOT
from tests.integration.daemon.model_ops import (
    CALL_TIMEOUT,
    CHUNK,
    MASTER,
    SHADOW,
    Config,
    Divergence,
    Model,
    Op,
    SetSpec,
)

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
        self.renames = 0
        self.schedule = ""                     # the rotation's Schedule ('' without one)
        self.stamps: dict[int, int] = {}       # set -> its last run of the rotation (1, 2, ...)

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
            from ptcopy.datapath.kernel import KernelPath
            shadow = KernelPath.store_needed(size, CHUNK)
        else:
            shadow = size
        if self.path == "kernel":
            from ptcopy.datapath.kernel import KernelPath
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
        if writing and side == MASTER:   # a restore from an independent shadow makes every
            master = self.cfg.sets[s].master   # master device of that master read-only
            for p in list(self.pending):
                if p in self.pending and p.direction == MASTER and any(
                        self.cfg.sets[x].master == master
                        and self.cfg.sets[x].kind == "independent" for x in p.sets):
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
        if self.cfg.rotation():   # paused: it runs only when asked (RunNow)
            (self.schedule,) = await self.c.ok(
                ROOT, MANAGER, "CreateSchedule", "ssaoa{sv}",
                ["rot", "every 1000d", [self.set_paths[i] for i in self.cfg.rotation()], {}])
            await self.c.ok(self.schedule, ISCHEDULE, "Pause", "a{sv}", [{}])
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
        kinds = {self.cfg.sets[s].kind for s in sets}
        masters = [self.cfg.sets[s].master for s in sets]
        if direction == MASTER and len(set(masters)) < len(masters):
            ok[ERR + "InvalidArgument"] = "a group restores a master from one shadow only"
        if direction == MASTER and group and self.path == "kernel" and len(kinds) > 1:
            ok[ERR + "WrongType"] = "the kernel path cannot mix merges and copies in a group"
        restoring = {self.cfg.sets[x].master for p in self.pending if p.direction == MASTER
                     for x in p.sets}
        if any(self.pending_for(s) for s in sets) or restoring & set(masters):
            ok[ERR + "Busy"] = "a copy of ours, or a restore of the master, may still run"
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

    async def op_rotate(self, op: Op) -> None:
        """Schedule.RunNow: the run updates the set of the rotation whose last run was the
        longest ago (never: first, in order), and its shadow then holds the master as of the
        call; refused only while a copy of ours on those sets, or a restore of their master,
        may run."""
        rot = list(self.cfg.rotation())
        for s in rot:
            await self.before_io(s, SHADOW, False)
        want = min(rot, key=lambda s: (self.stamps.get(s, 0), rot.index(s)))
        try:
            (job,) = await self.c.ok(self.schedule, ISCHEDULE, "RunNow", "a{sv}", [{}],
                                     timeout=CALL_TIMEOUT)
        except CallFailed as e:
            if e.name not in self._allowed(rot, SHADOW, False):
                raise self.fail(f"RunNow refused: {e.name}: {e.text}") from None
            self.done[f"rotate refused {e.name.rsplit('.', 1)[-1]}"] += 1
            for s in rot:
                await self.before_io(s, SHADOW, False)
                await self.compare(s, SHADOW)
            return
        got = await self.c.get(job, IJOB, "Objects")
        if got != [self.set_paths[want]]:
            names = {p: f"set{i}" for i, p in enumerate(self.set_paths)}
            raise self.fail(f"RunNow ran on {[names.get(p, p) for p in got]}; the rotation's "
                            f"least recent is set{want} (runs so far: {self.stamps})")
        self.stamps[want] = max(self.stamps.values(), default=0) + 1
        self.model.copy([want], SHADOW)
        self.pending.append(Pending(str(job), [want], SHADOW))
        self.done["rotate"] += 1
        if op.wait:
            await self.wait_job(self.pending[-1])

    async def op_rename(self, op: Op) -> None:
        """Rename a set while it serves: its name changes, and a descriptor of its master
        device opened before the rename reads what the model holds (the devices keep serving:
        the same loop devices, or the same device-mapper devices under new names)."""
        s = op.s
        await self.before_io(s, MASTER, False)
        fd = os.open(self.devs[s][MASTER], os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        try:
            self.renames += 1
            new = f"{self.cfg.sets[s].name}n{self.renames}"
            try:
                await self.c.set_call(self.set_paths[s], "Rename", "sa{sv}", [new, {}])
            except CallFailed as e:
                if e.name != ERR + "Busy" or not self.pending_for(s):
                    raise self.fail(f"Rename of set{s} refused: {e.name}: {e.text}") from None
                self.done["rename refused Busy"] += 1
                return
            name = await self.c.get(self.set_paths[s], ISET, "Name")
            if name != new:
                raise self.fail(f"set{s} is named {name!r} after Rename to {new!r}")
            buf = mmap.mmap(-1, 4096)
            try:
                if os.preadv(fd, [buf], op.off) != 4096:
                    raise self.fail(f"short read of set{s}'s master after the rename")
                got = bytes(buf)
            finally:
                buf.close()
        finally:
            os.close(fd)
        want = bytes(self.model.side(s, MASTER)[op.off:op.off + 4096])
        if got != want:
            raise self.fail(f"a descriptor of set{s}'s master opened before the rename reads "
                            f"other bytes at {op.off} after it")
        await self.refresh_devices()
        for side in (MASTER, SHADOW):
            await self.before_io(s, side, False)
            await self.compare(s, side)
        self.done["rename"] += 1

    async def op_hold(self, op: Op) -> None:
        """A group hold freezes every member's source: a write to one waits for the release,
        and a committed release takes the point in time of the hold (before that write)."""
        sets = list(self.cfg.group)
        src = MASTER if op.side == SHADOW else SHADOW
        for s in sets:
            await self.before_io(s, SHADOW, False)
        await self.before_io(op.s, src, True)
        opts: dict[str, Variant] = {"confirm": b(True)} if op.side == MASTER else {}
        try:
            (token,) = await self.c.ok(self.group, IGROUP, "Hold", "ssda{sv}",
                                       ["copy" if op.full else "update", op.side, 20.0, opts],
                                       timeout=CALL_TIMEOUT)
        except CallFailed as e:
            allowed = self._allowed(sets, op.side, True)
            if self.path == "kernel":
                allowed[ERR + "WrongType"] = "the kernel path cannot hold a group"
            if e.name not in allowed:
                raise self.fail(f"group Hold -> {op.side} refused: {e.name}: {e.text}") from None
            self.done[f"hold refused {e.name.rsplit('.', 1)[-1]}"] += 1
            return
        data = random.Random(op.data).randbytes(op.length)
        dev = self.devs[op.s][src]
        write = asyncio.ensure_future(asyncio.to_thread(_write_direct, dev, op.off, data))
        await asyncio.sleep(0.3)
        early = write.done()
        job, _frozen = await self.c.ok(self.group, IGROUP, "Release", "sba{sv}",
                                       [token, op.wait, {}], timeout=CALL_TIMEOUT)
        try:
            await write
        except OSError as e:
            raise self.fail(f"the write to set{op.s}.{src} during the hold failed: {e}") from None
        if early:
            raise self.fail(f"a write to set{op.s}.{src} completed while the group was held")
        if op.wait:
            self.model.copy(sets, op.side)   # the point in time is the hold's instant
            if job != "/":
                self.pending.append(Pending(str(job), sets, op.side))
        self.model.write(op.s, src, op.off, data)
        self.done[f"hold {'commit' if op.wait else 'no commit'} -> {op.side}"] += 1

    async def op_suspend(self, op: Op) -> None:
        """A copy suspended mid-way keeps its point in time: the target reads as the model
        while it waits (and across a restart: on the kernel path a restart takes a new point
        in time, as documented), writes to the source do not reach it, and Resume ends it."""
        s = op.s
        await self.wait_sets([s])
        sp = self.set_paths[s]
        throttle = [await self.c.get(sp, ISET, "CopyDelay"),
                    await self.c.get(sp, ISET, "CopyUnits")]
        # slow enough (128 chunks in about 0.6 s) for the Suspend to find it running
        await self.c.set_call(sp, "SetCopyParameters", "uua{sv}", [20, 4, {}])
        try:
            await self._suspend_resume(op)
        finally:
            await self.c.set_call(sp, "SetCopyParameters", "uua{sv}", [*throttle, {}])

    async def _suspend_resume(self, op: Op) -> None:
        s = op.s
        job = await self.start_copy([s], op.side, op.full, False)
        if job is None:
            return
        p = self.pending[-1]
        try:
            await self.c.set_call(self.set_paths[s], "Suspend")
        except CallFailed as e:   # it ended first (or, kernel path, merges in the kernel)
            if e.name not in (ERR + "NoCopy", ERR + "WrongType"):
                raise self.fail(f"Suspend of set{s} refused: {e.name}: {e.text}") from None
            self.done[f"suspend refused {e.name.rsplit('.', 1)[-1]}"] += 1
            await self.wait_job(p)
            return
        jp = await self.c.wait_job(job, timeout=240)
        self.pending.remove(p)
        if jp["Success"] or not str(jp.get("Message", "")).startswith("suspended"):
            raise self.fail(f"the job of the suspended copy of set{s} ended {jp}")
        await self.refresh_devices()
        await self.compare(s, op.side)
        if op.data:
            await self.op_write(Op("write", s, MASTER, op.off, op.length, "direct", op.data))
        if op.mode:
            await self.wait_all()
            if op.mode == "term":
                rc = self.d.stop(timeout=120)
                if rc != 0:
                    raise self.fail(f"ptcopyd exited with {rc} on SIGTERM:\n"
                                    f"{self.d.log_tail(30)}")
            else:
                self.d.kill()
            start_daemon(self.d)
            if self.path == "kernel":   # the copy starts again from a new frozen view
                self.model.copy([s], op.side)
            await self.refresh_devices()
            await self.check_all()
        flags = await self.c.get(self.set_paths[s], ISET, "Flags")
        if "suspended" not in flags:
            raise self.fail(f"set{s} is no longer suspended: flags {flags}")
        (job2,) = await self.c.set_call(self.set_paths[s], "Resume")
        p = Pending(str(job2), [s], op.side)
        self.pending.append(p)
        await self.wait_job(p)
        await self.refresh_devices()
        for side in (MASTER, SHADOW):
            await self.compare(s, side)
        self.done[f"suspend{f' + restart {op.mode}' if op.mode else ''}"] += 1

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
        elif op.kind == "suspend":
            await self.op_suspend(op)
        elif op.kind == "hold":
            await self.op_hold(op)
        elif op.kind == "rename":
            await self.op_rename(op)
        elif op.kind == "rotate":
            await self.op_rotate(op)
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
