#!/usr/bin/env python3
"""Reliability figures for docs/RELIABILITY.md: run the torture, count, report.

    .venv/bin/python tests/reliability/reliability.py --quick           # CI (~3 min)
    .venv/bin/python tests/reliability/reliability.py --json out.json   # full mode (~1 h)
    .venv/bin/python tests/reliability/reliability.py --only sigkill --sigkill-runs 20
    .venv/bin/python tests/reliability/reliability.py --render out.json [more.json]  # table

Figures (``--only`` takes a comma-separated subset of these names):

sigkill  ptcopyd (``--data-path userspace``) serves a dependent and an independent set on file
         volumes; a writer process writes random data to both served masters (O_DIRECT, fsync
         after every write, logging what was acknowledged), copies and updates are started
         under that load, and ptcopyd gets SIGKILL at a random moment. It restarts on the same
         state, resumed copies end, an update to the shadow runs, and then each shadow must
         equal its master byte for byte and each master must hold every acknowledged write.
vm       power cuts of the VM tier's kernel data path (tests/vm/poweroff.py, the scenario of
         tests/vm/test_kernel_poweroff.py): qemu killed under write load, reboot, reassembly,
         update, no lost chunk. Quick mode skips it: CI already runs its six scenarios.
faults   the engine's fault hooks (Set.inject_error) on the shadow, bitmap and overflow volume
         of sets served over FUSE, with EIO and ENOSPC: every master write and fsync through
         the served file succeeds and lands, the set's flags name the side that went offline
         (never the master), and reset + update make the shadow equal the master again.
         ptcopyd has no fault hook, so this runs the engine and FUSE server in this process.
fuzz     random calls to every method of the contract and of the standard interfaces the
         daemon serves, with random, malformed and wrongly typed arguments: ptcopyd never
         crashes or hangs, and every refusal is a named org.ptcopy.Imaging1.Error.* or
         org.freedesktop.DBus.Error.InvalidArgs (calls naming no method of the contract may
         also get the standard UnknownObject/UnknownMethod/UnknownInterface/UnknownProperty/
         PropertyReadOnly answers); anything else is listed as a failure.
load     many concurrent clients read properties, wait on jobs and run updates on many sets
         (while masters are written) for a fixed time: no error, every job ends, ptcopyd's
         RSS sampled every second (max and growth reported).

Prints a line per run or phase and a summary; ``--json`` writes every count. Exit status 1 when
any figure counted a failure. Needs root, /dev/fuse, loop devices and dbus-daemon (the VM figure
also needs the VM tier's kernel cache: scripts/setup.sh). Failures are appended, with how to
reproduce them, to ``--findings`` (default: none).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import inspect
import json
import math
import mmap
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
for _p in (REPO / "tests" / "daemon", REPO / "tests" / "vm"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from daemon_helpers import (  # noqa: E402
    CONTRACT,
    ERR,
    IFACE,
    IGROUP,
    IJOB,
    IOVERFLOW,
    ISET,
    MANAGER,
    MIB,
    OM,
    PROPS,
    ROOT,
    Client,
    PrivateBus,
    Ptcopyd,
    plain,
    read_dev,
    same_content,
    u,
)
from dbus_fast import Message, MessageType, Variant  # noqa: E402
from dbus_fast import introspection as intr  # noqa: E402

from ptcopy.engine import (  # noqa: E402
    Direction,
    Engine,
    Flag,
    Kind,
    PtcopyError,
    Server,
    Set,
    VolumeRole,
    bitmap_size,
)

FIGURES = ("sigkill", "vm", "faults", "fuzz", "load")
BLOCK = 4096
STD = "org.freedesktop.DBus.Error."


# ---- results -----------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    runs: int = 0                       # runs, cases or calls: what the figure counts
    failures: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: str = ""

    def fail(self, what: str) -> None:
        self.failures.append(what)
        print(f"  FAILURE [{self.name}]: {what}", flush=True)
        if FINDINGS is not None:
            with FINDINGS.open("a") as f:
                f.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, "
                        f"{self.name} (commit {commit()})\n\n{what}\n\nReproduce: "
                        f"`{REPRO.format(fig=self.name)}`\n")


FINDINGS: Path | None = None
REPRO = ""


def commit() -> str:
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() or "?"


def say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


# ---- the writer process (figure sigkill) -------------------------------------------------------


def block_data(seed: int, seq: int, length: int) -> bytes:
    return random.Random(seed * 1_000_003 + seq).randbytes(length)


def writer_main(log_path: str, seed: int, devs: list[str]) -> int:
    """Write random extents to ``devs`` with O_DIRECT, fsync after each; log 'A seq dev off len'
    before a write and 'K seq' once it and its fsync returned. Stops at the first error (the
    daemon was killed) or SIGTERM."""
    rng = random.Random(seed)
    fds = [os.open(d, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC) for d in devs]
    sizes = [os.lseek(fd, 0, os.SEEK_END) for fd in fds]
    buf = mmap.mmap(-1, 16 * BLOCK)
    with open(log_path, "a", buffering=1) as log:
        seq = 0
        while True:
            seq += 1
            i = rng.randrange(len(fds))
            n = rng.randint(1, 16)
            off = rng.randrange(sizes[i] // BLOCK - n + 1) * BLOCK
            data = block_data(seed, seq, n * BLOCK)
            buf[:len(data)] = data
            log.write(f"A {seq} {i} {off} {len(data)}\n")
            try:
                if os.pwritev(fds[i], [memoryview(buf)[:len(data)]], off) != len(data):
                    log.write(f"E {seq} short\n")
                    return 0
                os.fsync(fds[i])
            except OSError as e:
                log.write(f"E {seq} {e.errno}\n")
                return 0
            log.write(f"K {seq} {time.time():.3f}\n")


@dataclass
class Acked:
    """What the writer's log says each master must hold."""

    expect: list[dict[int, tuple[int, int]]]    # per device: block -> (seq, index in write)
    uncertain: list[set[int]]                   # blocks of the write in flight at the kill
    acked: int = 0
    attempted: int = 0
    last_ack: float = 0.0


def read_writer_log(path: Path, ndev: int) -> Acked:
    a = Acked([{} for _ in range(ndev)], [set() for _ in range(ndev)])
    pending: tuple[int, int, int, int] | None = None
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "A" and len(parts) == 5:
            pending = tuple(int(x) for x in parts[1:])   # type: ignore[assignment]
            a.attempted += 1
        elif parts[0] == "K" and pending is not None and int(parts[1]) == pending[0]:
            seq, dev, off, length = pending
            for k in range(length // BLOCK):
                a.expect[dev][off // BLOCK + k] = (seq, k)
                a.uncertain[dev].discard(off // BLOCK + k)
            a.acked += 1
            a.last_ack = float(parts[2]) if len(parts) > 2 else 0.0
            pending = None
    if pending is not None:     # in flight when the daemon died: either content is fine
        seq, dev, off, length = pending
        a.uncertain[dev].update(range(off // BLOCK, (off + length) // BLOCK))
    return a


def lost_writes(a: Acked, seed: int, dev_index: int, dev: str) -> list[int]:
    """Blocks of ``dev`` that do not hold their last acknowledged write."""
    lost = []
    for blk, (seq, k) in sorted(a.expect[dev_index].items()):
        if blk in a.uncertain[dev_index]:
            continue
        want = block_data(seed, seq, (k + 1) * BLOCK)[k * BLOCK:]
        if read_dev(dev, blk * BLOCK, BLOCK) != want:
            lost.append(blk)
    return lost


# ---- figure 1: SIGKILL under load --------------------------------------------------------------


async def job_of(c: Client, set_path: str) -> str:
    return str(await c.get(set_path, ISET, "Job"))


async def job_done(c: Client, job: str) -> bool:
    if job == "/":
        return True
    try:
        return bool(await c.get(job, IJOB, "Done"))
    except AssertionError:      # a job that is gone ended long ago
        return True


async def settle(c: Client, set_path: str, timeout: float = 120) -> dict[str, Any] | None:
    """Wait for the set's current job (if any); its properties, None when there was none."""
    job = await job_of(c, set_path)
    if job == "/" or await job_done(c, job):
        return None
    (done,) = await c.ok(job, IJOB, "Wait", "d", [float(timeout)], timeout=timeout + 10)
    if not done:
        raise AssertionError(f"job {job} of {set_path} did not end in {timeout} s")
    return await c.props(job, IJOB)


async def sigkill_run(bus: PrivateBus, base: Path, seed: int, size: int,
                      control: bool = False) -> dict[str, Any]:
    """One run; returns its facts, with 'problems' (empty: the run passed). ``control`` writes
    4 KiB of the independent master's volume behind the daemon's back before the check, which
    must then report a mismatch (the check is shown to fail when it should)."""
    rng = random.Random(seed)
    d = Ptcopyd(bus, base, [])
    facts: dict[str, Any] = {"seed": seed, "problems": []}
    problems: list[str] = facts["problems"]
    writer: subprocess.Popen[bytes] | None = None
    c: Client | None = None
    try:
        d.start()
        c = await Client.connect(bus.address)
        dep = d.set_volumes(size, kind="dependent", master_data=rng.randbytes(size))
        ind = d.set_volumes(size, kind="independent", master_data=rng.randbytes(size))
        # throttled copies (256 chunks of 32 KiB: up to ~5 s), so that kills land in them
        throttle = {"copy_delay": u(rng.choice([2, 5, 10, 20])),
                    "copy_units": u(rng.choice([1, 2, 4]))}
        sd, _ = await c.create_set("dep", "dependent", *dep, **throttle)
        si, _ = await c.create_set("ind", "independent", *ind, **throttle)
        sets = {"dep": sd, "ind": si}
        if rng.random() < 0.7:      # else the kill may land in the first full copy
            await settle(c, si)
        devs = [str(await c.get(sd, ISET, "MasterDevice")),
                str(await c.get(si, ISET, "MasterDevice"))]
        log = base / "writer.log"
        writer = subprocess.Popen([sys.executable, __file__, "--writer", str(log), str(seed),
                                   *devs], stdout=subprocess.DEVNULL,
                                  stderr=open(base / "writer.err", "wb"))  # noqa: SIM115
        started = time.monotonic()     # the countdown starts at the first acknowledged write
        while "\nK " not in "\n" + (log.read_text() if log.exists() else ""):
            if time.monotonic() - started > 20 or writer.poll() is not None:
                raise AssertionError("the writer acknowledged nothing in 20 s: "
                                     f"{(base / 'writer.err').read_text()[-2000:]}")
            await asyncio.sleep(0.02)
        kill_at = time.monotonic() + rng.uniform(0.0, 3.0)
        ops: Counter[str] = Counter()
        while time.monotonic() < kill_at:
            name = rng.choice(sorted(sets))
            op = rng.choice(["update", "update", "copy", "copy", "params", "wait"])
            path = sets[name]
            if op == "params":
                await c.call(path, ISET, "SetCopyParameters", "uua{sv}",
                             [rng.choice([0, 5, 10, 20]), rng.choice([1, 4, 64]), {}])
            elif op == "wait":
                job = await job_of(c, path)
                if job != "/":
                    await c.call(job, IJOB, "Wait", "d", [rng.uniform(0, 0.3)])
            else:
                r = await c.call(path, ISET, "Copy" if op == "copy" else "Update", "sa{sv}",
                                 ["shadow", {}])
                if r.message_type is MessageType.METHOD_RETURN:
                    ops[f"{name}-{op}"] += 1
                elif r.error_name != ERR + "Busy":
                    problems.append(f"{op} of {name} before the kill: {r.error_name} "
                                    f"{plain(r.body)}")
            await asyncio.sleep(rng.uniform(0, 0.15))
        facts["copying_at_kill"] = [n for n, p in sets.items()
                                    if "copying" in await c.get(p, ISET, "Flags")]
        facts["killed_at"] = time.time()
        d.kill()
        facts["ops"] = dict(ops)
        try:
            writer.wait(20)
        except subprocess.TimeoutExpired:
            writer.kill()
            writer.wait()
            facts["writer_killed"] = True
        writer = None
        d.start()
        for path in sets.values():      # resumed copies at full speed
            await c.ok(path, ISET, "SetCopyParameters", "uua{sv}", [0, 256, {}])
        for name, path in sets.items():     # resumed copies end first
            jp = await settle(c, path)
            if jp is not None and not jp["Success"]:
                problems.append(f"resumed job of {name} failed after the restart: "
                                f"{jp.get('Message')}")
            job = await c.update(path)
            jp = await c.wait_job(job, timeout=120)
            if not jp["Success"]:
                problems.append(f"update of {name} after the restart failed: {jp['Message']}")
        if control:     # behind the daemon's back: the check below must see it
            with open(ind[0], "r+b") as f:
                f.seek(size // 2)
                f.write(b"control" * 585 + b"c")
                os.fsync(f.fileno())
        acked = read_writer_log(log, 2)
        facts.update(acked=acked.acked, attempted=acked.attempted,
                     stalled=round(facts["killed_at"] - acked.last_ack, 2)
                     if acked.last_ack else None)
        for i, (name, path) in enumerate(sets.items()):
            p = await c.props(path, ISET)
            diff = await asyncio.to_thread(same_content, p["MasterDevice"], p["ShadowDevice"])
            if diff:
                problems.append(f"MISMATCH {name}: {diff} (flags {p['Flags']})")
            lost = await asyncio.to_thread(lost_writes, acked, seed, i, p["MasterDevice"])
            if lost:
                problems.append(f"{name}: {len(lost)} acknowledged block(s) not on the master "
                                f"after the restart, first {lost[:5]}")
        if acked.acked == 0:
            problems.append("the writer had no write acknowledged: the run tested nothing")
        c.disconnect()
        c = None
        d.stop_and_check()
        if "Traceback" in d.log_text():
            problems.append(f"ptcopyd logged a traceback:\n{d.log_tail(40)}")
    except Exception as e:
        problems.append(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}\n"
                        f"{d.log_tail(30)}")
    finally:
        if writer is not None:
            writer.kill()
            writer.wait()
        if c is not None:
            c.disconnect()
        d.cleanup()
    return facts


async def fig_sigkill(fig: Figure, bus: PrivateBus, runs: int, seed: int, keep: Path) -> None:
    size = 8 * MIB
    acked = 0
    copying = 0
    with tempfile.TemporaryDirectory(prefix="ptcopy-rel-kill-") as tmp:
        facts = await sigkill_run(bus, Path(tmp), seed - 1, size, control=True)
        seen = [p for p in facts["problems"] if p.startswith("MISMATCH ind")]
        other = [p for p in facts["problems"] if not p.startswith(("MISMATCH ind", "ind: "))]
        say(f"sigkill control run: {'caught' if seen else 'NOT caught'}: {facts['problems']}")
        if not seen or other:
            fig.fail(f"control run (seed {seed - 1}): 4 KiB written behind the daemon's back "
                     f"should be the only problem found, got {facts['problems']}")
        fig.counts["control_caught"] = bool(seen)
    for i in range(runs):
        s = seed + i
        with tempfile.TemporaryDirectory(prefix="ptcopy-rel-kill-") as tmp:
            facts = await sigkill_run(bus, Path(tmp), s, size)
            fig.runs += 1
            acked += facts.get("acked", 0)
            copying += bool(facts.get("copying_at_kill"))
            status = "ok" if not facts["problems"] else "FAILED"
            say(f"sigkill [{i + 1}/{runs}] seed {s}: {status}, writes acked "
                f"{facts.get('acked', '?')} of {facts.get('attempted', '?')} (last "
                f"{facts.get('stalled')} s before the kill), copying at kill "
                f"{facts.get('copying_at_kill')}, ops {facts.get('ops')}")
            if facts["problems"]:
                dest = keep / f"sigkill-seed{s}"
                shutil.copytree(tmp, dest, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("*.img", "run"))
                fig.fail(f"sigkill run seed {s} (kept in {dest}; alone: --only sigkill "
                         f"--seed {s} --sigkill-runs 1): "
                         + "; ".join(facts["problems"]))
    fig.counts.update(runs=fig.runs, mismatched_runs=len(fig.failures), writes_acked=acked,
                      kills_during_a_copy=copying, volume_size=size)


# ---- figure 2: VM power cuts -------------------------------------------------------------------


def _never_started(g: Any) -> bool:
    """A boot that failed before the guest ran its command (kernel panic at boot, a module that
    would not load): it tested nothing of ptcopy."""
    return g is not None and f"PTVM-BEGIN {g.nonce}" not in g.console.splitlines()


def fig_vm(fig: Figure, runs: int, seed: int) -> None:
    """``runs`` power cuts whose recovery ran its check; a run whose boot failed before the
    guest's command is counted apart (boot_failures) and replaced, up to 5 extra attempts."""
    import poweroff
    import vmkit
    try:
        vmkit.prepare()
    except vmkit.VmUnavailable as exc:
        fig.skipped = f"VM tier unavailable: {exc}"
        return
    rng = random.Random(seed)
    variants = list(poweroff.VARIANTS)
    copied = []
    by_variant: Counter[str] = Counter()
    boot_failures: list[str] = []
    i = 0
    while fig.runs < runs and i < runs + 5:
        sc = poweroff.Scenario(variants[i % len(variants)], rng.randrange(1 << 30),
                               round(rng.uniform(0.2, 6.0), 2))
        i += 1
        with tempfile.TemporaryDirectory(prefix="ptcopy-rel-vm-") as tmp:
            run = poweroff.run(sc, Path(tmp), control=i == 1)
            problems = run.problems()
            r = run.result or {}
            if problems and r.get("problems") is None and any(
                    _never_started(g) for g in (run.load, run.recover, run.control)):
                boot_failures.append(f"{sc}: {problems[0][:400]} ({run.results})")
                say(f"vm attempt {i}: BOOT FAILED (not counted): {problems[0][:300]}")
                continue
            fig.runs += 1
            by_variant[sc.variant] += 1
            if isinstance(r.get("chunks_copied"), int):
                copied.append(r["chunks_copied"])
            say(f"vm [{fig.runs}/{runs}] {'ok' if not problems else 'FAILED'}: {run.summary()}")
            if problems:
                fig.fail(f"power cut {sc} (consoles in {run.results}): " + "; ".join(problems))
            else:
                run.cleanup()
    fig.counts.update(runs=fig.runs, failed_runs=len(fig.failures), variants=dict(by_variant),
                      chunks_copied_at_recovery=sum(copied), attempts=i,
                      boot_failures=boot_failures)


# ---- figure 3: fault injection -----------------------------------------------------------------


def inject(s: Set, role: VolumeRole, on: bool, err: int) -> bool:
    """Set.inject_error with the errno when the engine takes one; False when it cannot inject
    ``err`` (an engine without the errno choice fails with EIO only)."""
    params = inspect.signature(s.inject_error).parameters
    for name in ("errno", "error", "err", "code", "errnum"):
        if name in params:
            s.inject_error(role, on, **{name: err})
            return True
    if err != errno.EIO:
        return False
    s.inject_error(role, on)
    return True


class StepFailed(OSError):
    """An I/O step on a served file failed: ``step`` says which (write, fsync, read, close)."""

    def __init__(self, step: str, e: OSError, landed: bool = False) -> None:
        super().__init__(e.errno, f"{step}: {e.strerror or e}")
        self.step = step
        self.landed = landed    # the data was written before the step that failed


def _pwrite_sync(path: str, off: int, data: bytes) -> None:
    """One O_DIRECT write, its fsync and the close (FUSE flush): each must succeed."""
    fd = os.open(path, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
    buf = mmap.mmap(-1, len(data))
    buf[:] = data
    step, landed = "write", False
    try:
        n = os.pwritev(fd, [buf], off)
        if n != len(data):
            raise OSError(errno.EIO, f"short write {n} of {len(data)}")
        step, landed = "fsync", True
        os.fsync(fd)
        step = "close"
        fd, closing = -1, fd
        os.close(closing)
    except OSError as e:
        raise StepFailed(step, e, landed) from e
    finally:
        buf.close()
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _read_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    step = "read"
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        buf = mmap.mmap(-1, size)
        got = 0
        while got < size:
            n = os.preadv(fd, [memoryview(buf)[got:]], got)
            if n <= 0:
                raise OSError(errno.EIO, f"short read of {path} at {got}")
            got += n
        out = bytes(buf)
        buf.close()
        step = "close"
        fd, closing = -1, fd
        os.close(closing)
        return out
    except OSError as e:
        raise StepFailed(step, e) from e
    finally:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


FAULT_SETS = ("dependent", "independent", "compact")
FLAG_OF = {VolumeRole.SHADOW: Flag.SHADOW_OFFLINE, VolumeRole.BITMAP: Flag.BITMAP_OFFLINE,
           VolumeRole.OVERFLOW: Flag.OVERFLOW_OFFLINE}
OFFLINE = Flag.MASTER_OFFLINE | Flag.SHADOW_OFFLINE | Flag.BITMAP_OFFLINE | \
    Flag.OVERFLOW_OFFLINE


def fault_case(base: Path, kind: str, role: VolumeRole, err: int, seed: int) -> list[str]:
    """One case; the problems found (empty: passed; ["SKIP"]: the engine cannot inject it)."""
    chunk = 32 * 1024
    size = 64 * chunk
    rng = random.Random(seed)
    problems: list[str] = []
    image = bytearray(rng.randbytes(size))
    vols = {}
    for name, n in (("master", size), ("shadow", 4 * chunk if kind == "compact" else size),
                    ("overflow", 64 * chunk)):
        p = base / f"{name}.img"
        with p.open("wb") as f:
            f.write(bytes(image) if name == "master" else b"")
            f.truncate(n)
        vols[name] = str(p)
    k = Kind.INDEPENDENT if kind == "independent" else Kind.DEPENDENT
    shadow_size = os.path.getsize(vols["shadow"])
    bm = base / "bitmap.img"
    with bm.open("wb") as f:
        f.truncate(bitmap_size(size, shadow_size, chunk, k))
    mnt = base / "mnt"
    mnt.mkdir()
    eng = Engine()
    srv: Server | None = None
    try:
        ov = eng.init_overflow(vols["overflow"], chunk) if kind == "compact" else None
        s = eng.enable(vols["master"], vols["shadow"], str(bm), k, chunk_size=chunk, overflow=ov)
        if k is Kind.INDEPENDENT:
            s.wait(30)
        srv = Server(eng, mnt)
        master, shadow = srv.export("s", s)
        # changed chunks before the fault, so that the shadow side has work to do; a compact
        # shadow whose own volume is to fail keeps free slots (else it spills to the overflow
        # and never touches the failing volume again)
        pre = 1 if kind == "compact" and role is VolumeRole.SHADOW else 16
        write_master(master, image, rng, pre, problems, "before the fault")
        if not inject(s, role, True, err):
            return ["SKIP"]
        if k is Kind.INDEPENDENT:     # only a copy reaches an independent shadow
            with contextlib.suppress(PtcopyError):
                s.update(Direction.TO_SHADOW)
                s.wait(30)
        write_master(master, image, rng, 32, problems, f"with the {role.name.lower()} failing")
        flags = s.status().flags
        if not flags & FLAG_OF[role]:
            problems.append(f"the {role.name.lower()} failed but the flags are {flags!r}")
        if flags & Flag.MASTER_OFFLINE:
            problems.append(f"the master was flagged offline: {flags!r}")
        check_master(master, vols["master"], image, problems)
        inject(s, role, False, err)
        try:
            s.reset()
            s.wait(60)
        except PtcopyError as e:
            problems.append(f"reset after the fault cleared: {type(e).__name__}: {e}")
        flags = s.status().flags
        if flags & OFFLINE:
            problems.append(f"still offline after reset: {flags!r}")
        write_master(master, image, rng, 8, problems, "after the reset")
        try:
            s.update(Direction.TO_SHADOW)
            s.wait(60)
        except PtcopyError as e:
            problems.append(f"update after the reset: {type(e).__name__}: {e}")
        check_master(master, vols["master"], image, problems)
        try:
            if _read_file(shadow) != bytes(image):
                problems.append("after reset and update the shadow differs from the master")
        except OSError as e:
            problems.append(f"reading the served shadow after reset and update: {e}")
    except PtcopyError as e:
        problems.append(f"{type(e).__name__}: {e}")
    finally:
        try:
            if srv is not None:
                srv.stop()
            eng.close()
        except PtcopyError as e:
            if not problems:    # after a failed case, closing may fail too: already counted
                problems.append(f"closing after the recovery: {type(e).__name__}: {e}")
    return problems


def write_master(master: str, image: bytearray, rng: random.Random, count: int,
                 problems: list[str], when: str) -> None:
    """Random writes through the served master file, each with its fsync and close; ``image``
    follows what was acknowledged."""
    failed = Counter[str]()
    for _ in range(count):
        n = rng.randint(1, 8)
        off = rng.randrange(len(image) // BLOCK - n + 1) * BLOCK
        data = rng.randbytes(n * BLOCK)
        try:
            _pwrite_sync(master, off, data)
        except StepFailed as e:
            failed[e.strerror or str(e)] += 1
            if e.landed:    # written, only its fsync or close failed
                image[off:off + len(data)] = data
            continue
        image[off:off + len(data)] = data
    for why, k in failed.items():
        problems.append(f"{k} of {count} master writes {when} failed at {why}")


def check_master(master: str, raw: str, image: bytearray, problems: list[str]) -> None:
    try:
        if _read_file(master) != bytes(image):
            problems.append("the served master does not hold every acknowledged write")
    except OSError as e:
        problems.append(f"reading the served master failed: {e}")
    with open(raw, "rb") as f:
        if f.read() != bytes(image):
            problems.append("the master volume does not hold every acknowledged write")


def fig_faults(fig: Figure, seed: int, repeat: int) -> None:
    cases: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    i = 0
    for _ in range(repeat):
        for kind in FAULT_SETS:
            roles = [VolumeRole.SHADOW, VolumeRole.BITMAP]
            if kind == "compact":
                roles.append(VolumeRole.OVERFLOW)
            for role in roles:
                for err in (errno.EIO, errno.ENOSPC):
                    i += 1
                    what = f"{kind} {role.name.lower()} {errno.errorcode[err]}"
                    with tempfile.TemporaryDirectory(prefix="ptcopy-rel-fault-") as tmp:
                        try:
                            problems = fault_case(Path(tmp), kind, role, err, seed + i)
                        except Exception as e:
                            problems = [f"{type(e).__name__}: {e}"]
                    if problems == ["SKIP"]:
                        skipped[what] += 1
                        say(f"faults {what}: skipped (the engine injects EIO only)")
                        continue
                    fig.runs += 1
                    cases[what] += 1
                    say(f"faults {what} seed {seed + i}: {'ok' if not problems else 'FAILED'}")
                    if problems:
                        fig.fail(f"fault case {what} seed {seed + i}: " + "; ".join(problems))
    fig.counts.update(cases=fig.runs, failed_cases=len(fig.failures), by_case=dict(cases),
                      skipped=dict(skipped))


# ---- figure 4: fuzzed D-Bus calls --------------------------------------------------------------

CONTRACT_NODE = intr.Node.parse(CONTRACT.read_text())
METHODS = [(i.name, m) for i in CONTRACT_NODE.interfaces for m in i.methods]
PROPS_OF = {i.name: [p.name for p in i.properties] for i in CONTRACT_NODE.interfaces}
STANDARD = [(PROPS, "Get", "ss"), (PROPS, "GetAll", "s"), (PROPS, "Set", "ssv"),
            ("org.freedesktop.DBus.Introspectable", "Introspect", ""),
            ("org.freedesktop.DBus.Peer", "Ping", ""), ("org.freedesktop.DBus.Peer",
                                                       "GetMachineId", ""),
            (OM, "GetManagedObjects", "")]
NOT_THERE = {STD + x for x in ("UnknownObject", "UnknownMethod", "UnknownInterface",
                               "UnknownProperty", "PropertyReadOnly", "InvalidArgs")}
OPTION_KEYS = ["chunk_size", "overflow", "group", "copy_delay", "copy_units",
               "bitmap_in_memory", "loop", "confirm"]
# Answers of the D-Bus library (dbus-fast) and the bus to standard interfaces, not refusals of
# ptcopyd's own methods: counted and listed apart (RELIABILITY.md), not failures.
LIBRARY_ANSWERS = {
    ("org.freedesktop.DBus.Peer", "GetMachineId", STD + "AccessDenied"):
        "dbus-fast answers it by asking the bus, which the system bus policy denies",
    (PROPS, "Get", STD + "NotSupported"): "dbus-fast: an empty interface name",
    (PROPS, "GetAll", STD + "NotSupported"): "dbus-fast: an empty interface name",
    (PROPS, "Set", STD + "NotSupported"): "dbus-fast: an empty interface name",
}
MAX_DELAY = 200     # longer throttles make copies outlive the fuzzing (not what is tested)


class Fuzzer:
    def __init__(self, fig: Figure, d: Ptcopyd, c: Client, rng: random.Random,
                 base: Path) -> None:
        self.fig, self.d, self.c, self.rng, self.base = fig, d, c, rng, base
        self.files: list[str] = []
        self.objects: list[str] = [ROOT]
        self.replies: Counter[str] = Counter()
        self.crashes = 0
        self.serial = 0
        self.quirks: Counter[str] = Counter()
        self.live: dict[str, dict[str, dict[str, Any]]] = {}

    # -- values --

    def text(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            return "".join(self.rng.choice("abcXYZ019-_. é/") for _ in range(self.rng.randint(
                0, 20)))
        if r < 0.6:
            return ""
        if r < 0.7:
            return self.rng.choice(["n" * 65, "n" * 4097, "é" * 3000, "x" * 100_000])
        if r < 0.8:
            return "".join(chr(self.rng.choice([self.rng.randint(1, 0xD7FF),
                                                self.rng.randint(0xE000, 0x10FFFF)]))
                           for _ in range(self.rng.randint(1, 12)))
        return self.rng.choice(["dependent", "independent", "shadow", "master", "..", "/",
                                "%s%n", "\t\n"])

    def path(self) -> str:
        r = self.rng.random()
        if r < 0.6 and self.files:
            return self.rng.choice(self.files)
        if r < 0.7:
            return str(self.base / "outside.img")      # outside --file-volumes: refused
        if r < 0.8:
            return str(self.d.vol_dir / "missing.img")
        # random text only as a suffix of a path under the temporary directory
        return str(self.d.vol_dir) + "/" + self.text().replace("..", "_").replace("\0", "")

    def objpath(self) -> str:
        r = self.rng.random()
        if r < 0.7:
            return self.rng.choice(self.objects)
        if r < 0.9:
            return self.rng.choice([ROOT + "/sets/nope", ROOT + "/jobs/999999", "/",
                                    ROOT + "/groups/x_y", ROOT + "/overflow/0",
                                    "/org/freedesktop/DBus"])
        return "/" + "/".join("".join(self.rng.choice("abz_09") for _ in range(
            self.rng.randint(1, 8))) for _ in range(self.rng.randint(1, 4)))

    def u32(self) -> int:
        return self.rng.choice([0, 1, 4095, 4096, 32768, 65536, 1 << 20, 60000, 60001, 2**31,
                                2**32 - 1, self.rng.randrange(2**32)])

    def double(self) -> float:
        return self.rng.choice([-1.0, 0.0, -0.0, 1e-9, 0.05, 0.3, 1e308, -1e308, math.inf,
                                -math.inf, math.nan, self.rng.uniform(-10, 10)])

    def variant(self) -> Variant:
        r = self.rng.randrange(10)
        return [lambda: Variant("u", self.u32()), lambda: Variant("b", self.rng.random() < .5),
                lambda: Variant("s", self.text()), lambda: Variant("o", self.objpath()),
                lambda: Variant("t", self.rng.randrange(2**64)),
                lambda: Variant("i", self.rng.randrange(-2**31, 2**31)),
                lambda: Variant("d", self.double()),
                lambda: Variant("as", [self.text()]), lambda: Variant("ay", b"\x00\xff"),
                lambda: Variant("v", Variant("u", 4096))][r]()

    def options(self) -> dict[str, Variant]:
        out: dict[str, Variant] = {}
        for _ in range(self.rng.choice([0, 0, 1, 2, 3])):
            key = self.rng.choice(OPTION_KEYS) if self.rng.random() < 0.8 else self.text()
            typed = {"chunk_size": lambda: u(self.rng.choice([4096, 32768, 3000, 0, 2**31])),
                     "overflow": lambda: Variant("o", self.objpath()),
                     "group": lambda: Variant("o", self.objpath()),
                     "copy_delay": lambda: u(self.rng.randint(0, MAX_DELAY)),
                     "copy_units": lambda: u(self.rng.choice([0, 1, 8, 2**32 - 1])),
                     "bitmap_in_memory": lambda: Variant("b", self.rng.random() < 0.5),
                     "loop": lambda: Variant("b", self.rng.random() < 0.5),
                     "confirm": lambda: Variant("b", self.rng.random() < 0.5)}
            v = typed[key]() if key in typed and self.rng.random() < 0.7 else self.variant()
            if key == "copy_delay" and v.signature == "u" and v.value > MAX_DELAY:
                v = u(v.value % (MAX_DELAY + 1))
            out[key] = v
        return out

    def value(self, name: str, sig: str) -> Any:
        if sig == "a{sv}":
            return self.options()
        if sig == "ao":
            return [self.objpath() for _ in range(self.rng.randint(0, 3))]
        if sig == "o":
            return self.objpath()
        if sig == "d":
            return self.double()
        if sig == "u":
            return self.rng.randint(0, MAX_DELAY) if name == "delay" else self.u32()
        if sig == "s":
            if name in ("master", "shadow", "bitmap", "path"):
                return self.path()
            if name == "kind" and self.rng.random() < 0.8:
                return self.rng.choice(["dependent", "independent"])
            if name == "direction" and self.rng.random() < 0.8:
                return self.rng.choice(["shadow", "master"])
            if name == "name" and self.rng.random() < 0.6:
                self.serial += 1
                return f"fz{self.serial}"
            return self.text()
        if sig == "v":
            return self.variant()
        raise AssertionError(f"no generator for {sig}")

    # -- world --

    async def setup(self) -> None:
        need = bitmap_size(MIB, MIB, 0, Kind.INDEPENDENT)
        for i in range(6):
            self.files += [self.d.volume(MIB, f"m{i}.img"), self.d.volume(MIB, f"s{i}.img"),
                           self.d.volume(max(need, bitmap_size(MIB, MIB, 0, Kind.DEPENDENT)),
                                         f"b{i}.img")]
        self.files += [self.d.volume(256 * 1024, "compact.img"), self.d.volume(MIB, "ov0.img"),
                       self.d.volume(16 * 1024, "tiny.img"), self.d.volume(0, "empty.img")]
        with (self.base / "outside.img").open("wb") as f:
            f.truncate(MIB)
        await self.replenish()

    async def replenish(self) -> None:
        objs = await self.c.objects()
        kinds = [ifs[ISET]["Kind"] for ifs in objs.values() if ISET in ifs]
        used = {ifs[ISET][k] for ifs in objs.values() if ISET in ifs
                for k in ("Master", "Shadow", "Bitmap")}
        used |= {ifs[IOVERFLOW]["Path"] for ifs in objs.values() if IOVERFLOW in ifs}
        triples = [tuple(self.files[i:i + 3]) for i in range(0, 18, 3)]
        for kind in ("dependent", "independent"):
            if kinds.count(kind) >= 1:
                continue
            for t in triples:
                if not set(t) & used:
                    self.serial += 1
                    await self.c.call(ROOT, MANAGER, "CreateSet", "sssssa{sv}",
                                      [f"fz-{kind[:3]}-{self.serial}", kind, *t, {}])
                    used |= set(t)
                    break
        if not any(IGROUP in ifs for ifs in objs.values()):
            self.serial += 1
            await self.c.call(ROOT, MANAGER, "CreateGroup", "saoa{sv}",
                              [f"fz-g-{self.serial}", [], {}])
        if not any(IOVERFLOW in ifs for ifs in objs.values()) and self.files[19] not in used:
            await self.c.call(ROOT, MANAGER, "CreateOverflow", "sa{sv}", [self.files[19], {}])
        objs = await self.c.objects()
        self.live = objs
        for p in objs:
            if p not in self.objects:
                self.objects.append(p)

    # -- calls --

    def target(self, iface: str) -> str:
        if iface == MANAGER:
            return ROOT if self.rng.random() < 0.9 else self.objpath()
        mine = [p for p, ifs in self.live.items() if iface in ifs]
        if mine and self.rng.random() < 0.85:
            return self.rng.choice(mine)
        return self.objpath()

    async def one(self) -> None:
        r = self.rng.random()
        if r < 0.75:
            iface, m = self.rng.choice(METHODS)
            path = self.target(iface)
            sig = m.in_signature
            body = [self.value(a.name or "", a.signature) for a in m.in_args]
            member = m.name
            if self.rng.random() < 0.08:    # the wrong signature for this method
                sig, body = self.rng.choice([("", []), ("s", [self.text()]), ("u", [7]),
                                             ("d", [self.double()]), ("v", [self.variant()]),
                                             ("ss", ["a", "b"]), ("a{sv}", [{}])])
        else:
            iface, member, sig = self.rng.choice(STANDARD)
            path = self.rng.choice([*self.objects, ROOT + "/nope"])
            ifaces = [i for i in self.live.get(path, {}) if i.startswith(IFACE)] or [ISET]
            pi = self.rng.choice(ifaces) if self.rng.random() < 0.8 else self.text()
            props = PROPS_OF.get(pi, ["Name"])
            pn = self.rng.choice(props) if self.rng.random() < 0.8 else self.text()
            body = {"ss": [pi, pn], "s": [pi], "ssv": [pi, pn, self.variant()], "": []}[sig]
        await self.call(path, iface, member, sig, body)

    async def call(self, path: str, iface: str, member: str, sig: str, body: list[Any]) -> None:
        self.fig.runs += 1
        contract = any(i == iface and m.name == member and m.in_signature == sig
                       for i, m in METHODS)
        exists = (path == ROOT and iface == MANAGER) or iface in self.live.get(path, {})
        shown = repr(plain(body))
        what = f"{iface}.{member}({sig}) on {path} {shown[:300]}"
        msg = Message(destination="org.ptcopy.Imaging1", path=path, interface=iface,
                      member=member, signature=sig, body=body)
        try:
            reply = await asyncio.wait_for(self.c.bus.call(msg), 15)
        except TimeoutError:
            if member == "Wait" and exists:     # Wait(long) on a running job may block
                self.replies["blocked-wait"] += 1
                return
            self.fig.fail(f"no reply in 15 s: {what}")
            return
        except Exception as e:
            self.replies[f"not sent: {type(e).__name__}"] += 1
            self.fig.runs -= 1
            return
        assert reply is not None
        if not self.d.running:
            self.crashes += 1
            self.fig.fail(f"ptcopyd DIED after {what}:\n{self.d.log_tail(40)}")
            self.d.start()
            return
        if reply.message_type is not MessageType.ERROR:
            self.replies["success"] += 1
            return
        name = reply.error_name or ""
        text = str(reply.body[0]) if reply.body else ""
        if name.startswith(ERR):
            self.replies["named " + name[len(ERR):]] += 1
            if not text.strip():
                self.fig.fail(f"{name} without a message: {what}")
            return
        if name == STD + "InvalidArgs":
            self.replies["InvalidArgs"] += 1
            return
        if name in NOT_THERE and not (contract and exists):
            self.replies["standard " + name[len(STD):]] += 1
            return
        if name in NOT_THERE and contract:
            # the object lost the interface since the last look (the fuzzer disabled or
            # deleted it): the call named no method of a live object after all
            self.live = await self.c.objects()
            if iface not in self.live.get(path, {}):
                self.replies["standard " + name[len(STD):] + " (object gone)"] += 1
                return
        quirk = LIBRARY_ANSWERS.get((iface, member, name))
        if quirk is not None:
            self.replies[f"library {name[len(STD):]} to {member}"] += 1
            self.quirks[f"{iface}.{member} -> {name}: {quirk}"] += 1
            return
        self.replies["OTHER " + name] += 1
        self.fig.fail(f"unexpected error {name}: {text!r}: {what}")


async def fig_fuzz(fig: Figure, bus: PrivateBus, calls: int, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ptcopy-rel-fuzz-") as tmp:
        d = Ptcopyd(bus, Path(tmp) / "d", [])
        c: Client | None = None
        try:
            d.start()
            c = await Client.connect(bus.address)
            f = Fuzzer(fig, d, c, random.Random(seed), Path(tmp))
            await f.setup()
            t0 = time.monotonic()
            for i in range(calls):
                if i % 25 == 0:
                    await f.replenish()
                await f.one()
                if (i + 1) % 1000 == 0:
                    say(f"fuzz {i + 1}/{calls} calls, {time.monotonic() - t0:.0f} s, "
                        f"{len(fig.failures)} failure(s)")
            await c.ping()
            n = await c.refresh()
            if n:
                fig.fail(f"Manager.Refresh() found {n} change(s) after the fuzzing")
            with (Path(tmp) / "outside.img").open("rb") as fh:
                if fh.read() != bytes(MIB):
                    fig.fail("a file outside --file-volumes was written")
            fig.counts.update(calls=fig.runs, crashes=f.crashes, replies=dict(f.replies),
                              library_answers=dict(f.quirks), unexpected=len(fig.failures))
            c.disconnect()
            c = None
            await asyncio.sleep(1.0)    # let the daemon see the client go before SIGTERM
            d.stop_and_check()
            if "Traceback" in d.log_text():
                fig.fail(f"ptcopyd logged a traceback during the fuzzing:\n{d.log_tail(60)}")
        except Exception as e:
            fig.fail(f"fuzzing broke off: {type(e).__name__}: {e}\n{d.log_tail(30)}")
        finally:
            if c is not None:
                c.disconnect()
            d.cleanup()


# ---- figure 5: load ----------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def fig_load(fig: Figure, bus: PrivateBus, clients: int, nsets: int, seconds: float,
                   seed: int, job_retention: float | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="ptcopy-rel-load-") as tmp:
        # finished jobs stay readable for --job-retention (900 s by default): RSS grows with
        # the jobs kept until the first ones expire
        d = Ptcopyd(bus, Path(tmp) / "d", [] if job_retention is None else
                    ["--job-retention", str(job_retention)])
        conns: list[Client] = []
        counts: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        jobs_started: set[str] = set()
        jobs_ended: set[str] = set()
        rss: list[tuple[float, int]] = []
        try:
            d.start()
            admin = await Client.connect(bus.address)
            conns.append(admin)
            sets: list[str] = []
            t_setup = time.monotonic()
            for i in range(nsets):
                kind = "dependent" if i % 2 == 0 else "independent"
                m, s, b = d.set_volumes(MIB, kind=kind)
                p, job = await admin.create_set(f"load{i}", kind, m, s, b)
                if job != "/":
                    await admin.wait_job(job)
                sets.append(p)
            masters = [str(await admin.get(p, ISET, "MasterDevice")) for p in sets]
            say(f"load: {nsets} sets in {time.monotonic() - t_setup:.0f} s")
            for _ in range(clients - 1):
                conns.append(await Client.connect(bus.address))
            assert d.proc is not None
            pid = d.proc.pid
            end = time.monotonic() + seconds
            t0 = time.monotonic()

            async def sampler() -> None:
                while time.monotonic() < end and d.running:
                    with contextlib.suppress(OSError):
                        kib = rss_kib(pid)
                        if kib:
                            rss.append((time.monotonic() - t0, kib))
                    await asyncio.sleep(1.0)

            async def writer(rng: random.Random) -> None:
                while time.monotonic() < end:
                    dev = rng.choice(masters)
                    off = rng.randrange(MIB // BLOCK) * BLOCK
                    try:
                        await asyncio.to_thread(_pwrite_sync, dev, off, rng.randbytes(BLOCK))
                        counts["master writes"] += 1
                    except OSError as e:
                        errors[f"master write: {e}"] += 1
                    await asyncio.sleep(0.02)

            async def client(c: Client, rng: random.Random) -> None:
                while time.monotonic() < end:
                    p = rng.choice(sets)
                    op = rng.choice(["props", "props", "get", "update", "wait", "objects"])
                    try:
                        if op == "props":
                            await c.props(p, ISET)
                        elif op == "get":
                            await c.get(p, ISET, rng.choice(PROPS_OF[ISET]))
                        elif op == "objects":
                            if rng.random() < 0.1:
                                await c.objects()
                            else:
                                await c.ok(ROOT, PROPS, "GetAll", "s", [MANAGER])
                        elif op == "update":
                            r = await c.call(p, ISET, "Update", "sa{sv}", ["shadow", {}],
                                             timeout=60)
                            if r.message_type is MessageType.ERROR:
                                if r.error_name == ERR + "Busy":   # another client's copy
                                    counts["update refused Busy"] += 1
                                else:
                                    errors[f"Update: {r.error_name}"] += 1
                                continue
                            job = str(r.body[0])
                            jobs_started.add(job)
                            (done,) = await c.ok(job, IJOB, "Wait", "d", [60.0], timeout=70)
                            if not done:
                                errors["a job did not end in 60 s"] += 1
                                continue
                            jp = await c.props(job, IJOB)
                            if not jp["Success"]:
                                errors[f"job failed: {jp['Message']}"] += 1
                            jobs_ended.add(job)
                        else:
                            job = str(await c.get(p, ISET, "Job"))
                            if job != "/":
                                r = await c.call(job, IJOB, "Wait", "d", [rng.uniform(0, 2)],
                                                 timeout=30)
                                if r.message_type is MessageType.ERROR and \
                                        r.error_name != STD + "UnknownObject":
                                    errors[f"Job.Wait: {r.error_name}"] += 1
                        counts[op] += 1
                    except AssertionError as e:      # no reply in time, or a failed call
                        errors[str(e).split("\n")[0][:200]] += 1

            await asyncio.gather(sampler(), writer(random.Random(seed)),
                                 *(client(c, random.Random(seed + 1 + i))
                                   for i, c in enumerate(conns)))
            for job in jobs_started - jobs_ended:   # a Wait that errored: ended since?
                if not await job_done(admin, job):
                    errors[f"job {job} never ended"] += 1
            if not d.running:
                errors[f"ptcopyd DIED:\n{d.log_tail(60)}"] += 1
            elif "Traceback" in d.log_text():
                errors[f"ptcopyd logged a traceback:\n{d.log_tail(60)}"] += 1
            for c in conns:
                c.disconnect()
            conns = []
            await asyncio.sleep(1.0)
            d.stop_and_check()
        except Exception as e:
            errors[f"load broke off: {type(e).__name__}: {e}"] += 1
        finally:
            for c in conns:
                c.disconnect()
            d.cleanup()
            if errors:
                keep = REPO / "build" / "reliability" / f"load-seed{seed}.log"
                keep.write_text(d.log_text())
                errors[f"(ptcopyd's log kept in {keep})"] += 0
        fig.runs = sum(counts.values())
        for what, n in errors.items():
            fig.fail(f"load: {n} x {what}" if n else what)
        values = [r for _, r in rss]
        half = [r for t, r in rss if t >= seconds / 2]
        first = [r for t, r in rss if t < min(10.0, seconds / 4)]
        fig.counts.update(
            clients=clients, sets=nsets, seconds=seconds, operations=dict(counts),
            job_retention=job_retention if job_retention is not None else "default (900 s)",
            jobs=len(jobs_started), jobs_unfinished=len(jobs_started - jobs_ended),
            errors=sum(errors.values()), rss_samples=len(values),
            rss_max_kib=max(values, default=0),
            rss_start_kib=max(first, default=0), rss_end_kib=values[-1] if values else 0,
            rss_growth_kib=(values[-1] - max(first, default=values[-1])) if values else 0,
            rss_second_half_growth_kib=(half[-1] - half[0]) if len(half) > 1 else 0,
            # the curve, one sample every ~30 s: does it level off?
            rss_curve_kib=[(round(t), r) for k, (t, r) in enumerate(rss) if k % 30 == 0])
        say(f"load: {fig.counts}")


# ---- the document's table ----------------------------------------------------------------------


def render(paths: list[Path]) -> str:
    """Markdown rows for docs/RELIABILITY.md from one or more --json outputs."""
    rows = ["| Figure | Counted | Failures | Key counts | Run (UTC) | Commit | Seed | Time |",
            "|---|---|---|---|---|---|---|---|"]
    for path in paths:
        data = json.loads(path.read_text())
        for name, f in data["figures"].items():
            c = f["counts"]
            if f["skipped"]:
                key = f"skipped: {f['skipped']}"
            elif name == "sigkill":
                key = (f"{c.get('runs')} runs, {c.get('mismatched_runs')} with a mismatch or "
                       f"lost write; {c.get('writes_acked')} writes acknowledged (the last one "
                       f"to each block checked); "
                       f"{c.get('kills_during_a_copy')} kills during a copy; control caught: "
                       f"{c.get('control_caught')}")
            elif name == "vm":
                key = (f"{c.get('runs')} power cuts checked ({c.get('variants')}), "
                       f"{c.get('failed_runs')} with a lost chunk or other failure; "
                       f"{c.get('chunks_copied_at_recovery')} chunks copied at recovery; "
                       f"{len(c.get('boot_failures', []))} boots that failed before the "
                       f"guest's command, not counted")
            elif name == "faults":
                key = (f"{c.get('cases')} cases (3 set kinds x shadow/bitmap/overflow x EIO/"
                       f"ENOSPC), {c.get('failed_cases')} failed")
            elif name == "fuzz":
                named = sum(n for k, n in c.get("replies", {}).items() if k.startswith("named"))
                key = (f"{c.get('calls')} calls, {c.get('crashes')} crashes, "
                       f"{c.get('replies', {}).get('success', 0)} successes, {named} named "
                       f"refusals, {c.get('replies', {}).get('InvalidArgs', 0)} InvalidArgs, "
                       f"{c.get('unexpected')} other")
            else:
                key = (f"{c.get('clients')} clients, {c.get('sets')} sets, "
                       f"{c.get('seconds')} s: {c.get('errors')} errors, {c.get('jobs')} jobs "
                       f"({c.get('jobs_unfinished')} unfinished); RSS max "
                       f"{c.get('rss_max_kib', 0) / 1024:.1f} MiB, start "
                       f"{c.get('rss_start_kib', 0) / 1024:.1f} MiB, growth "
                       f"{c.get('rss_growth_kib', 0) / 1024:+.1f} MiB")
            rows.append(f"| {name} | {f['runs']} | {len(f['failures'])} | {key} | "
                        f"{data['started']} | {data['commit']} | {data['seed']} | "
                        f"{f['seconds']:.0f} s |")
    return "\n".join(rows)


# ---- main --------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    global FINDINGS, REPRO
    if argv[:1] == ["--writer"]:
        return writer_main(argv[1], int(argv[2]), argv[3:])
    if argv[:1] == ["--render"]:
        print(render([Path(a) for a in argv[1:]]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI sizes (about 3 minutes)")
    ap.add_argument("--only", default=",".join(FIGURES), help="comma-separated figures")
    ap.add_argument("--seed", type=int, default=None, help="base seed (default: random)")
    ap.add_argument("--json", type=Path, help="write the counts here")
    ap.add_argument("--findings", type=Path, help="append every failure here")
    ap.add_argument("--sigkill-runs", type=int)
    ap.add_argument("--vm-runs", type=int)
    ap.add_argument("--fault-repeat", type=int)
    ap.add_argument("--fuzz-calls", type=int)
    ap.add_argument("--load-clients", type=int)
    ap.add_argument("--load-sets", type=int)
    ap.add_argument("--load-seconds", type=float)
    ap.add_argument("--load-job-retention", type=float,
                    help="ptcopyd's --job-retention for the load (default: its own)")
    args = ap.parse_args(argv)
    only = [f for f in args.only.split(",") if f]
    if set(only) - set(FIGURES):
        ap.error(f"unknown figure(s) {sorted(set(only) - set(FIGURES))}; known: {FIGURES}")
    q = args.quick
    n = {"sigkill": args.sigkill_runs or (5 if q else 200),
         "vm": args.vm_runs if args.vm_runs is not None else (0 if q else 20),
         "faults": args.fault_repeat or (1 if q else 5),
         "fuzz": args.fuzz_calls or (1000 if q else 20000),
         "clients": args.load_clients or (8 if q else 64),
         "sets": args.load_sets or (10 if q else 100),
         "seconds": args.load_seconds or (20.0 if q else 300.0)}
    seed = args.seed if args.seed is not None else random.randrange(1 << 20)
    FINDINGS = args.findings
    REPRO = (f".venv/bin/python tests/reliability/reliability.py {'--quick ' if q else ''}"
             f"--seed {seed} --only {{fig}}")
    if os.geteuid() != 0:
        print("reliability: needs root (FUSE, loop devices)", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    say(f"reliability: {'quick' if q else 'full'} mode, seed {seed}, commit {commit()}, "
        f"figures {','.join(only)}, sizes {n}")
    keep = REPO / "build" / "reliability"
    keep.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Figure] = {}
    bus = PrivateBus.start()
    loop = asyncio.new_event_loop()
    try:
        for name in only:
            fig = figs[name] = Figure(name)
            t0 = time.monotonic()
            say(f"---- {name}")
            if name == "sigkill":
                loop.run_until_complete(fig_sigkill(fig, bus, n["sigkill"], seed, keep))
            elif name == "vm":
                if n["vm"] == 0:
                    fig.skipped = ("quick mode: CI runs the six power-cut scenarios in "
                                   "tests/vm/test_kernel_poweroff.py")
                else:
                    fig_vm(fig, n["vm"], seed)
            elif name == "faults":
                fig_faults(fig, seed, n["faults"])
            elif name == "fuzz":
                loop.run_until_complete(fig_fuzz(fig, bus, n["fuzz"], seed))
            elif name == "load":
                loop.run_until_complete(fig_load(fig, bus, n["clients"], n["sets"],
                                                 n["seconds"], seed, args.load_job_retention))
            fig.seconds = round(time.monotonic() - t0, 1)
            say(f"---- {name}: {fig.runs} counted, {len(fig.failures)} failure(s), "
                f"{fig.seconds} s{' (skipped: ' + fig.skipped + ')' if fig.skipped else ''}")
    finally:
        loop.close()
        bus.stop()
    total = sum(len(f.failures) for f in figs.values())
    out = {"mode": "quick" if q else "full", "seed": seed, "commit": commit(),
           "started": started, "ended": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "command": " ".join([".venv/bin/python", "tests/reliability/reliability.py", *argv]),
           "failures": total, "figures": {k: asdict(f) for k, f in figs.items()}}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    print("\nsummary:")
    for f in figs.values():
        print(f"  {f.name}: {f.runs} counted, {len(f.failures)} failure(s), {f.seconds} s"
              f"{' (skipped: ' + f.skipped + ')' if f.skipped else ''}")
        print(f"    {json.dumps(f.counts)}")
        for x in f.failures[:20]:
            print(f"    - {x[:500]}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
