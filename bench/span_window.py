#!/usr/bin/env python3
"""The freeze window of a group that spans hosts, with local ptcopyd as the hosts.

    sudo .venv/bin/python bench/span_window.py [--hosts 3] [--rounds 20] [--size-mib 16]

Each "host" is a ptcopyd on its own private bus (userspace data path) with one independent
set in a group; ``ptcopy.cli.span.span_point_in_time`` takes the group's point in time on all
of them (Hold everywhere, one check, Release everywhere) while a writer dirties every master.
Prints the whole window (first Hold sent to last Release answered) and each host's frozen time
(the engine's gates held), median and worst. Local buses have no network latency: over SSH
each phase adds a round trip per host, in parallel. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ptcopy.cli._client import Client  # noqa: E402
from ptcopy.cli.span import span_point_in_time  # noqa: E402
from tests.helpers.blockio import write_dev  # noqa: E402
from tests.helpers.bus import PrivateBus  # noqa: E402
from tests.helpers.daemon import Ptcopyd, finish  # noqa: E402

MiB = 1 << 20


async def measure(n: int, rounds: int, size: int, base: Path) -> None:
    buses, daemons, clients, members = [], [], [], []
    stop = threading.Event()
    try:
        for i in range(n):
            bus = PrivateBus.start()
            buses.append(bus)
            d = Ptcopyd(bus, base / f"host{i}")
            daemons.append(d)
            d.start()
            c = Client(bus.address, 60)
            await c.__aenter__()
            clients.append(c)
            m, s, b = d.set_volumes(size, kind="independent")
            path, job = await c.create_set(f"v{i}", "independent", m, s, b, {})
            if job != "/":
                await c.job_wait(job, 600)
            group = await c.create_group("span", [path])
            members.append((f"host{i}", c, group))
        devs = [(await c.set_info((await c.group_info(g)).sets[0])).master_device
                for _, c, g in members]

        def writer() -> None:
            k = 0
            while not stop.is_set():
                write_dev(devs[k % n], (k * 4096) % size, os.urandom(4096))
                k += 1

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        windows, frozen = [], []
        for _ in range(rounds):
            res = await span_point_in_time(members, "update", "shadow", 10)
            windows.append(res.window * 1e3)
            frozen += [o.frozen_usec / 1e3 for o in res.hosts]
            for (_, c, _), o in zip(members, res.hosts, strict=True):
                if o.job != "/":
                    await c.job_wait(o.job, 600)
        stop.set()
        t.join()
        print(f"{n} hosts, {rounds} rounds, writer on every master")
        print(f"  freeze window (first Hold sent -> last Release answered): median "
              f"{statistics.median(windows):.1f} ms, worst {max(windows):.1f} ms")
        print(f"  per host, writes frozen (engine gates): median "
              f"{statistics.median(frozen):.1f} ms, worst {max(frozen):.1f} ms")
    finally:
        stop.set()
        for c in clients:
            await c.__aexit__(None, None, None)
        finish(daemons, check_log=False)
        for bus in buses:
            bus.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--size-mib", type=int, default=16)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("span_window.py: run as root (ptcopyd serves loop devices over FUSE)")
    base = Path(tempfile.mkdtemp(prefix="ptcopy-span-"))
    try:
        asyncio.run(measure(a.hosts, a.rounds, a.size_mib * MiB, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
