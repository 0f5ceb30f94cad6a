"""Figure sigkill: ptcopyd killed with SIGKILL under write load, restarted, checked."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbus_fast import MessageType

from tests.helpers.blockio import read_dev, same_content
from tests.helpers.bus import PrivateBus
from tests.helpers.client import Client, plain, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import (
    ERR,
    IJOB,
    ISET,
    MIB,
)
from tests.reliability.figure import BLOCK, REPO, Figure, say
from tests.reliability.writer import block_data


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
        writer = subprocess.Popen([sys.executable, "-m", "tests.reliability.writer", str(log),
                                   str(seed), *devs], cwd=REPO, stdout=subprocess.DEVNULL,
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
