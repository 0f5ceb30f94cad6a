#!/usr/bin/env python3
"""Remote hosts (issue 14): what ``--host`` costs, and whether asking every host costs more than
asking one.

    sudo .venv/bin/python bench/run_remote.py [--hosts 16] [--rounds 7] [--write-doc]

The hosts are the test tier's (tests/remote/testhosts.py): network namespaces on this machine,
each with its own sshd, bus and ptcopyd (no data path) holding two sets. Every figure is the
wall time of a whole command, as a user runs it (a new process each time, Python's start-up
included), median of the rounds:
- ``ptcopy status`` on the host's own bus (local), ``ptcopy --host H status``, and what a user
  would otherwise run, ``ssh H ptcopy status`` (the same ptcopy, run there);
- ``ptcopy status --all-hosts`` from a host with 2 and with N-1 others registered, against one
  ``--host`` call (the hosts are asked in parallel, so this should stay close to one);
- a group spanning 3 hosts updated with ``ptcopy --host host1 group update``: the freeze window
  the coordinator reports (first Hold sent to last Release answered: no member took its point in
  time before every member was frozen) and the longest time one host's writes were held.
Loopback veth links have no real latency: on a network each SSH round trip adds its RTT.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import DocBlock, log, md_table, median, prepare_root_run, run_main

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:   # tests.remote: the test tier's hosts
    sys.path.insert(0, str(REPO))

from tests.remote.testhosts import TestHost, TestHosts, start_hosts  # noqa: E402

DOC = REPO / "docs" / "PERFORMANCE.md"
HEADING = "## Remote hosts"
BLOCK = DocBlock("bench/run_remote.py", HEADING, f"""{HEADING}

Measured by `bench/run_remote.py`; the table is its output (`--write-doc`).

{{markers}}
""")
PTCOPY = str(Path(sys.executable).parent / "ptcopy")


def timed_cmd(argv: list[str], env: dict[str, str], cpu: list[float] | None = None) -> float:
    """Wall time of one command; ``cpu`` gets the CPU time it and its children (the ssh
    clients) used: the client's share, the rest being the hosts' sshd and ptcopyd."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                       stdin=subprocess.DEVNULL, timeout=120)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    if cpu is not None:
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return dt


def enable(hosts: TestHosts, h: TestHost, name: str, kind: str, size: int) -> None:
    """A set NAME of KIND on fresh files of SIZE in the shared directory, made on H's bus."""
    vols = []
    for role, n in (("m", size), ("s", size), ("b", 256 << 10)):
        p = hosts.shared_dir / f"{name}-{role}.img"
        with p.open("wb") as f:
            f.truncate(n)
        vols.append(str(p))
    subprocess.run([PTCOPY, "--bus", h.bus_address, "enable", f"--{kind}", *vols, "--name",
                    name, "--no-loop", "--wait", "--quiet"], check=True, capture_output=True,
                   timeout=120)


def seed(hosts: TestHosts) -> None:
    """Two dependent sets on every host, created on its own bus."""
    for h in hosts:
        for i in range(2):
            enable(hosts, h, f"{h.name}-set{i}", "dependent", 4 << 20)


def register(home: TestHost, others: list[TestHost]) -> None:
    for h in others:
        subprocess.run([PTCOPY, "--bus", home.bus_address, "hosts", "add", h.name, h.name,
                        "--quiet"], check=True, capture_output=True, timeout=60)


def span_rows(hosts: TestHosts, rounds: int) -> list[list[str]]:
    """A group of one independent set on each of hosts 1-3, spanning the three."""
    three = list(hosts)[:3]
    for h in three:
        enable(hosts, h, f"span-{h.name}", "independent", 64 << 20)
        spans = [a for o in three if o is not h for a in ("--spans", o.name)]
        subprocess.run([PTCOPY, "--bus", h.bus_address, "group", "create", "span",
                        f"span-{h.name}", *spans, "--quiet"], check=True, capture_output=True,
                       timeout=60)
    argv = [PTCOPY, "--host", three[0].name, "--json", "group", "update", "span", "--to",
            "shadow", "--wait"]
    windows, held = [], []
    for _ in range(rounds + 1):
        r = subprocess.run(argv, env=hosts.env(), capture_output=True, text=True, timeout=120,
                           check=True, stdin=subprocess.DEVNULL)
        res = json.loads(r.stdout)
        windows.append(res["freeze_window_sec"])
        held.append(max(x["frozen_usec"] for x in res["hosts"]) / 1e6)
    windows, held = windows[1:], held[1:]   # the first: SSH handshakes, cold caches
    log(f"span: window {median(windows) * 1000:.1f} ms, held {median(held) * 1000:.1f} ms")
    return [["group over 3 hosts: freeze window (coordinator)",
             f"{median(windows) * 1000:.1f} ms",
             f"{min(windows) * 1000:.1f}-{max(windows) * 1000:.1f} ms", "-", "-"],
            ["group over 3 hosts: longest hold on one host", f"{median(held) * 1000:.1f} ms",
             f"{min(held) * 1000:.1f}-{max(held) * 1000:.1f} ms", "-", "-"]]


def measure(hosts: TestHosts, rounds: int) -> list[list[str]]:
    env = hosts.env()
    h1, h2 = hosts[0], hosts[1]
    ssh = h2.ssh_argv(f"{PTCOPY} status")   # the session finds the host's bus as ptcopy would
    cases: list[tuple[str, list[str]]] = [
        ("`ptcopy status`, local bus", [PTCOPY, "--bus", h2.bus_address, "status"]),
        ("`ptcopy --host H status`", [PTCOPY, "--host", h2.name, "status"]),
        ("`ssh H ptcopy status`", ssh),
    ]
    register(h1, list(hosts)[1:3])
    cases.append(("`ptcopy status --all-hosts`, 3 hosts",
                  [PTCOPY, "--bus", h1.bus_address, "status", "--all-hosts"]))
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    cpu: dict[str, list[float]] = {name: [] for name, _ in cases}
    for name, argv in cases:
        timed_cmd(argv, env)   # warm: page cache, first SSH handshakes
        for _ in range(rounds):
            times[name].append(timed_cmd(argv, env, cpu[name]))
        log(f"{name}: {median(times[name]) * 1000:.0f} ms")
    register(h1, list(hosts)[3:])
    name = f"`ptcopy status --all-hosts`, {len(hosts)} hosts"
    argv = [PTCOPY, "--bus", h1.bus_address, "status", "--all-hosts"]
    timed_cmd(argv, env)
    cpu[name] = []
    times[name] = [timed_cmd(argv, env, cpu[name]) for _ in range(rounds)]
    log(f"{name}: {median(times[name]) * 1000:.0f} ms")
    # the same with the classic key exchange instead of OpenSSH 9's post-quantum default
    # (sntrup761x25519), which costs each ssh client most of its CPU
    classic = hosts.client_dir / "ssh_config-classic-kex"
    classic.write_text(hosts.ssh_config.read_text() + "\nHost *\n  KexAlgorithms "
                       "curve25519-sha256\n")
    env_classic = hosts.env(classic)
    name = f"`ptcopy status --all-hosts`, {len(hosts)} hosts, KexAlgorithms curve25519-sha256"
    timed_cmd(argv, env_classic)
    cpu[name] = []
    times[name] = [timed_cmd(argv, env_classic, cpu[name]) for _ in range(rounds)]
    log(f"{name}: {median(times[name]) * 1000:.0f} ms")
    one = median(times["`ptcopy --host H status`"])
    rows = []
    for name, ts in times.items():
        rows.append([name, f"{median(ts) * 1000:.0f} ms",
                     f"{min(ts) * 1000:.0f}-{max(ts) * 1000:.0f} ms",
                     f"{median(ts) / one:.2f}x", f"{median(cpu[name]) * 1000:.0f} ms"])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    prepare_root_run("network namespaces, sshd and ptcopyd", ["sshd", "ssh", "ip"], setup=False)
    if args.hosts < 4:
        raise SystemExit("--hosts must be at least 4")
    log(f"starting {args.hosts} hosts")
    hosts = start_hosts(args.hosts, data_path="none")
    try:
        seed(hosts)
        rows = measure(hosts, args.rounds) + span_rows(hosts, args.rounds)
    finally:
        hosts.stop(check_log=False)
    table = md_table(["command", "median", "range", "vs one --host call",
                      "client CPU (ptcopy + ssh)"], rows)
    text = (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, {args.hosts} hosts on veth "
            f"links (no added latency), {args.rounds} rounds, two sets per host; each figure "
            f"is a whole command (a new process).\n\n{table}\n")
    print(text)
    if args.write_doc:
        BLOCK.write(DOC, text)
    return 0


if __name__ == "__main__":
    run_main(main)
