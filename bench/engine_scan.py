"""Row 4: scanning the bitmaps of a huge sparse volume, and the bitmap volume's size per chunk.

A DEPENDENT set over a sparse master and shadow of 64 TiB (2^31 chunks of 32 KiB: two bitmaps of
256 MiB each). A few chunks are written on the master (each copied on write to the shadow),
then update(TO_MASTER) + wait() is timed: it has to find the marked chunks among 2^31 bits,
copy them back and finish; with nothing marked it is a pure scan. The files are sparse; when
the data directory's file system refuses files that big (ext4 stops below 16 TiB) they go to
/dev/shm (tmpfs), while the bitmap volume stays on the data directory's disk.
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

from common import (
    KiB,
    Line,
    MiB,
    Section,
    TiB,
    fmt_s,
    fmt_samples,
    log,
    median,
    rss_mib,
    sparse_file,
    timed,
)

from ptcopy.engine import (
    CHUNK_DEFAULT,
    Direction,
    Engine,
    InvalidArgument,
    Kind,
    Set,
    Side,
    bitmap_size,
)

HEADER_BYTES = 4096   # the bitmap volume's fixed header (docs/bitmap-format.md)


def _volume_dir(data_dir: Path, size: int) -> Path:
    probe = data_dir / "ptbench-probe"
    try:
        sparse_file(probe, size)
        return data_dir
    except OSError as e:
        if e.errno not in (errno.EFBIG, errno.EINVAL):
            raise
        return Path("/dev/shm")
    finally:
        probe.unlink(missing_ok=True)


def row_scan(data_dir: Path, size: int, reps: int, seed: int, nwrites: int = 16,
             keep: bool = False) -> Section:
    chunk = CHUNK_DEFAULT
    refused = ""
    try:
        bitmap_size(size, size, chunk, Kind.DEPENDENT)
    except InvalidArgument as e:
        # The engine caps a master below 2^31 chunks; measure the largest size it takes.
        refused = (f"The engine refuses a {size / TiB:g} TiB master at {chunk // KiB} KiB "
                   f"chunks ({e.message}); this row uses {size // chunk - 1:,} chunks "
                   f"({size / TiB:g} TiB - {chunk // KiB} KiB) instead.")
        log(refused)
        size -= chunk
    nchunks = size // chunk
    vdir = _volume_dir(data_dir, size)
    m, s_, b = vdir / "ptbench-HM", vdir / "ptbench-HS", data_dir / "ptbench-HB"
    bsize = bitmap_size(size, size, chunk, Kind.DEPENDENT)
    log(f"row 4: {size / TiB:g} TiB sparse master and shadow in {vdir}; bitmap {bsize} bytes")
    sparse_file(m, size)
    sparse_file(s_, size)
    sparse_file(b, bsize)
    rng = random.Random(seed)
    eng = Engine()
    t_enable: dict[str, float] = {}
    t_upd: dict[str, list[float]] = {}
    t_empty: dict[str, list[float]] = {}
    rss: dict[str, float] = {}

    def update_wait(st: Set) -> float:
        def go() -> None:
            st.update(Direction.TO_MASTER)
            st.wait()
        return timed(go)

    try:
        for label, bm in (("bitmap in memory", None), ("bitmap file", b)):
            holder: list[Set] = []

            def enable(bm: Path | None = bm, holder: list[Set] = holder) -> None:
                holder.append(eng.enable(m, s_, bm, Kind.DEPENDENT, chunk_size=chunk))

            rss0 = rss_mib()
            t_enable[label] = timed(enable)
            st = holder[0]
            rss[label] = rss_mib() - rss0
            for r in range(reps):
                log(f"row 4 {label}: round {r + 1}/{reps}")
                for c in rng.sample(range(nchunks), nwrites):
                    st.write(Side.MASTER, c * chunk, os.urandom(chunk))
                if st.status().diff_chunks != nwrites:
                    raise RuntimeError(f"expected {nwrites} chunks marked")
                t_upd.setdefault(label, []).append(update_wait(st))
                if st.status().diff_chunks != 0 or st.status().copy_chunks != 0:
                    raise RuntimeError("the update left bits behind")
                t_empty.setdefault(label, []).append(update_wait(st))
            st.disable()
    finally:
        eng.close()
        if not keep:
            for p in (m, s_, b):
                p.unlink(missing_ok=True)

    sec = Section()
    vol = f"{(size + chunk - 1) // chunk * chunk / TiB:g} TiB" if not refused else (
        f"{(size + chunk) / TiB:g} TiB - {chunk // KiB} KiB")
    if refused:
        sec.notes.append(refused)
    for label in t_upd:
        mu, me = median(t_upd[label]), median(t_empty[label])
        sec.lines += [
            Line("4", f"{vol} sparse, {nchunks:,} chunks, {label}: {nwrites} chunks marked, "
                 "update(TO_MASTER) → wait()", fmt_s(mu), "—", "—", "—", "< 50 ms", mu < 0.05),
            Line("4", f"{vol} sparse, {label}: nothing marked (pure scan), "
                 "update(TO_MASTER) → wait()", fmt_s(me), "—", "—", "—", "< 50 ms", me < 0.05),
        ]
    per_chunk = (bsize - HEADER_BYTES) * 8 / nchunks
    total = bsize * 8 / nchunks
    sec.lines.append(
        Line("4", f"bitmap volume size, {vol} non-compact set, {chunk // KiB} KiB chunks",
             f"{bsize / MiB:,.0f} MiB: {per_chunk:.6f} bits/chunk + {HEADER_BYTES // KiB} KiB "
             f"header ({total:.6f} bits/chunk overall)", "—", "—", "—",
             "≤ 2 bits/chunk (header aside)", round(per_chunk, 6) <= 2))
    sec.notes.append(
        f"Row 4 samples (median of {reps}): "
        + "; ".join(f"{k}: {nwrites} marked {fmt_samples(t_upd[k])}, nothing marked "
                    f"{fmt_samples(t_empty[k])}, enable {fmt_s(t_enable[k])}"
                    for k in t_upd)
        + f". Master and shadow on {vdir}; bitmap volume file in {data_dir}. Resident memory "
        "the enable added: "
        + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()) + ".")
    return sec
