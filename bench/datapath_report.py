"""The report of bench/run_datapath.py: the tables against the targets, the context tables (page
cache, latency, CPU), the notes, and the section of docs/PERFORMANCE.md they go into."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys

from common import DocBlock, MiB, cpu_model, fmt_bytes, md_table, mem_total, mount_of, run
from datapath_rig import COLUMN, COLUMNS, ROW, ROWS, Result, Row

TARGET_VS_RAW = 0.7
TARGET_VS_QSD = 1.5
TARGET_COW = 0.5

Results = dict[str, dict[str, Result]]   # column key -> row key -> the cell


def ratio(a: Result | None, b: Result | None) -> float | None:
    return None if a is None or b is None or b.bw == 0 else a.bw / b.bw


def fmt_ratio(x: float | None, target: float) -> str:
    if x is None:
        return "—"
    return f"{x:.2f}x" if x >= target else f"**{x:.2f}x** ✗"


def checks(res: Results) -> list[tuple[Row, str, float | None, float]]:
    """Every (row, target name, ratio, target) the issue sets."""
    out: list[tuple[Row, str, float | None, float]] = []
    for row in ROWS:
        plain = res["plain"].get(row.key)
        out.append((row, "plain / raw loop", ratio(plain, res["raw"].get(row.key)),
                    TARGET_VS_RAW))
        out.append((row, "plain / qsd", ratio(plain, res["qsd"].get(row.key)), TARGET_VS_QSD))
        if row.write:
            out.append((row, "COW / plain", ratio(res["cow"].get(row.key), plain), TARGET_COW))
    return out


def missed(res: Results) -> list[str]:
    return [f"{row.title}: {name} {x:.2f}x < {t}x" for row, name, x, t in checks(res)
            if x is not None and x < t]


def machine() -> list[str]:
    fio = run("fio", "--version", check=False).stdout.strip()
    qsd = run("qemu-storage-daemon", "--version", check=False).stdout.splitlines()[:1]
    fuse = run("dpkg-query", "-W", "-f=${Version}", "libfuse3-3", check=False).stdout.strip()
    return [
        f"- CPU: {os.cpu_count()} x {cpu_model()} (a 2-core VM shared with other work: expect "
        "noise)",
        f"- memory: {mem_total()}; kernel {platform.release()}; {fio}; "
        f"{' '.join(qsd)}; libfuse3 {fuse or '?'}",
    ]


def report(res: Results, notes: list[str], size: int, chunk: int, args: argparse.Namespace,
           started: str, load0: str, load1: str) -> str:
    fstype, source = mount_of(args.data_dir)
    src = f"{fstype} on {source}" if fstype != "?" else "?"
    lines = [
        f"Run {started} with `bench/run_datapath.py {shlex.join(sys.argv[1:])}`: volume "
        f"{fmt_bytes(size)} (files in {args.data_dir}, {src}), chunk "
        f"{fmt_bytes(chunk)}, fio `--direct=1 --ioengine=libaio --iodepth={args.iodepth}`, "
        f"{args.runtime:g} s per time-based cell, median of {args.reps}. Load average before "
        f"{load0}, after {load1}.",
        "",
        *machine(),
        "",
        "MiB/s (and IOPS for 4 KiB); ratios against the targets (✗ = missed):",
        "",
    ]
    main_cols = ["raw", "qsd", "plain", "cow", "dep"]
    by_row: dict[str, list[str]] = {}
    for row, _name, x, t in checks(res):
        by_row.setdefault(row.key, []).append(fmt_ratio(x, t))
    table = []
    for row in ROWS:
        cells = [row.title]
        for c in main_cols:
            r = res[c].get(row.key)
            cells.append(r.cell(row) if r else "—")
        table.append(cells + by_row[row.key] + ([] if row.write else ["—"]))
    lines.append(md_table(
        ["workload", *(COLUMN[c].title for c in main_cols),
         f"plain / raw loop (≥ {TARGET_VS_RAW}x)", f"plain / qsd (≥ {TARGET_VS_QSD}x)",
         f"COW / plain (≥ {TARGET_COW}x)"], table))
    miss = missed(res)
    lines += ["", f"Targets missed ({len(miss)}): " + "; ".join(miss) + "." if miss
              else "Every target met."]
    lines += ["", "Context: the raw loop device without direct I/O (it reads and writes the "
              "master file through the page cache, as ptcopy's engine and qsd's file driver do) "
              "and mean / 99th percentile completion latency in µs, as fio sees it:", ""]
    ctx = ["raw", "rawbuf", "qsd", "plain", "cow", "dep"]
    table = []
    for row in ROWS:
        r = res["rawbuf"].get(row.key)
        cells = [row.title, r.cell(row) if r else "—"]
        for c in ctx:
            r = res[c].get(row.key)
            cells.append(f"{r.lat_mean_us:.0f} / {r.lat_p99_us:.0f}" if r else "—")
        table.append(cells)
    lines += [md_table(["workload", "raw loop, buffered: MiB/s",
                        *(f"{COLUMN[c].title}: latency" for c in ctx)], table), ""]
    lines += ["CPU: time the FUSE server process spent per I/O (user + system, all threads), "
              "and how busy all CPUs of the machine were during the run (fio, loop workers and "
              "any neighbour included):", ""]
    table = []
    for row in ROWS:
        cells = [row.title]
        for c in ctx:
            r = res[c].get(row.key)
            if r is None:
                cells.append("—")
            elif r.server_us_per_io is None:
                cells.append(f"busy {100 * r.busy:.0f} %")
            else:
                cells.append(f"{r.server_us_per_io:.1f} µs/IO, busy {100 * r.busy:.0f} %")
        table.append(cells)
    lines += [md_table(["workload", *(f"{COLUMN[c].title}: CPU" for c in ctx)], table), ""]
    for row in ROWS:
        r = res["cow"].get(row.key)
        if r is not None:
            raw = res["raw"].get(row.key)
            vs = (f"; {r.bw / raw.bw:.2f}x the raw loop device (dio), whose writes reach the "
                  "disk too" if raw else "")
            lines.append(f"- COW {row.title}: {r.note}{vs}.")
    lines += [f"- {n}" for n in notes]
    if args.reps > 1:
        for column in COLUMNS:
            parts = [f"{ROW[k].title} " + ", ".join(f"{x / MiB:.0f}" for x in r.samples)
                     for k, r in res[column.key].items() if len(r.samples) > 1]
            if parts:
                lines.append(f"- samples, {column.title} (MiB/s): " + "; ".join(parts) + ".")
    return "\n".join(lines)


HEADING = "## Userspace data path (FUSE + loop)"
SECTION_TEMPLATE = f"""{HEADING}

How fast applications read and write through a set served by the userspace data path
(`UserspacePath.serve`: the FUSE server of `cffi_build/fuse.c` on engine threads, a loop device
with direct I/O over each served file), next to the raw loop device and qemu-storage-daemon's
FUSE export over the same backing file. The numbers come from `bench/run_datapath.py`; the
table below is its output (`--write-doc`).

```
sudo bash bench/setup.sh                                  # fio, qemu-storage-daemon, qemu-img
sudo .venv/bin/python bench/run_datapath.py --quick --reps 1   # 64 MiB, 1 s: a smoke test
sudo flock /tmp/ptcopy-bench.lock .venv/bin/python bench/run_datapath.py --write-doc  # ~10 min
```

### Method

One run measures every configuration over one backing file, a 1 GiB master of random data in
`/var/tmp` (ext4 on the VM's disk). The load is fio
`--direct=1 --ioengine=libaio --iodepth=16 --numjobs=1`, 5 s time-based per cell, on a block
device; the page cache is written back and dropped before every cell. The raw loop devices,
qsd and ptcopy plain are set up together and measured interleaved (round by round, row by row,
the column order rotating each round); then the DEPENDENT set is measured on its own. Each
cell is the median of `--reps` rounds (default 3).

The columns, each the block device fio drives:

- *raw loop (dio)*: `losetup --direct-io=on` on the master file. *raw loop, buffered*: the
  same with `--direct-io=off` (context only).
- *qsd FUSE export + loop*: `qemu-storage-daemon --blockdev driver=file,filename=M,node-name=f
  --blockdev driver=raw,file=f,node-name=r --export
  type=fuse,id=e,node-name=r,mountpoint=F,writable=on` (qemu's defaults: `aio=threads`, page
  cache on), then `losetup --direct-io=on F`.
- *ptcopy plain*: `Served.master_device` of an INDEPENDENT set (master M, a fully written
  shadow, a bitmap file) after its initial copy finished and one sequential 1 MiB pass wrote
  every chunk once, so no measured write sets a bit.
- *ptcopy + dep. shadow, first writes (COW)*: `Served.master_device` of a DEPENDENT set right
  after a new point in time (`UserspacePath.copy([name], TO_SHADOW, full=False)` copies nothing
  and clears the bits), written by one size-based pass that writes each chunk once, so every
  write first copies its chunk(s) to the shadow. 1 MiB: a sequential pass and a random pass
  (fio's random map) over the whole volume; 4 KiB: one write per 32 KiB chunk at a random
  4 KiB place in it, chunks in random order (a fio iolog replayed at depth 16). The bench
  checks that the set marked one chunk per chunk written.
- *ptcopy + dep. shadow, rewrites*: the same DEPENDENT set once every chunk was written after
  the point in time.

{{markers}}
"""
BLOCK = DocBlock("bench/run_datapath.py", HEADING, SECTION_TEMPLATE)
