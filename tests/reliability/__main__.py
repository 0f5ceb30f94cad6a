#!/usr/bin/env python3
"""Reliability figures for docs/RELIABILITY.md: run the torture, count, report.

    .venv/bin/python -m tests.reliability --quick           # CI (~3 min)
    .venv/bin/python -m tests.reliability --json out.json   # full mode (~1 h)
    .venv/bin/python -m tests.reliability --only sigkill --sigkill-runs 20
    .venv/bin/python -m tests.reliability --render out.json [more.json]  # table

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
import json
import os
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tests.helpers.bus import PrivateBus
from tests.reliability import figure
from tests.reliability.faults import fig_faults
from tests.reliability.figure import REPO, Figure, commit, say
from tests.reliability.fuzz import fig_fuzz
from tests.reliability.load import fig_load
from tests.reliability.render import render
from tests.reliability.sigkill import fig_sigkill
from tests.reliability.vm import fig_vm

FIGURES = ("sigkill", "vm", "faults", "fuzz", "load")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--render"]:
        print(render([Path(a) for a in argv[1:]]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m tests.reliability",
                                 description=__doc__.split("\n")[0])
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
    figure.FINDINGS = args.findings
    figure.REPRO = (f".venv/bin/python -m tests.reliability {'--quick ' if q else ''}"
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
           "command": " ".join([".venv/bin/python", "-m", "tests.reliability", *argv]),
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
