"""What the kernel data path keeps on a set's bitmap volume, after the engine's bitmaps.

Layout (offsets in bytes from the start of the bitmap volume)::

    0          the engine's header and bitmaps (engine.bitmap_size)
    K          kernel record, 4 KiB: magic, CRC-32C, JSON (era baselines, overflow extents)
    K+1 MiB    dm-era metadata for the master     (independent sets)
    K+1 MiB+E  dm-era metadata for the shadow     (independent sets)

K is the engine's size rounded up to 1 MiB; E grows with the number of chunks. Keeping all of
it on the bitmap volume means a set reassembles after a reboot from its own volumes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import zlib
from dataclasses import dataclass, field

from ptcopy.engine import BadHeader, InvalidArgument, Kind, TooSmall, bitmap_size

MIB = 1 << 20
RECORD = 4096
MAGIC = b"PTKRNL01"


def _align(n: int, to: int = MIB) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True)
class Layout:
    record: int        # offset of the kernel record
    era_size: int      # bytes of each era metadata area (0 for dependent sets)
    total: int         # bytes the bitmap volume needs

    @property
    def master_era(self) -> int:
        return self.record + MIB

    @property
    def shadow_era(self) -> int:
        return self.record + MIB + self.era_size


def layout(master_size: int, shadow_size: int, chunk: int, kind: Kind) -> Layout:
    """Where things live on the bitmap volume of a kernel-path set."""
    record = _align(bitmap_size(master_size, shadow_size, chunk, kind))
    chunks = -(-master_size // chunk)
    # era's metadata: superblock, space maps, two writeset bitsets and a 4-byte-per-block
    # array btree; 8 bytes per block plus 4 MiB leaves room for all of it
    era_size = _align(4 * MIB + 8 * chunks) if kind is Kind.INDEPENDENT else 0
    return Layout(record, era_size, record + MIB + 2 * era_size)


def store_needed(master_size: int, chunk: int) -> int:
    """Bytes a dm-snapshot exception store needs to hold every chunk of the master: a header
    chunk, the chunks, and one metadata chunk per chunk/16 exceptions (16-byte entries)."""
    chunks = -(-master_size // chunk)
    per_area = chunk // 16
    return (1 + chunks + -(-chunks // per_area)) * chunk


def check_size(bitmap_bytes: int, lay: Layout, path: str) -> None:
    if bitmap_bytes < lay.total:
        raise TooSmall(f"bitmap volume {path} has {bitmap_bytes} bytes; the kernel data "
                             f"path needs {lay.total} (engine bitmaps, era metadata)")


def overflow_start(size: int) -> int:
    """First byte of an overflow volume the kernel path may hand out: past the engine's header
    and its slot map, sized for the smallest chunk so any chunk size fits."""
    return _align(4096 + -(-size // (4096 * 8)))


@dataclass
class Record:
    """Era baselines and overflow extents of one set. A baseline None means 'unknown': the next
    update treats every chunk as changed on that side."""

    master_era: int | None = None
    shadow_era: int | None = None
    uuid: str = ""   # the set's: a reused bitmap volume's old record is told apart
    # (overflow path, offset, length) pieces appended to a compact shadow's exception store
    extents: list[tuple[str, int, int]] = field(default_factory=list)
    # the copy was suspended by the user (the engine forgets it at an open on this path)
    suspended: bool = False
    # a restore writing the master through its device stack runs, and the master had this many
    # sets when it started: one a crash interrupted resumes only once they are all served again
    # (before that, its copier would write beneath the snapshots and eras of those not yet back)
    restore_sets: int = 0

    def encode(self) -> bytes:
        body = json.dumps({"master_era": self.master_era, "shadow_era": self.shadow_era,
                           "uuid": self.uuid, "extents": self.extents,
                           "suspended": self.suspended,
                           "restore_sets": self.restore_sets}).encode()
        if len(body) > RECORD - 16:
            raise InvalidArgument("kernel record too large (too many overflow extents)")
        raw = MAGIC + zlib.crc32(body).to_bytes(4, "little") + len(body).to_bytes(4, "little")
        return (raw + body).ljust(RECORD, b"\0")

    @classmethod
    def decode(cls, raw: bytes, path: str) -> Record:
        if raw[:8] == b"\0" * 8:
            return cls()   # never written: a new set
        if raw[:8] != MAGIC:
            raise BadHeader(f"bitmap volume {path}: no kernel data path record")
        crc = int.from_bytes(raw[8:12], "little")
        n = int.from_bytes(raw[12:16], "little")
        body = raw[16:16 + n]
        if n > RECORD - 16 or zlib.crc32(body) != crc:
            raise BadHeader(f"bitmap volume {path}: kernel record is corrupted")
        d = json.loads(body)
        return cls(d["master_era"], d["shadow_era"], d.get("uuid", ""),
                   [tuple(e) for e in d["extents"]], bool(d.get("suspended", False)),
                   int(d.get("restore_sets", 0)))


def formatted(fd: int, lay: Layout) -> bool:
    """The kernel record area was written at least once (its magic is there)."""
    return os.pread(fd, 8, lay.record) == MAGIC


def read_record(fd: int, lay: Layout, path: str) -> Record:
    return Record.decode(os.pread(fd, RECORD, lay.record), path)


def write_record(fd: int, lay: Layout, rec: Record) -> None:
    """Durable on return: it is what makes a folded era baseline count."""
    data = rec.encode()
    if os.pwrite(fd, data, lay.record) != len(data):
        raise OSError("short write of the kernel record")
    os.fsync(fd)


# ---- era_invalidate -------------------------------------------------------------------------

_RANGE = re.compile(r'<range\s+begin\s*=\s*"(\d+)"\s+end\s*=\s*"(\d+)"')
_BLOCK = re.compile(r'<block\s+block\s*=\s*"(\d+)"')


def parse_invalidate(xml: str) -> list[tuple[int, int]]:
    """era_invalidate's output as (first block, count) runs. Debian's 0.9 writes spaces around
    '=', so the parse is lenient."""
    runs = [(int(b), int(e) - int(b)) for b, e in _RANGE.findall(xml)]
    runs += [(int(b), 1) for b in _BLOCK.findall(xml)]
    return sorted(r for r in runs if r[1] > 0)


def written_since(meta_device: str, era: int) -> list[tuple[int, int]]:
    """Blocks written in era ``era`` or later, from a metadata snapshot the caller holds."""
    proc = subprocess.run(["era_invalidate", "--metadata-snapshot", "--written-since",
                           str(era), meta_device], capture_output=True, text=True, timeout=600,
                          check=False)
    if proc.returncode != 0:
        raise InvalidArgument(f"era_invalidate on {meta_device} failed: "
                                    f"{proc.stderr.strip() or proc.returncode}")
    return parse_invalidate(proc.stdout)
