#!/usr/bin/env python3
"""ptcopy's userspace data path (FUSE + loop) against the raw loop device and qemu's FUSE export.

    sudo .venv/bin/python bench/run_datapath.py                  # 1 GiB volume, 5 s per cell
    sudo .venv/bin/python bench/run_datapath.py --quick          # 64 MiB, 1 s: a smoke test
    sudo .venv/bin/python bench/run_datapath.py --write-doc      # also update docs/PERFORMANCE.md

fio (``--direct=1 --ioengine=libaio --iodepth=16``) runs the same six workloads (sequential
and random reads and writes, 4 KiB and 1 MiB) against block devices that all sit over the same
backing file, one configuration after the other:

  raw loop      ``losetup --direct-io=on`` straight on the master file
  raw loop, buffered   the same with ``--direct-io=off`` (context: the page cache path)
  qsd           ``qemu-storage-daemon --export type=fuse`` of the master file, a loop device
                (direct I/O when the kernel allows it) over the exported file
  ptcopy plain  an INDEPENDENT set whose initial copy finished and whose chunks were all written
                once (steady state: no write sets a bit), served by ``UserspacePath.serve``;
                fio drives ``Served.master_device``
  COW           a DEPENDENT set right after a new point in time: every write is the first one to
                its chunk since then, so each one copies the chunk to the shadow first (size
                based passes over chunks not written yet)
  dep. rewrite  the same DEPENDENT set once every chunk has been written after the point in time

The page cache is written back and dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``) before
every measurement. Every loop device, FUSE mount and qemu-storage-daemon started here is removed
in ``finally`` blocks, and the run fails if any is left behind. Needs root; installs fio and qemu
with ``bench/setup.sh`` (unless ``--no-setup``). The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
from pathlib import Path

from common import (
    KiB,
    MiB,
    drop_caches,
    fmt_bytes,
    loadavg,
    log,
    mount_of,
    prepare_root_run,
    run_main,
    set_log_name,
    started_utc,
)
from datapath_report import BLOCK, missed, report
from datapath_rig import COLUMN, COLUMNS, ROW, ROWS, Result, Rig, Row, leftovers, median_result

from ptcopy.datapath.userspace import UserspacePath
from ptcopy.engine import Direction, Kind, Set

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "PERFORMANCE.md"


class Bench(Rig):
    """The measurements: the configurations side by side, then the dependent set's writes."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.results: dict[str, dict[str, Result]] = {c.key: {} for c in COLUMNS}

    def measure(self, devices: dict[str, tuple[str, int | None]]) -> None:
        """Every row on every device, ``--reps`` rounds; the median round is kept.

        Interleaved (round by round, row by row, the column order rotating every round), so a
        noisy neighbour hurts all columns alike. ``devices`` maps a column to its block device
        and the pid of its FUSE server (None: no server).
        """
        cols = list(devices)
        got: dict[tuple[str, str], list[Result]] = {}
        for rnd in range(self.args.reps):
            order = cols[rnd % len(cols):] + cols[:rnd % len(cols)]
            for row in (r for r in ROWS if r.key in self.args.rows):
                for col in order:
                    dev, pid = devices[col]
                    drop_caches()
                    r = self.fio_timed(dev, row, pid)
                    got.setdefault((col, row.key), []).append(r)
                    log(f"  round {rnd + 1}: {COLUMN[col].title:42} {row.title:17} "
                        f"{r.cell(row)}")
        for (col, key), samples in got.items():
            self.results[col][key] = median_result(samples)

    def plain(self) -> str:
        """An INDEPENDENT set, copied, every chunk written once through its device."""
        set_, _up, dev = self.serve("plain", Kind.INDEPENDENT, self.shadow)
        drop_caches()
        r = self.fio_pass(dev, ROW["seqw1m"], os.getpid())
        st = set_.status()
        self.notes.append(
            f"ptcopy plain: before measuring, one sequential 1 MiB pass wrote every chunk of "
            f"the INDEPENDENT set once ({r.bw / MiB:.0f} MiB/s; those writes set the "
            f"difference bits: {st.diff_chunks} of {st.chunks} chunks marked), so the "
            f"measured writes set no new bit.")
        if st.diff_chunks != st.chunks:
            raise RuntimeError(f"the pre-write pass marked {st.diff_chunks} of {st.chunks}")
        return dev

    def phase_a(self) -> None:
        """raw loop, raw loop buffered, qsd and ptcopy plain, side by side."""
        cols = [c for c in ("raw", "rawbuf", "qsd", "plain") if c in self.args.columns]
        if not cols:
            return
        with self.scoped():
            devices: dict[str, tuple[str, int | None]] = {}
            for col in cols:
                if col in ("raw", "rawbuf"):
                    devices[col] = (self.raw(col == "raw"), None)
                elif col == "qsd":
                    devices[col] = self.qsd()
                else:   # the FUSE server runs on engine threads of this process
                    devices[col] = (self.plain(), os.getpid())
            self.measure(devices)

    def first_writes(self, set_: Set, up: UserspacePath, dev: str, row: Row) -> Result:
        """One size-based pass of first writes right after a new point in time."""
        # the update copies nothing on a dependent set and clears every bit, so the next write
        # to every chunk copies it on write again
        up.copy(["dep"], Direction.TO_SHADOW, full=False)
        if set_.status().diff_chunks:
            raise RuntimeError("the new point in time left chunks marked")
        drop_caches()
        if row.bs < self.chunk:
            # one write per chunk, at a random place in it, chunks in random order: fio's random
            # map over 4 KiB blocks would hit most chunks several times
            rng = random.Random(42)
            order = list(range(self.size // self.chunk))
            rng.shuffle(order)
            per = self.chunk // row.bs
            offsets = [c * self.chunk + rng.randrange(per) * row.bs for c in order]
            r = self.fio_replay(dev, offsets, row.bs, os.getpid())
        else:
            r = self.fio_pass(dev, row, os.getpid())
        marked = set_.status().diff_chunks
        want = r.ios * max(1, row.bs // self.chunk)
        r.note = (f"{r.ios} writes of {fmt_bytes(row.bs)} in {r.runtime_s:.1f} s, {marked} "
                  f"chunks copied on write")
        if marked < want * 0.99:
            raise RuntimeError(f"{row.title}: only {marked} chunks copied on write for "
                               f"{r.ios} first writes")
        return r

    def phase_b(self) -> None:
        """A DEPENDENT set: first writes after a new point in time, then rewrites."""
        if "cow" not in self.args.columns and "dep" not in self.args.columns:
            return
        with self.scoped():
            set_, up, dev = self.serve("dep", Kind.DEPENDENT, self.shadow)
            # seqw1m last: it writes every chunk, which the rewrites need
            keys = ("randw4k", "randw1m", "seqw1m")
            got: dict[str, list[Result]] = {}
            for rnd in range(self.args.reps if "cow" in self.args.columns else 0):
                for key in keys:
                    r = self.first_writes(set_, up, dev, ROW[key])
                    got.setdefault(key, []).append(r)
                    log(f"  round {rnd + 1}: {COLUMN['cow'].title:42} {ROW[key].title:17} "
                        f"{r.cell(ROW[key])}  [{r.note}]")
            for key, samples in got.items():
                self.results["cow"][key] = median_result(samples)
            if "dep" not in self.args.columns:
                return
            if set_.status().diff_chunks != set_.status().chunks:
                self.first_writes(set_, up, dev, ROW["seqw1m"])
            if set_.status().diff_chunks != set_.status().chunks:
                raise RuntimeError("the sequential pass did not write every chunk")
            self.measure({"dep": (dev, os.getpid())})



def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, help="volume size (default 1024; --quick: 64)")
    p.add_argument("--runtime", type=float,
                   help="seconds per time-based cell (default 5; --quick: 1)")
    p.add_argument("--iodepth", type=int, default=16)
    p.add_argument("--reps", type=int, default=3,
                   help="rounds; each cell shows its median round (default 3)")
    p.add_argument("--cap", type=float, default=120,
                   help="longest a size-based pass may take, seconds (default 120)")
    p.add_argument("--columns", default=",".join(c.key for c in COLUMNS),
                   help="comma-separated subset of " + ",".join(c.key for c in COLUMNS))
    p.add_argument("--rows", default=",".join(r.key for r in ROWS),
                   help="comma-separated subset of the time-based rows: "
                        + ",".join(r.key for r in ROWS) + " (the others show —)")
    p.add_argument("--server-threads", type=int,
                   help="worker threads of ptcopy's FUSE server (default: the data path's)")
    p.add_argument("--quick", action="store_true", help="64 MiB volume, 1 s per cell")
    p.add_argument("--data-dir", type=Path, default=Path("/var/tmp/ptcopy-datapath"),
                   help="where the volume files go: a real disk, not tmpfs")
    p.add_argument("--keep", action="store_true", help="keep the volume files")
    p.add_argument("--no-setup", action="store_true", help="do not run bench/setup.sh")
    p.add_argument("--write-doc", action="store_true", help=f"update the section in {DOC}")
    args = p.parse_args()
    if args.size_mib is None:
        args.size_mib = 64 if args.quick else 1024
    if args.runtime is None:
        args.runtime = 1 if args.quick else 5
    args.columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    bad = [c for c in args.columns if c not in COLUMN]
    if bad:
        p.error(f"unknown column(s) {', '.join(bad)}")
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [r for r in args.rows if r not in ROW]
    if bad:
        p.error(f"unknown row(s) {', '.join(bad)}")
    if args.size_mib < 8 or args.size_mib % 4:
        p.error("--size-mib must be a multiple of 4, at least 8")
    return args


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    set_log_name("datapath")
    args = parse_args()
    prepare_root_run("loop devices, FUSE mounts and dropping the page cache",
                     ("fio", "qemu-storage-daemon", "losetup", "findmnt"), not args.no_setup)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    fstype = mount_of(args.data_dir)[0]
    if fstype in ("tmpfs", "ramfs"):
        raise SystemExit(f"{args.data_dir} is on {fstype}: pick a directory on a disk")
    # a SIGTERM must run the finally blocks too
    signal.signal(signal.SIGTERM, interrupted)

    started = started_utc()
    load0 = loadavg()
    b = Bench(args)
    log(f"run directory {b.root}")
    failures: list[str] = []
    try:
        b.make_files()
        b.phase_a()
        b.phase_b()
    finally:
        failures = b.cleanup()
        left = leftovers(b.root)
        if not args.keep and not left:
            shutil.rmtree(b.root, ignore_errors=True)
        if failures or left:
            for f in failures + left:
                log(f"CLEANUP PROBLEM: {f}")
    if failures or left:
        return 1
    load1 = loadavg()
    if not b.chunk:
        b.chunk = 32 * KiB
    text = report(b.results, b.notes, b.size, b.chunk, args, started, load0, load1)
    print(text)
    if args.write_doc:
        BLOCK.write(DOC, text)
    miss = missed(b.results)
    log(f"{len(miss)} ratio(s) below target: " + "; ".join(miss) if miss else "every target met")
    return 0


if __name__ == "__main__":
    run_main(main)
