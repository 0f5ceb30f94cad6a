#!/usr/bin/env python3
"""Issue 13's table in one run: what users feel through ptcopyd, each row next to its baseline.

    sudo .venv/bin/python bench/run_ops.py --quick            # small sizes, one round: minutes
    sudo .venv/bin/python bench/run_ops.py --out ops.md       # 1 GiB, 3 rounds
    sudo .venv/bin/python bench/run_ops.py --rows 1,2,7       # some rows only

Rows (ratios against the baseline measured in the same run, medians of --reps rounds):

  1 update of a 1 GiB independent set with 1 % of its 32 KiB chunks changed (written through
    the served master device), Update to the job's Completed signal, vs `rsync --inplace
    --no-whole-file --ignore-times` of the same change + fdatasync (target >= 100x faster)
  2 an update with nothing to copy, call to Completed (target <= 10 ms)
  3 copy-on-write first writes through a dependent set's served master vs rewrites of the same
    blocks, fio 1 MiB sequential, O_DIRECT, queue depth 4 (target >= 0.5x)
  4 full copy of 1 GiB, CreateSet to Completed, vs `dd bs=1M iflag=direct oflag=direct` between
    the same volumes (target >= 1.5x dd's speed)
  5 GetManagedObjects with 1,000 sets by busctl, daemon RSS, CreateSet per set (bench/
    run_daemon.py with --data-path none --volumes used; targets < 50 ms, < 150 MiB, <= 5 ms)
  6 1 MiB writes, sequential and random, userspace path vs qemu-storage-daemon's FUSE export
    (bench/run_datapath.py's rig; target >= 1.5x)
  7 group point in time with 16 sets: a writer on each served master (fio, 4 KiB O_DIRECT,
    one in flight, every write's latency logged); the longest write and the p99 from the group
    Update call to its reply, next to the same writers in the second before; the longest time
    no writer on any master completed a write (a freeze of all of them); and the engine's own
    frozen time (pt_group_copy, in process) for context (target < 10 ms)

Rows 1-4 and 7 run through a real ptcopyd (userspace data path) on a private dbus-daemon, with
master, shadow and bitmap volumes as loop devices (direct I/O) over files in --data-dir, which
must be on a disk (not tmpfs). The page cache is dropped before every timed step. The kernel
data path's rows (full copy vs dd in a VM) are bench/run_kernel.py's, not repeated here.
Everything set up (daemon, bus, loop devices, FUSE mounts, files) is removed on any exit.
On the 2-core VM --quick takes 2-4 minutes, the default 15-30 (row 5's 3 x 1,000 CreateSet
calls are most of it).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from common import (
    GiB,
    MiB,
    git,
    loadavg,
    log,
    machine_info,
    mount_of,
    need_space,
    prepare_root_run,
    run_main,
    set_log_name,
    set_sync_scope,
    started_utc,
)
from ops_external import daemon_rows, fuse_rows
from ops_group import GroupRow
from ops_report import Results, render
from ops_rig import OpsRig
from ops_sets import SetRows

REPO = Path(__file__).resolve().parent.parent
ALL_ROWS = (1, 2, 3, 4, 5, 6, 7)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[2:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(map(str, ALL_ROWS)),
                   help="comma-separated rows to measure (default: all)")
    p.add_argument("--reps", type=int, help="rounds per row (default 3; --quick: 1)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes: 64 MiB volumes, 16 MiB group members, 200 sets in row 5, "
                        "1 s fio cells")
    p.add_argument("--size-mib", type=int, help="volume of rows 1-4 and 6 (default 1024)")
    p.add_argument("--group-sets", type=int, default=16, help="sets in row 7's group")
    p.add_argument("--group-size-mib", type=int, help="each group member (default 64)")
    p.add_argument("--sets", type=int, help="row 5's sets (default 1000; --quick: 200)")
    p.add_argument("--runtime", type=float, help="row 6: seconds per fio cell (default 5)")
    p.add_argument("--data-dir", type=Path, default=Path("/var/tmp/ptbench"),
                   help="where the volume files go: a disk, not tmpfs (default %(default)s)")
    p.add_argument("--file-volumes", action="store_true",
                   help="give ptcopyd the volume files themselves, not loop devices over them")
    p.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    p.add_argument("--no-setup", action="store_true", help="do not run bench/setup.sh")
    a = p.parse_args()
    try:
        a.rows = sorted({int(x) for x in a.rows.split(",") if x.strip()})
    except ValueError:
        p.error("--rows takes numbers, e.g. 1,2,7")
    if not a.rows or any(r not in ALL_ROWS for r in a.rows):
        p.error(f"--rows: pick from {ALL_ROWS}")
    a.reps = a.reps or (1 if a.quick else 3)
    a.size_mib = a.size_mib or (64 if a.quick else 1024)
    a.group_size_mib = a.group_size_mib or (16 if a.quick else 64)
    a.runtime = a.runtime or (1.0 if a.quick else 5.0)
    a.sets = a.sets or (200 if a.quick else 1000)
    if a.size_mib < 8 or a.size_mib % 4 or a.group_size_mib < 4:
        p.error("--size-mib: a multiple of 4, at least 8; --group-size-mib at least 4")
    return a


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def through_daemon(args: argparse.Namespace, res: Results) -> None:
    """Rows 1-4 and 7 on one ptcopyd; everything it used torn down before returning."""
    rows = set(args.rows)
    rig = OpsRig(args.data_dir, loops=not args.file_volumes)
    failures: list[str] = []
    try:
        rig.start()
        if rows & {1, 2, 3, 4}:
            sr = SetRows(rig, args.size_mib * MiB, rows, args.reps)
            sr.prepare()
            sr.measure()
            res.sets = sr.res
        if 7 in rows:
            g = GroupRow(rig, args.group_sets, args.group_size_mib * MiB, args.reps)
            g.prepare()
            g.measure()
            res.group = g.res
    finally:
        failures = rig.cleanup()
        for f in failures:
            log(f"CLEANUP PROBLEM: {f}")
    if failures:
        raise SystemExit("clean-up failed (see above)")


def main() -> int:
    set_log_name("ops")
    args = parse_args()
    prepare_root_run("loop devices, FUSE, ptcopyd and dropping caches",
                     ("fio", "rsync", "dd", "busctl", "dbus-daemon", "losetup",
                      "qemu-storage-daemon"), not args.no_setup)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    fstype = mount_of(args.data_dir)[0]
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(f"{args.data_dir} is on {fstype}: pick a directory on a disk")
    size, gsize = args.size_mib * MiB, args.group_size_mib * MiB
    need_space(args.data_dir, max(4 * size * bool(set(args.rows) & {1, 2, 3, 4})
                                  + 2 * args.group_sets * gsize * (7 in args.rows),
                                  2 * size * (6 in args.rows)) + GiB // 4)
    signal.signal(signal.SIGTERM, interrupted)
    # every write measured here lands in the data directory or goes to a device with O_DIRECT
    set_sync_scope([args.data_dir])

    started, load0 = started_utc(), loadavg()
    res = Results(group_sets=args.group_sets, size=size)
    failed: list[str] = []
    if set(args.rows) & {1, 2, 3, 4, 7}:
        attempt(failed, "rows 1-4, 7", lambda: through_daemon(args, res))
    if 5 in args.rows:
        log(f"row 5: {args.sets} sets on ptcopyd --data-path none --volumes used")
        attempt(failed, "row 5", lambda: setattr(res, "daemon", daemon_rows(args.sets,
                                                                            args.reps)))
    if 6 in args.rows:
        log(f"row 6: userspace path vs qemu-storage-daemon, {args.size_mib} MiB")
        attempt(failed, "row 6", lambda: setattr(res, "fuse", fuse_rows(
            args.data_dir, args.size_mib, args.runtime, args.reps)))
    head = [f"Run {started} with `bench/run_ops.py {' '.join(sys.argv[1:])}` at "
            f"{git(REPO, 'rev-parse', '--short', 'HEAD') or '?'}; {args.reps} round(s), medians. "
            f"Load average before {load0}, after {loadavg()}.",
            "", *[f"- {m}" for m in machine_info(args.data_dir)]]
    text = render(res, head) + "".join(f"- **FAILED**: {f}\n" for f in failed)
    print(text)
    if args.out:
        args.out.write_text(text)
        log(f"wrote {args.out}")
    return 1 if failed else 0


def attempt(failed: list[str], what: str, fn: Callable[[], object]) -> None:
    """Measure, or note why not and go on with the other rows (their clean-up has run)."""
    try:
        fn()
    except (Exception, SystemExit) as e:
        log(f"{what} failed: {e}")
        failed.append(f"{what}: {e}")


if __name__ == "__main__":
    run_main(main)
