"""Rows 5 and 6 of bench/run_ops.py, measured by the benches that already own them:

  5 GetManagedObjects with 1,000 sets by busctl, the daemon's RSS and CreateSet per set:
    bench/run_daemon.py's ``run_sets`` on a ptcopyd started with ``--data-path none --volumes
    used`` (its own bus and daemon: thousands of sets want no served volumes);
  6 1 MiB writes, sequential and random, through the userspace data path vs
    qemu-storage-daemon's FUSE export: bench/run_datapath.py's rig (the engine and FUSE server
    in this process, as there), the two columns interleaved round by round.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from common import MiB, drop_caches, log
from datapath_rig import ROW, Result, leftovers
from run_daemon import run_sets
from run_datapath import Bench


@dataclass
class DaemonFigures:
    """Row 5, one run of run_daemon.run_sets per round."""

    sets: int = 0
    gmo_busctl_ms: list[float] = field(default_factory=list)
    gmo_busctl_quiet_ms: list[float] = field(default_factory=list)   # busctl --quiet
    gmo_ms: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    create_ms: list[float] = field(default_factory=list)


def daemon_rows(nsets: int, reps: int) -> DaemonFigures:
    out = DaemonFigures(sets=nsets)
    for rnd in range(reps):
        res = run_sets(nsets, ["--data-path", "none", "--volumes", "used"])
        out.gmo_busctl_ms.append(res["gmo_busctl_ms"])
        out.gmo_busctl_quiet_ms.append(res["gmo_busctl_quiet_ms"])
        out.gmo_ms.append(res["gmo_ms"])
        out.rss_mib.append(res["rss_mib"])
        out.create_ms.append(res["create_med_ms"])
        log(f"  round {rnd + 1}: {nsets} sets: GetManagedObjects by busctl "
            f"{res['gmo_busctl_ms']:.1f} ms ({res['gmo_busctl_quiet_ms']:.1f} ms with "
            f"--quiet), RSS {res['rss_mib']:.0f} MiB, CreateSet "
            f"{out.create_ms[-1]:.1f} ms (median)")
    return out


FUSE_ROWS = ("seqw1m", "randw1m")


@dataclass
class FuseFigures:
    """Row 6: bytes per second of every round, per workload, ptcopy and qsd."""

    ours: dict[str, list[float]] = field(default_factory=dict)
    theirs: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fuse_rows(data_dir: Path, size_mib: int, runtime: float, reps: int) -> FuseFigures:
    """ptcopy plain vs qsd, 1 MiB writes, fio at queue depth 16 (as run_datapath.py)."""
    args = argparse.Namespace(size_mib=size_mib, iodepth=16, runtime=runtime, cap=120.0,
                              data_dir=data_dir, reps=reps, columns=["qsd", "plain"])
    b = Bench(args)
    out = FuseFigures()
    failures: list[str] = []
    try:
        b.make_files()
        with b.scoped():
            devices = {"qsd": b.qsd(), "plain": (b.plain(), None)}
            for rnd in range(reps):
                cols = ["qsd", "plain"] if rnd % 2 == 0 else ["plain", "qsd"]
                for key in FUSE_ROWS:
                    for col in cols:
                        dev, pid = devices[col]
                        drop_caches()
                        r: Result = b.fio_timed(dev, ROW[key], pid)
                        (out.ours if col == "plain" else out.theirs).setdefault(
                            key, []).append(r.bw)
                        log(f"  round {rnd + 1}: {ROW[key].title} {col:5} "
                            f"{r.bw / MiB:.0f} MiB/s")
        out.notes += b.notes
    finally:
        failures = b.cleanup()
        left = leftovers(b.root)
        if not left:
            shutil.rmtree(b.root, ignore_errors=True)
    if failures or left:
        raise RuntimeError("row 6 clean-up failed: " + "; ".join(failures + left))
    return out
