#!/usr/bin/env python3
"""ptcopy's kernel data path (device-mapper) against plain device-mapper, in the VM tier's guest.

    sudo .venv/bin/python bench/run_kernel.py                 # 256 MiB master, 4 rounds, ~6 min
    sudo .venv/bin/python bench/run_kernel.py --quick         # 64 MiB, 1 round: a smoke test
    sudo .venv/bin/python bench/run_kernel.py --write-doc     # also update docs/PERFORMANCE.md

The host has no device-mapper, so everything is measured in one boot of the VM tier
(tests/vm/vmkit.py: Debian's stock kernel under qemu, TCG, 2 vCPUs) by bench/kernel_guest.py,
whose docstring says exactly what is measured. This side makes six raw image files in
``--data-dir`` (the master of random data, stores and shadows allocated with fallocate),
attaches them as virtio disks, boots the guest once, reads the JSON it writes into
build/kernel-bench/ and prints the tables: master write throughput with no shadow, with a
plain dmsetup snapshot (LVM-style), with ptcopy's dependent shadow and with ptcopy's
independent set (dm-era); full copy, 1 % update and dd of the independent set.

Under emulation absolute numbers say little (guest CPU work is emulated, the disks' I/O runs
at host speed), so the tables lead with ratios taken within each round: the configurations are
measured one block after the other, the block order rotating every round, and each ratio is
the median of the per-round ratios, with every sample listed. Needs root only for what the VM
tier needs (qemu, /dev/kvm when used); the image files are deleted afterwards (``--keep``
keeps them). The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import (  # bench/, the script directory, is on sys.path
    DocBlock,
    KiB,
    MiB,
    fmt_s,
    git,
    loadavg,
    log,
    md_table,
    median,
    mount_of,
    set_log_name,
    started_utc,
)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ptcopy.datapath.kernel import KernelPath  # noqa: E402
from ptcopy.engine import Kind  # noqa: E402
from tests.vm import vmkit  # noqa: E402

CHUNK = 64 * KiB

DOC = REPO / "docs" / "PERFORMANCE.md"
BLOCK = DocBlock("bench/run_kernel.py", "## Kernel data path (device-mapper, in a TCG VM)")
RESULTS = REPO / "build" / "kernel-bench"

VARIANTS = {"none": "no shadow (dm linear)", "plain": "plain dmsetup snapshot",
            "dep": "ptcopy dependent shadow", "ind": "ptcopy independent set (era)"}
WORKLOADS = {"seq1m_first": "seq write 1 MiB, first writes",
             "seq1m_re": "seq write 1 MiB, rewrites",
             "rand4k_first": "rand write 4 KiB, first writes",
             "rand4k_re": "rand write 4 KiB, rewrites"}
RATIOS = [("dep", "none", "ptcopy dep. / no shadow"),
          ("plain", "none", "plain snap. / no shadow"),
          ("dep", "plain", "ptcopy dep. / plain snap."),
          ("ind", "none", "ptcopy indep. / no shadow")]


def up(n: int, to: int = MiB) -> int:
    return -(-n // to) * to


def store_size(master: int) -> int:
    """A persistent dm-snapshot store that holds every chunk of the master (what the kernel
    path requires of a full-size dependent shadow), rounded up to a MiB."""
    return up(KernelPath.store_needed(master, CHUNK))


def make_images(root: Path, size: int) -> list[Path]:
    """The six disks, in the order bench/kernel_guest.py expects them."""
    store = store_size(size)
    sizes = [
        ("master", size),
        ("dep-shadow", store),
        ("dep-bitmap", up(KernelPath.layout_for(size, store, CHUNK, Kind.DEPENDENT).total)),
        ("plain-cow", store),
        ("ind-shadow", size),
        ("ind-bitmap", up(KernelPath.layout_for(size, size, CHUNK, Kind.INDEPENDENT).total)),
    ]
    paths = []
    for name, n in sizes:
        path = root / f"{name}.img"
        with path.open("wb") as f:
            if name == "master":
                for _ in range(n // MiB):
                    f.write(os.urandom(MiB))
            else:
                f.truncate(n)
                os.posix_fallocate(f.fileno(), 0, n)
        paths.append(path)
    return paths


def code_version() -> dict[str, Any]:
    """The commit measured, and files of the engine and package changed since (not committed)."""
    # split, not line[3:]: git() strips the first line's leading blank (" M path")
    dirty = [line.split(maxsplit=1)[1] for line in
             git(REPO, "status", "--porcelain", "--", "ptcopy", "cffi_build").splitlines()
             if line.strip()]
    return {"commit": git(REPO, "log", "-1", "--format=%h"),
            "subject": git(REPO, "log", "-1", "--format=%s"), "dirty": dirty}


def other_qemus() -> int:
    """qemu processes running on this machine (other people's boots: contention)."""
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            n += comm.startswith("qemu-system")
    return n


# ---- report ------------------------------------------------------------------------------


def spread(xs: Sequence[float]) -> str:
    """How far the samples spread around their median: (max - min) / median."""
    if len(xs) < 2:
        return "—"
    return f"±{(max(xs) - min(xs)) / 2 / median(xs) * 100:.0f} %"


def fmt_x(x: float) -> str:
    return f"{x:.3f}x" if x < 0.1 else f"{x:.2f}x"


def per_round(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True) if y]


def report(res: dict[str, Any]) -> str:
    host = res["host"]
    started, load0, load1 = host["started"], host["load_before"], host["load_after"]
    qemus, seconds = host["qemus"], host["seconds"]
    env = res["env"]
    code = host.get("code") or {"commit": "?", "subject": "?", "dirty": []}
    rounds = res["rounds"]
    write: dict[str, dict[str, list[dict[str, Any]]]] = res["write"]
    cp: dict[str, list[Any]] = res["copies"]
    size = env["size"]
    lines = [
        f"Run {started} with `bench/run_kernel.py {host['args']}`, one boot of "
        f"{seconds:.0f} s: guest kernel {env['kernel']} under qemu TCG ({env['cpus']} vCPUs, "
        f"{env['mem_mib']} MiB of memory visible), master {size // MiB} MiB "
        f"({size // CHUNK} chunks of {CHUNK // KiB} KiB), six virtio-blk disks over raw image "
        f"files on the host's {host['fstype']} (qemu `cache=unsafe`, guest scheduler "
        f"`{env['scheduler']}`); "
        f"{env['fio']} `--direct=1 --ioengine=libaio --iodepth={res['iodepth']}`; "
        f"{rounds} round(s), block order rotating ({'; '.join(' '.join(o) for o in res['order'])})"
        f"; rewrites {res['rewrite_loops']} passes per sample. Host load average before "
        f"{load0}, after {load1}; qemu processes on the host besides this boot: "
        f"{qemus[0]} at the start, {qemus[1]} at the end (other people's VM boots on the same "
        "2 cores).",
        "",
        f"Code measured: commit {code['commit']}"
        + (f", with uncommitted changes to {', '.join(code['dirty'])}" if code["dirty"] else "")
        + ".",
        "",
        "Master write throughput, MiB/s (4 KiB rows: IOPS), median of the rounds; ratios are "
        "the median of the per-round ratios [lowest-highest]:",
        "",
    ]
    table = []
    for wk, title in WORKLOADS.items():
        cells = [title]
        for v in VARIANTS:
            xs = [s["iops"] if "4k" in wk else s["bw"] / MiB for s in write[v][wk]]
            cells.append(f"{median(xs):.0f}")
        for a, b, _ in RATIOS:
            r = per_round([s["bw"] for s in write[a][wk]], [s["bw"] for s in write[b][wk]])
            cells.append(f"{fmt_x(median(r))} [{fmt_x(min(r))}-{fmt_x(max(r))}]" if r else "—")
        table.append(cells)
    lines.append(md_table(["workload", *VARIANTS.values(), *(t for _, _, t in RATIOS)], table))
    lines += ["", "Copies of the independent set (same boot, same master):", ""]
    full, upd, upd2, dd = cp["full_s"], cp["update_s"], cp["update2_s"], cp["dd_s"]
    ddb, upd_all = cp["dd_buffered_s"], cp.get("update_all_s", [])
    nchunks = size // CHUNK
    rows = [
        ("full copy: `copy(full=True)` + `wait()`", full),
        (f"update, {cp['update_changed'][0]} of {nchunks} chunks (1 %) changed since the full "
         "copy: `copy(full=False)` + `wait()`", upd),
        (f"the next update, another {cp['update2_changed'][0]} chunks (1 %) changed", upd2),
        (f"update, every chunk changed ({nchunks} chunks)", upd_all),
        ("`dd bs=1M iflag=direct oflag=direct conv=fsync`", dd),
        ("`dd bs=1M conv=fsync` (page cache, dropped before)", ddb),
        ("dependent set: new point in time, `copy(TO_SHADOW)`", cp.get("dep_pit_s", [])),
    ]
    lines.append(md_table(["measurement", "median", "spread", "samples"], [
        [title, fmt_s(median(xs), 0), spread(xs), ", ".join(fmt_s(x, 0) for x in xs)]
        for title, xs in rows if xs]))
    pairs: list[tuple[str, list[float], list[float]]] = [
        ("update 1 % / full copy", upd, full), ("next update 1 % / full copy", upd2, full),
        ("full copy / dd direct", full, dd), ("full copy / dd through the page cache", full, ddb),
        ("update of every chunk / full copy", upd_all, full)]
    ratios = [(name, per_round(num, den) if len(num) == len(den) else [])
              for name, num, den in pairs]
    lines += ["", md_table(["ratio (per round)", "median", "samples"], [
        [name, fmt_x(median(r)), ", ".join(fmt_x(x) for x in r)] for name, r in ratios if r]),
        ""]
    lines.append("- samples, MiB/s per round (and chunks copied on write, where the device "
                 "reports them):")
    for v, vt in VARIANTS.items():
        parts = []
        for wk, title in WORKLOADS.items():
            ss = write[v][wk]
            txt = ", ".join(f"{s['bw'] / MiB:.0f}" for s in ss)
            if "4k" in wk:
                txt += " (IOPS " + ", ".join(f"{s['iops']:.0f}" for s in ss) + ")"
            copied: set[int] = {s["copied"] for s in ss if s.get("copied") is not None}
            if copied:
                txt += f" [{'/'.join(str(c) for c in sorted(copied))} chunks copied]"
            parts.append(f"{title} {txt}")
        lines.append(f"  - {vt}: " + "; ".join(parts) + ".")
    for kind in ("full copy", "update", "update2", "update of all"):
        got = [c for c in cp.get("copier_s", []) if c[0].split(": ", 1)[1] == kind]
        if got:
            lines.append(
                f"- {kind}: the engine's copier alone (progress `elapsed_s`) / the `copy()` "
                "call (point in time, era fold, start) / all of `copy` + `wait`: " + "; ".join(
                    f"{fmt_s(c[1], 0)} / {fmt_s(c[2], 0)} / {fmt_s(c[3], 0)}" for c in got) + ".")
    for key, title in (("update", "the updates after the full copy"),
                       ("update2", "the next updates")):
        lines.append(
            f"- chunks {title} copied: {', '.join(map(str, cp[f'{key}_chunks']))}; changed "
            f"since the last copy: {', '.join(map(str, cp[f'{key}_changed']))}; chunks the "
            f"previous update copied and not changed since (copying them again would add "
            f"these): "
            f"{', '.join(map(str, cp[f'{key}_again']))}; "
            "the master's era before → after: "
            + ", ".join(f"{a}→{b}" for a, b in cp[f"{key}_era"]) + ".")
    checks, problems = res.get("checks", []), res.get("problems", [])
    lines.append(f"- checks: {len(checks)} passed ({'; '.join(checks)})"
                 + (f"; PROBLEMS: {'; '.join(problems)}" if problems else "; no problems")
                 + f"; dm devices left at the end: {len(res.get('leftover_devices', []))}.")
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, help="master size (default 256; --quick: 64)")
    p.add_argument("--rounds", type=int, help="rounds (default 4; --quick: 1)")
    p.add_argument("--iodepth", type=int, default=16)
    p.add_argument("--rewrite-loops", type=int, default=3,
                   help="passes per rewrite sample (default 3)")
    p.add_argument("--mem-mib", type=int, default=1024, help="guest memory (default 1024)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds the boot may take")
    p.add_argument("--quick", action="store_true", help="64 MiB master, 1 round")
    p.add_argument("--data-dir", type=Path, default=Path("/var/tmp/ptcopy-kbench"),
                   help="where the disk image files go (default /var/tmp/ptcopy-kbench)")
    p.add_argument("--keep", action="store_true", help="keep the image files and the JSON")
    p.add_argument("--write-doc", action="store_true", help=f"update the section in {DOC}")
    p.add_argument("--from-json", type=Path, metavar="PATH",
                   help="no boot: print (and with --write-doc, write) the report of a result "
                        "kept with --keep")
    args = p.parse_args()
    if args.size_mib is None:
        args.size_mib = 64 if args.quick else 256
    if args.rounds is None:
        args.rounds = 1 if args.quick else 4
    if args.size_mib < 16 or args.size_mib % 4:
        p.error("--size-mib must be a multiple of 4, at least 16")
    return args


def main() -> int:
    set_log_name("kernel")
    args = parse_args()
    if args.from_json:   # render a kept result again
        text = report(json.loads(args.from_json.read_text()))
        print(text)
        if args.write_doc:
            BLOCK.write(DOC, text)
        return 0
    try:
        vmkit.prepare()
    except vmkit.VmUnavailable as exc:
        raise SystemExit(f"the VM tier is unavailable: {exc}") from None
    started = started_utc()
    load0 = loadavg()
    q0 = other_qemus()
    code = code_version()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    fstype = mount_of(args.data_dir)[0]
    root = Path(args.data_dir) / f"run-{secrets.token_hex(4)}"
    root.mkdir()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{root.name}.json"
    console = root / "console.log"
    try:
        log(f"images in {root} ({args.size_mib} MiB master)")
        disks = make_images(root, args.size_mib * MiB)
        command = shlex.join([str(REPO / ".venv" / "bin" / "python"),
                              str(REPO / "bench" / "kernel_guest.py"),
                              f"--rounds={args.rounds}", f"--iodepth={args.iodepth}",
                              f"--rewrite-loops={args.rewrite_loops}", f"--out={out}"]) + " 2>&1"
        log(f"booting the guest: {command}")
        g = vmkit.run_guest(command, disks=disks, timeout=args.timeout, mem_mib=args.mem_mib,
                            log_path=console)
        q1 = other_qemus()
        log(f"guest done in {g.seconds:.0f} s, exit status {g.returncode}")
        if not out.exists():
            print(g.describe(), file=sys.stderr)
            return 1
        res = json.loads(out.read_text())
        if "error" in res or res.get("leftover_devices") or g.returncode != 0:
            print(g.output[-8000:], file=sys.stderr)
            log(f"the guest reported: {res.get('error')}; problems {res.get('problems')}; "
                f"devices left {res.get('leftover_devices')}")
            return 1
        res["host"] = {"started": started, "args": shlex.join(sys.argv[1:]), "fstype": fstype,
                       "load_before": load0, "seconds": g.seconds, "qemus": [q0, q1],
                       "code": code,
                       "load_after": loadavg()}
        out.write_text(json.dumps(res, indent=1))
        text = report(res)
        print(text)
        if args.write_doc:
            BLOCK.write(DOC, text)
        if res.get("problems"):
            log("PROBLEMS: " + "; ".join(res["problems"]))
            return 1
        return 0
    finally:
        if args.keep:
            log(f"kept {root} and {out}")
        else:
            shutil.rmtree(root, ignore_errors=True)
            out.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
