#!/usr/bin/env python3
"""Jobs through ptcopyd: how long an update takes from the `Update` call to the job's end.

    sudo .venv/bin/python bench/daemon_jobs.py [--size-mib 1024] [--reps 5] [--warm]

One independent set of file volumes on the userspace data path (FUSE, no loop devices) under a
private dbus-daemon. Each round changes 1 % of the master's chunks through the served master
file, then times `Update('shadow')` until the job's `Completed` signal arrives and until
`Job.Wait` returns (called right after `Update` returned); then the same for an update with
nothing to copy. Side by side: `rsync --inplace --no-whole-file --ignore-times` of the same
change onto a copy of the previous master, plus an fdatasync of its target.

Importable: ``measure_update(work_dir, ...)`` returns the samples (bench/run_ops.py uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common import copy_file, drop_caches, fdatasync_path, fill_random, median, run
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ptcopy.datapath import blockdev

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME, ROOT = "org.ptcopy.Imaging1", "/org/ptcopy/Imaging1"
JOB = NAME + ".Job"
BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={sock}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/>
<allow receive_sender="*"/>
</policy></busconfig>"""


@dataclass
class Samples:
    """Seconds per round; ``signal``: Update call to Completed, ``wait``: to Wait's return."""

    update_signal: list[float] = field(default_factory=list)
    update_wait: list[float] = field(default_factory=list)
    noop_signal: list[float] = field(default_factory=list)
    noop_wait: list[float] = field(default_factory=list)
    rsync: list[float] = field(default_factory=list)
    changed: int = 0
    chunks: int = 0

    def summary(self) -> dict[str, float]:
        """Medians in milliseconds."""
        return {k: median(v) * 1000 for k, v in vars(self).items()
                if isinstance(v, list) and v}


@contextlib.contextmanager
def daemon(work: Path, vols: Path, data_path: str = "userspace",
           repo: str = REPO) -> Iterator[str]:
    """A private dbus-daemon and a ptcopyd (of the checkout ``repo``, its engine built in
    place) serving file volumes of ``vols``; yields the bus address."""
    sock = work / "bus.sock"
    conf = work / "bus.conf"
    conf.write_text(BUS_CONF.format(sock=sock), encoding="utf-8")
    bus = subprocess.Popen(["dbus-daemon", "--config-file", str(conf), "--nofork"])
    d = None
    try:
        while not sock.exists():
            time.sleep(0.02)
        addr = f"unix:path={sock}"
        d = subprocess.Popen([sys.executable, "-m", "ptcopy.daemon.main", "--bus", addr,
                              "--state-dir", str(work / "state"), "--run-dir",
                              str(work / "run"), "--file-volumes", str(vols), "--data-path",
                              data_path, "--volumes", "used", "--log-level", "warning"],
                             cwd=repo)
        yield addr
    finally:
        if d is not None:
            d.send_signal(signal.SIGTERM)
            try:
                d.wait(120)
            except subprocess.TimeoutExpired:
                d.kill()
                d.wait(30)
        bus.terminate()
        bus.wait()
        # a ptcopyd that died without unmounting leaves its FUSE mount behind
        for mp in sorted(blockdev.fuse_mounts_at(str(work)), reverse=True):
            with contextlib.suppress(blockdev.LoopError):
                blockdev.lazy_unmount(mp)


class Bus:
    """A dbus-fast connection that records when each job's Completed signal arrived."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.completed: dict[str, float] = {}
        self._seen = asyncio.Event()
        bus.add_message_handler(self._on_message)

    @classmethod
    async def connect(cls, addr: str) -> Bus:
        b = cls(await MessageBus(bus_address=addr, bus_type=BusType.SYSTEM).connect())
        await b.call("/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
                     [f"type='signal',interface='{JOB}',member='Completed'"],
                     destination="org.freedesktop.DBus")
        return b

    def _on_message(self, m: Message) -> None:
        if m.message_type is MessageType.SIGNAL and m.member == "Completed" and m.path:
            self.completed.setdefault(m.path, time.perf_counter())
            self._seen.set()

    async def call(self, path: str, iface: str, member: str, sig: str = "",
                   body: list[object] | None = None, destination: str = NAME) -> list[object]:
        reply = await asyncio.wait_for(self.bus.call(Message(
            destination=destination, path=path, interface=iface, member=member, signature=sig,
            body=body or [])), 600)
        assert reply is not None
        if reply.message_type is MessageType.ERROR:
            raise RuntimeError(f"{member}: {reply.error_name}: {reply.body}")
        return list(reply.body)

    async def until_completed(self, job: str) -> float:
        while job not in self.completed:
            self._seen.clear()
            await asyncio.wait_for(self._seen.wait(), 600)
        return self.completed[job]

    async def wait_ok(self, job: str) -> None:
        (ended,) = await self.call(job, JOB, "Wait", "d", [600.0])
        props = await self.call(job, "org.freedesktop.DBus.Properties", "GetAll", "s", [JOB])
        p = {k: v.value for k, v in props[0].items()}  # type: ignore[attr-defined]
        if not ended or not p["Done"] or not p["Success"]:
            raise RuntimeError(f"job {job} did not end well: {p}")

    async def timed_update(self, set_path: str) -> tuple[float, float]:
        """Update('shadow') -> (seconds to Completed, seconds to Wait's return)."""
        t0 = time.perf_counter()
        (job,) = await self.call(set_path, NAME + ".IISet", "Update", "sa{sv}", ["shadow", {}])
        (ended,) = await self.call(str(job), JOB, "Wait", "d", [600.0])
        t_wait = time.perf_counter()
        t_sig = await self.until_completed(str(job))
        if not ended:
            raise RuntimeError("the update did not end")
        await self.wait_ok(str(job))
        return t_sig - t0, t_wait - t0


def _change(path: str, rng: random.Random, nchunks: int, chunk: int, k: int) -> list[int]:
    """Write k random chunks of the served master file, durably."""
    changed = sorted(rng.sample(range(nchunks), k))
    fd = os.open(path, os.O_WRONLY)
    try:
        for c in changed:
            os.pwrite(fd, os.urandom(chunk), c * chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return changed


async def _rounds(addr: str, vols: Path, size: int, chunk: int, reps: int, cold: bool,
                  rsync: bool, seed: int) -> Samples:
    b = await Bus.connect(addr)
    deadline = time.monotonic() + 300   # until ptcopyd owns its name (slow on a busy host)
    while True:
        (has,) = await b.call("/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner",
                              "s", [NAME], destination="org.freedesktop.DBus")
        if has:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("ptcopyd did not take its bus name in 300 s")
        await asyncio.sleep(0.05)
    m, s, bm, r = (str(vols / x) for x in ("m", "s", "b", "r"))
    set_path, job = await b.call(ROOT, NAME + ".Manager", "CreateSet", "sssssa{sv}",
                                 ["bench", "independent", m, s, bm,
                                  {"loop": Variant("b", False),
                                   "chunk_size": Variant("u", chunk)}])
    await b.wait_ok(str(job))
    props = await b.call(str(set_path), "org.freedesktop.DBus.Properties", "Get", "ss",
                         [NAME + ".IISet", "MasterDevice"])
    served = props[0].value  # type: ignore[attr-defined]
    nchunks = size // chunk
    k = max(1, nchunks // 100)
    out = Samples(changed=k, chunks=nchunks)
    rng = random.Random(seed)
    if rsync:
        copy_file(Path(m), Path(r))
    for _ in range(reps):
        _change(served, rng, nchunks, chunk, k)
        if cold:
            drop_caches()
        ts, tw = await b.timed_update(str(set_path))
        out.update_signal.append(ts)
        out.update_wait.append(tw)
        ts, tw = await b.timed_update(str(set_path))   # nothing changed since
        out.noop_signal.append(ts)
        out.noop_wait.append(tw)
        if rsync:
            if cold:
                drop_caches()
            t0 = time.perf_counter()
            run("rsync", "--inplace", "--no-whole-file", "--ignore-times", m, r)
            fdatasync_path(Path(r))
            out.rsync.append(time.perf_counter() - t0)
    b.bus.disconnect()
    return out


def measure_update(work_dir: Path, *, size: int = 1 << 30, chunk: int = 32768, reps: int = 5,
                   cold: bool = True, rsync: bool = True, seed: int = 13,
                   repo: str = REPO) -> Samples:
    """Rounds of: 1 % of the chunks changed, update through ptcopyd, an update with nothing to
    copy, and rsync of the same change; every file lives under ``work_dir`` (a real disk).
    ``repo``: the checkout whose ptcopyd runs (another one for a before/after comparison)."""
    work = Path(tempfile.mkdtemp(prefix="ptcopy-bench-jobs-", dir=work_dir))
    try:
        vols = work / "vols"
        vols.mkdir()
        fill_random(vols / "m", size)
        with open(vols / "s", "wb") as f:
            f.truncate(size)
        with open(vols / "b", "wb") as f:
            f.truncate(max(1 << 20, size // chunk // 4))
        with daemon(work, vols, repo=repo) as addr:
            return asyncio.run(_rounds(addr, vols, size, chunk, reps, cold, rsync, seed))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warm", action="store_true", help="keep the page cache between steps")
    ap.add_argument("--no-rsync", action="store_true")
    ap.add_argument("--dir", default="/var/tmp", help="where the volume files go (a real disk)")
    ap.add_argument("--repo", default=REPO, help="run ptcopyd from this checkout (its engine "
                    "built in place), e.g. an older commit for a before/after comparison")
    a = ap.parse_args()
    res = measure_update(Path(a.dir), size=a.size_mib << 20, reps=a.reps, cold=not a.warm,
                         rsync=not a.no_rsync, repo=os.path.abspath(a.repo))
    print(f"{res.changed} of {res.chunks} chunks changed per round, {a.reps} rounds, "
          f"{'warm' if a.warm else 'cold'} cache; medians (all samples in ms):")
    for key, ms in res.summary().items():
        samples = " ".join(f"{x * 1000:.1f}" for x in getattr(res, key))
        print(f"  {key:14s} {ms:9.1f} ms   [{samples}]")
    if res.rsync and res.update_signal:
        print(f"  rsync / update (signal): {median(res.rsync) / median(res.update_signal):.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
