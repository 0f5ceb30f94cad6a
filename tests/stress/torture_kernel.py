#!/usr/bin/env python3
"""Torture the kernel data path's crash safety: the power-off scenario of
tests/vm/test_kernel_poweroff.py (tests/vm/poweroff.py, tests/vm/guest/poweroff_scenario.py),
many times over. Each run boots the VM tier's guest on fresh disk images, loads both sets with
writes, cuts the power (qemu killed) a random delay after the load started, boots again,
reassembles, updates and checks that no chunk changed before the crash was missed.

    .venv/bin/python -m tests.stress.torture_kernel                      # 50 runs
    .venv/bin/python -m tests.stress.torture_kernel 200 --seed 7
    .venv/bin/python -m tests.stress.torture_kernel 20 --variants update,cycles --delay 0.1,6
    .venv/bin/python -m tests.stress.torture_kernel 5 --control -x       # with the control boot

Runs go round robin over --variants (default: all of them; see poweroff_scenario.py); each has
its own data seed and a cut delay drawn uniformly from --delay. A line per run, then a summary:
runs, failures by kind, chunks copied at recovery (total, min, max), cuts that interrupted a
copy, wall time. A failed run keeps its consoles and JSON under build/vm-results/poweroff-*
(--keep-disks: its disk images too, ~130 MiB). Exit status 1 when a run failed. A run takes
25-45 s on 2 cores under TCG (two boots; --control adds a third). Needs the VM tier's kernel
cache (scripts/setup.sh).

A stress test, not part of the pytest suite (pytest collects test_*.py only): run it by
hand as above, from the repository's root.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.vm import poweroff, vmkit

REPO = Path(__file__).resolve().parents[2]


def _kind(problem: str) -> str:
    """A failure's kind for the summary: its words up to the first colon."""
    return problem.split(":", 1)[0][:60]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="?", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None, help="base seed (default: random)")
    ap.add_argument("--variants", default=",".join(poweroff.VARIANTS),
                    help="comma-separated, run round robin (default: all)")
    ap.add_argument("--delay", default="0.2,6",
                    help="range of the cut's delay after the marker, seconds: MIN,MAX")
    ap.add_argument("--control", action="store_true",
                    help="every run also boots the control (chunks written behind era's back "
                         "must be reported lost)")
    ap.add_argument("--keep-disks", action="store_true",
                    help="a failed run keeps its disk images with its consoles")
    ap.add_argument("-x", "--stop-on-failure", action="store_true")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(poweroff.VARIANTS))
    if unknown or not variants:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(poweroff.VARIANTS)}")
    lo, hi = (float(x) for x in args.delay.split(","))
    base = args.seed if args.seed is not None else random.randrange(1 << 20)
    rng = random.Random(base)
    try:
        vmkit.prepare()
    except vmkit.VmUnavailable as exc:
        print(f"torture_kernel: {exc}", file=sys.stderr)
        return 2

    print(f"torture_kernel: {args.runs} runs, base seed {base}, variants {','.join(variants)}, "
          f"cut {lo:g}-{hi:g} s after the marker", flush=True)
    t0 = time.monotonic()
    failures: list[tuple[poweroff.Run, list[str]]] = []
    kinds: Counter[str] = Counter()
    copied: list[int] = []
    interrupted = 0
    done = 0
    try:
        for i in range(args.runs):
            sc = poweroff.Scenario(variants[i % len(variants)], rng.randrange(1 << 30),
                                   round(rng.uniform(lo, hi), 2))
            with tempfile.TemporaryDirectory(prefix="ptcopy-torture-") as tmp:
                run = poweroff.run(sc, Path(tmp), control=args.control)
                problems = run.problems()
                done += 1
                r = run.result or {}
                if isinstance(r.get("chunks_copied"), int):
                    copied.append(r["chunks_copied"])
                interrupted += bool(r.get("ind_incomplete_at_open"))
                status = "ok" if not problems else "FAILED"
                print(f"[{i + 1}/{args.runs}] {status}: {run.summary()}", flush=True)
                if not problems:
                    run.cleanup()
                    continue
                failures.append((run, problems))
                kinds.update({_kind(p) for p in problems})
                for p in problems:
                    print(f"    - {p}", flush=True)
                print(f"    kept in {run.results}", flush=True)
                if args.keep_disks:
                    for d in run.disks:
                        shutil.move(d, run.results / d.name)
            if failures and args.stop_on_failure:
                break
    except KeyboardInterrupt:
        print("interrupted", flush=True)

    wall = time.monotonic() - t0
    print(f"\nsummary: {done} runs, {len(failures)} failed, base seed {base}, "
          f"{wall:.0f} s ({wall / max(done, 1):.1f} s a run)")
    if copied:
        print(f"chunks copied at recovery: {sum(copied)} in all, {min(copied)} min, "
              f"{max(copied)} max, {sum(copied) / len(copied):.0f} mean")
    print(f"cuts that interrupted a copy of pi: {interrupted} of {done}")
    for kind, n in kinds.most_common():
        print(f"  {n} run(s): {kind}")
    for run, _ in failures:
        print(f"  failed: {run.scenario} -> {run.results}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
