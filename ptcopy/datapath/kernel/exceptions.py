"""Which chunks a dependent set's dm-snapshot store holds: its persistent exception table.

A snapshot-merge writes these chunks back into the origin's raw volume, beneath the era devices
of the independent sets on that master, so they never see those writes; before a merge starts
the chunks are marked in those sets' bitmaps instead (``merge.start``).

The store's layout (dm-snap-persistent.c): chunk 0 is the header (le32 magic "SnAp", valid,
version, chunk size in sectors); then areas, each one metadata chunk of 16-byte entries (le64
origin chunk, le64 store chunk) followed by the data chunks it describes. The table ends at the
first entry whose store chunk is 0. The kernel commits an entry before it lets the origin write
that needed it go on, so what is on disk covers every write that completed.
"""

from __future__ import annotations

import mmap
import os
import struct

MAGIC = 0x70416E53
ENTRY = struct.Struct("<QQ")


def _read_direct(fd: int, buf: mmap.mmap, offset: int) -> bytes:
    """One chunk with O_DIRECT: the kernel writes the table with its own I/O, not through the
    page cache a buffered read could be served from."""
    n = os.preadv(fd, [buf], offset)
    if n != len(buf):
        raise OSError(f"short read of the snapshot store at {offset}: {n} of {len(buf)} bytes")
    return bytes(buf)


def stored_chunks(device: str, chunk: int) -> list[int]:
    """The origin chunks the snapshot store on ``device`` (its chunk size ``chunk`` bytes)
    holds, ascending. An empty store (a zeroed header: a new point in time) holds none."""
    fd = os.open(device, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    buf = mmap.mmap(-1, chunk)   # page aligned, as O_DIRECT needs
    try:
        magic, valid, _version, sectors = struct.unpack_from("<IIII", _read_direct(fd, buf, 0))
        if magic != MAGIC:
            return []
        if sectors * 512 != chunk:
            raise ValueError(f"snapshot store on {device} has {sectors * 512}-byte chunks, "
                             f"the set {chunk}")
        del valid   # an invalid store still names its chunks: they are what a merge writes
        per_area = chunk // ENTRY.size
        out: list[int] = []
        area = 0
        while True:
            meta = _read_direct(fd, buf, (1 + area * (per_area + 1)) * chunk)
            for i in range(per_area):
                old, new = ENTRY.unpack_from(meta, i * ENTRY.size)
                if new == 0:
                    return sorted(set(out))
                out.append(old)
            area += 1
    finally:
        buf.close()
        os.close(fd)


def runs(chunks: list[int]) -> list[tuple[int, int]]:
    """Sorted chunk numbers as (first, count) runs."""
    out: list[tuple[int, int]] = []
    for c in chunks:
        if out and out[-1][0] + out[-1][1] == c:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((c, 1))
    return out
