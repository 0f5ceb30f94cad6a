#!/usr/bin/env python3
"""ptcopyd at scale: create N small file-backed sets over D-Bus, then measure
GetManagedObjects latency, Properties.GetAll calls per second and the daemon's RSS.

    sudo .venv/bin/python bench/run_daemon.py [--sets 1000] [--data-path none]
        [--volumes used] [--profile FILE] [--write-doc]

Targets (issues 4 and 13): GetManagedObjects < 50 ms and RSS < 150 MiB with 1,000 sets,
CreateSet <= 5 ms. The daemon runs on a private dbus-daemon; by default with no data path and
only the volumes in use exported (the setting issue 13 measures); with --data-path userspace
the served volumes are on FUSE but without loop devices (option loop=false: a host with
thousands of sets does not want thousands of loops). --profile runs the daemon under cProfile
and writes its statistics to FILE (the numbers are then not comparable).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import DocBlock, md_table, median, proc_cpu_s, rss_mib
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = Path(REPO) / "docs" / "PERFORMANCE.md"
HEADING = "## Daemon (ptcopyd) at scale"
BLOCK = DocBlock("bench/run_daemon.py", HEADING, f"""{HEADING}

Measured by `bench/run_daemon.py`; the table below is its output (`--write-doc`).

{{markers}}
""")
BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={sock}</listen><auth>EXTERNAL</auth>
<limit name="max_replies_per_connection">100000</limit>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/>
<allow receive_sender="*"/>
</policy></busconfig>"""
NAME, ROOT = "org.ptcopy.Imaging1", "/org/ptcopy/Imaging1"


async def call(bus: MessageBus, path: str, iface: str, member: str, sig: str = "",
               body: list[object] | None = None) -> Message:
    reply = await asyncio.wait_for(bus.call(Message(
        destination=NAME, path=path, interface=iface, member=member, signature=sig,
        body=body or [])), 120)
    if reply.message_type is MessageType.ERROR:
        raise RuntimeError(f"{member}: {reply.error_name}: {reply.body}")
    return reply


async def measure(sock: str, vols: str, n: int, pid: int) -> dict[str, float]:
    bus = await MessageBus(bus_address=f"unix:path={sock}").connect()
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    cpu0 = proc_cpu_s(pid)   # the daemon's CPU time: what load on the machine does not skew
    per_set = []
    for i in range(n):
        base = os.path.join(vols, f"s{i}")
        t = time.perf_counter()
        await call(bus, ROOT, NAME + ".Manager", "CreateSet", "sssssa{sv}",
                   [f"set{i}", "dependent", base + ".m", base + ".s", base + ".b",
                    {"loop": Variant("b", False), "chunk_size": Variant("u", 65536)}])
        per_set.append(time.perf_counter() - t)
    out["create_s"] = time.perf_counter() - t0
    out["create_cpu_ms"] = (proc_cpu_s(pid) - cpu0) / n * 1000
    await asyncio.sleep(3)   # the first sweep after the sets (it would land in the calls)
    out["create_med_ms"] = median(per_set) * 1000
    out["create_last_ms"] = median(per_set[-max(1, n // 10):]) * 1000
    lat = []
    cpu0 = proc_cpu_s(pid)
    for _ in range(7):
        t = time.perf_counter()
        r = await call(bus, ROOT, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
        lat.append(time.perf_counter() - t)
    out["gmo_cpu_ms"] = (proc_cpu_s(pid) - cpu0) / 7 * 1000
    out["objects"] = len(r.body[0])
    out["gmo_ms"] = median(lat) * 1000
    # the same call from a C client (systemd's busctl), process start included
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={sock}")
    lat_c = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run(["busctl", "--system", "call", NAME, ROOT,
                        "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        lat_c.append(time.perf_counter() - t)
    out["gmo_busctl_ms"] = median(lat_c) * 1000
    lat_q = []   # the same reply fetched and not printed: what printing costs busctl
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run(["busctl", "--system", "--quiet", "call", NAME, ROOT,
                        "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        lat_q.append(time.perf_counter() - t)
    out["gmo_busctl_quiet_ms"] = median(lat_q) * 1000
    lat_p = []   # the floor: busctl's start and a trivial call
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run(["busctl", "--system", "call", NAME, ROOT,
                        "org.freedesktop.DBus.Peer", "Ping"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        lat_p.append(time.perf_counter() - t)
    out["ping_busctl_ms"] = median(lat_p) * 1000
    first = f"{ROOT}/sets/" + sorted(p.rsplit("/", 1)[1] for p in r.body[0]
                                     if p.startswith(ROOT + "/sets/"))[0]
    k, t = 0, time.perf_counter()
    while time.perf_counter() - t < 3:
        await asyncio.gather(*[call(bus, first, "org.freedesktop.DBus.Properties", "GetAll",
                                    "s", [NAME + ".IISet"]) for _ in range(20)])
        k += 20
    out["getall_per_s"] = k / (time.perf_counter() - t)
    bus.disconnect()
    return out


def wait_for_name(sock: str, daemon: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until ptcopyd owns its bus name (start-up takes seconds on a busy machine)."""
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={sock}")
    deadline = time.monotonic() + timeout
    while subprocess.run(["busctl", "--system", "status", NAME], env=env, check=False,
                         capture_output=True).returncode != 0:
        if daemon.poll() is not None:
            raise RuntimeError(f"ptcopyd exited with {daemon.returncode} at start")
        if time.monotonic() > deadline:
            raise RuntimeError(f"ptcopyd did not take {NAME} in {timeout:g} s")
        time.sleep(0.1)


def run_sets(n: int, daemon_args: Sequence[str] = (), source: str = REPO,
             profile: str | None = None) -> dict[str, float]:
    """Start a private bus and ptcopyd from ``source`` (``daemon_args`` added to its command
    line; under cProfile into ``profile`` if given), create ``n`` sets, measure (see
    :func:`measure`), stop and remove everything; the figures, RSS too."""
    work = tempfile.mkdtemp(prefix="ptcopy-bench-daemon-", dir="/var/tmp")
    sock = os.path.join(work, "bus.sock")
    vols = os.path.join(work, "vols")
    os.makedirs(vols)
    for i in range(n):
        for ext, size in ((".m", 4 << 20), (".s", 4 << 20), (".b", 64 << 10)):
            with open(os.path.join(vols, f"s{i}{ext}"), "wb") as f:
                f.truncate(size)
    conf = os.path.join(work, "bus.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(BUS_CONF.format(sock=sock))
    dbus = subprocess.Popen(["dbus-daemon", "--config-file", conf, "--nofork"])
    daemon = None
    try:
        while not os.path.exists(sock):
            time.sleep(0.05)
        prof = ["-m", "cProfile", "-o", os.path.abspath(profile)] if profile else []
        daemon = subprocess.Popen([sys.executable, *prof, "-m", "ptcopy.daemon.main", "--bus",
                                   f"unix:path={sock}", "--state-dir", f"{work}/state",
                                   "--run-dir", f"{work}/run", "--file-volumes", vols,
                                   "--log-level", "warning", *daemon_args], cwd=source)
        wait_for_name(sock, daemon)
        idle = rss_mib(daemon.pid)
        res = asyncio.run(measure(sock, vols, n, daemon.pid))
        res["rss_mib"] = rss_mib(daemon.pid)
        res["rss_idle_mib"] = idle
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(120)
        dbus.terminate()
        dbus.wait()
        shutil.rmtree(work, ignore_errors=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", type=int, default=1000)
    ap.add_argument("--data-path", choices=["auto", "kernel", "userspace", "none"],
                    default="none", help="the daemon's --data-path (default: %(default)s)")
    ap.add_argument("--volumes", choices=["host", "used"], default="used",
                    help="the daemon's --volumes (default: %(default)s)")
    ap.add_argument("--profile", metavar="FILE",
                    help="run the daemon under cProfile, statistics to FILE")
    ap.add_argument("--source", metavar="DIR", default=REPO,
                    help="run the daemon from this tree (holding ptcopy/ with its built "
                         "engine), to compare a change with what came before in one sitting")
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    res = run_sets(args.sets, ["--data-path", args.data_path, "--volumes", args.volumes],
                   args.source, args.profile)
    rows = [
        ("time to create the sets (CreateSet, one after another)",
         f"{res['create_s']:.1f} s ({res['create_s'] / args.sets * 1000:.1f} ms per set)", "-",
         "-"),
        ("CreateSet latency, median over all sets (over the last tenth)",
         f"{res['create_med_ms']:.1f} ms ({res['create_last_ms']:.1f} ms)", "<= 5 ms",
         "yes" if res["create_last_ms"] <= 5 else "no"),
        ("daemon CPU time per CreateSet (all its threads)", f"{res['create_cpu_ms']:.1f} ms",
         "-", "-"),
        (f"GetManagedObjects latency, dbus-fast client ({int(res['objects'])} objects)",
         f"{res['gmo_ms']:.1f} ms", "< 50 ms", "yes" if res["gmo_ms"] < 50 else "no"),
        ("daemon CPU time per GetManagedObjects", f"{res['gmo_cpu_ms']:.1f} ms", "-", "-"),
        ("GetManagedObjects latency, busctl (process start included)",
         f"{res['gmo_busctl_ms']:.1f} ms", "< 50 ms", "yes" if res["gmo_busctl_ms"] < 50 else "no"),
        ("the same with busctl --quiet (the reply fetched, not printed)",
         f"{res['gmo_busctl_quiet_ms']:.1f} ms", "-", "-"),
        ("busctl Ping, for comparison (its start and a trivial call)",
         f"{res['ping_busctl_ms']:.1f} ms", "-", "-"),
        ("daemon RSS with the sets", f"{res['rss_mib']:.0f} MiB (idle {res['rss_idle_mib']:.0f})",
         "< 150 MiB", "yes" if res["rss_mib"] < 150 else "no"),
        ("Properties.GetAll calls per second (20 in flight)", f"{res['getall_per_s']:.0f}/s",
         "-", "-"),
    ]
    text = (f"### ptcopyd with {args.sets} sets (--data-path {args.data_path} "
            f"--volumes {args.volumes})\n\n") + md_table(
        ["measure", "result", "target", "met"], rows) + "\n"
    print(text)
    if args.write_doc:
        BLOCK.write(DOC, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
