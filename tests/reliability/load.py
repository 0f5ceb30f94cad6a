"""Figure load: many concurrent clients, jobs and writes for a fixed time; ptcopyd's RSS."""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from dbus_fast import MessageType

from tests.helpers.bus import PrivateBus
from tests.helpers.client import Client
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import (
    ERR,
    IJOB,
    ISET,
    MANAGER,
    MIB,
    PROPS,
    ROOT,
)
from tests.reliability.faults import _pwrite_sync
from tests.reliability.figure import BLOCK, REPO, STD, Figure, say
from tests.reliability.fuzz import PROPS_OF
from tests.reliability.sigkill import job_done


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
