#!/usr/bin/env python3
"""ptcopy engine benchmarks: ptcopy side by side with dd, cp, rsync and plain pwrite.

    .venv/bin/python bench/run_engine.py                 # full sizes (4 GiB, 256 MiB, 64 TiB)
    .venv/bin/python bench/run_engine.py --size quick    # a quick run with small sizes
    .venv/bin/python bench/run_engine.py --rows 1,2 --volume-gib 1
    .venv/bin/python bench/run_engine.py --write-doc     # also put the table in the doc

Rows:
  1  full copy of a volume: ptcopy (enable INDEPENDENT + wait; copy(TO_SHADOW) + wait) vs
     dd (O_DIRECT both sides, fsync at the end) vs cp (+ fdatasync of the target)
  2  update with 1 % of the chunks changed vs rsync --inplace --no-whole-file (+ fdatasync)
     and vs ptcopy's full copy
  3  write throughput through a DEPENDENT set (first writes = copy-on-write, rewrites) vs plain
     pwrite and pwrite + fdatasync, 1 MiB and 32 KiB writes, 1 and 4 threads
  4  bitmap scan of a 64 TiB sparse DEPENDENT set (update(TO_MASTER) + wait) and the bitmap
     volume's size per chunk

Every timed step of rows 1-3 starts cold (sync, then drop the page cache; needs root). The
table goes to stdout, progress to stderr. Needs root for cold caches; needs dd, cp, rsync.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

from common import (
    HEADER,
    DocBlock,
    GiB,
    MiB,
    Section,
    TiB,
    can_drop_caches,
    describe_fs,
    git,
    loadavg,
    machine_info,
    md_table,
    need_space,
    run,
)
from engine_copy import Volumes, row_full_copy, row_update
from engine_scan import row_scan
from engine_write import IO_SIZES, THREADS, row_writes

import ptcopy._engine as ptcopy_lib

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "PERFORMANCE.md"
BLOCK = DocBlock("bench/run_engine.py", template="{markers}\n")

SIZES = {
    #         volume GiB, write MiB, scan TiB, reps, copy reps
    "full": (4.0, 256, 64.0, 3, 4),
    "quick": (0.25, 32, 4.0, 2, 1),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="full",
                   help="preset sizes (default: %(default)s)")
    p.add_argument("--volume-gib", type=float, help="rows 1-2 volume size in GiB (full: 4)")
    p.add_argument("--write-mib", type=int, help="row 3 volume size in MiB (full: 256)")
    p.add_argument("--scan-tib", type=float, help="row 4 volume size in TiB (full: 64)")
    p.add_argument("--reps", type=int, help="repetitions of the cheap measurements (median)")
    p.add_argument("--copy-reps", type=int, help="repetitions of row 1's full copies")
    p.add_argument("--rows", default="1,2,3,4", help="rows to run, e.g. 1,2 (default: all)")
    p.add_argument("--data-dir", type=Path, default=Path("/var/tmp/ptbench"),
                   help="where the volume files go; a real disk, not tmpfs "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=20240601, help="random seed for chunk choice")
    p.add_argument("--keep", action="store_true", help="keep the volume files afterwards")
    p.add_argument("--write-doc", nargs="?", const=DOC, type=Path, metavar="PATH",
                   help=f"also write the results into PATH (default {DOC.relative_to(REPO)})")
    return p.parse_args(argv)


def engine_info() -> str:
    """Which engine build runs: the loaded module, its build time, the last engine commit."""
    so = Path(ptcopy_lib.__file__)
    built = datetime.datetime.fromtimestamp(so.stat().st_mtime).astimezone()
    text = f"engine `{so}` built {built:%Y-%m-%d %H:%M %Z}"
    head = git(REPO, "log", "-1", "--format=%h (%s)", "--", "cffi_build")
    if so.resolve().is_relative_to(REPO) and head:
        dirty = git(REPO, "status", "--porcelain", "cffi_build")
        text += f"; last engine commit {head}" + (
            " (with uncommitted changes in cffi_build/)" if dirty else "")
    return text


def render(args: argparse.Namespace, sizes: dict[str, str], sections: list[Section],
           started: str, load_before: str, engine: str) -> str:
    lines = [ln for s in sections for ln in s.lines]
    out = [
        f"Run {started} with `{shlex.join(['bench/run_engine.py', *sys.argv[1:]])}`; "
        + "; ".join(f"{k} {v}" for k, v in sizes.items())
        + f". Load average before {load_before}, after {loadavg()}.",
        "",
        *(f"- {m}" for m in machine_info(args.data_dir)),
        f"- {engine}",
        "",
        md_table(HEADER, [ln.cells() for ln in lines]),
        "",
    ]
    for s in sections:
        for t in s.extra_tables:
            out += [t, ""]
    for s in sections:
        out += [f"- {n}" for n in s.notes]
    if not can_drop_caches():
        out += ["", "**Caches were not dropped (not root): these are warm-cache numbers.**"]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    vol_gib, write_mib, scan_tib, reps, copy_reps = SIZES[args.size]
    vol = int((args.volume_gib or vol_gib) * GiB) // MiB * MiB
    wsize = (args.write_mib or write_mib) * MiB
    scan = int((args.scan_tib or scan_tib) * TiB)
    reps = args.reps or reps
    copy_reps = args.copy_reps or copy_reps
    rows = {r.strip() for r in args.rows.split(",") if r.strip()}
    if not rows <= {"1", "2", "3", "4"}:
        raise SystemExit(f"bench: unknown rows {sorted(rows - {'1', '2', '3', '4'})}")
    if wsize % (max(THREADS) * max(IO_SIZES)):
        raise SystemExit(f"bench: --write-mib must be a multiple of {max(THREADS)}")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    fs = describe_fs(args.data_dir)
    if fs.startswith("tmpfs") and rows & {"1", "2", "3"}:
        raise SystemExit(f"bench: {args.data_dir} is on tmpfs; rows 1-3 need a real disk")
    for tool in ("dd", "cp", "rsync"):
        run(tool, "--version")
    if rows & {"1", "2"}:
        need_space(args.data_dir, 3 * vol + GiB)
    if "3" in rows:
        need_space(args.data_dir, 3 * wsize + GiB)
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_before = loadavg()
    engine = engine_info()   # now: the module is loaded, a rebuild during the run changes nothing
    sizes: dict[str, str] = {}
    sections: list[Section] = []
    if rows & {"1", "2"}:
        sizes["rows 1-2 volume"] = f"{vol / GiB:g} GiB"
        sizes["copy rounds"] = str(copy_reps)
        v = Volumes(args.data_dir, vol)
        try:
            v.prepare()
            if "1" in rows:
                sections.append(row_full_copy(v, copy_reps))
            if "2" in rows:
                sections.append(row_update(v, reps, args.seed))
        finally:
            v.close()
            if not args.keep:
                for p in v.files():
                    p.unlink(missing_ok=True)
    if "3" in rows:
        sizes["row 3 volume"] = f"{wsize / MiB:g} MiB"
        sections.append(row_writes(args.data_dir, wsize, reps, args.keep))
    if "4" in rows:
        sizes["row 4 volume"] = f"{scan / TiB:g} TiB"
        sections.append(row_scan(args.data_dir, scan, reps, args.seed, keep=args.keep))
    sizes["repetitions"] = str(reps)
    block = render(args, sizes, sections, started, load_before, engine)
    print(block)
    if args.write_doc:
        BLOCK.write(args.write_doc, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
