"""The kernel path's on-disk record, layout and era_invalidate parsing (no device-mapper
needed: these run on the host)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from ptcopy.datapath.kernel import record, tables
from ptcopy.datapath.kernel.record import MIB, Record
from ptcopy.engine import BadHeader, InvalidArgument, Kind, TooSmall, bitmap_size

CHUNK = 64 * 1024


def test_layout_puts_the_record_after_the_engine_and_sizes_era_by_chunks() -> None:
    tib = 1 << 40
    ind = record.layout(tib, tib, CHUNK, Kind.INDEPENDENT)
    assert ind.record >= bitmap_size(tib, tib, CHUNK, Kind.INDEPENDENT)
    assert ind.record % MIB == 0
    chunks = tib // CHUNK
    assert ind.era_size >= 8 * chunks    # room for era's array, bitsets and space maps
    assert ind.master_era >= ind.record + record.RECORD
    assert ind.shadow_era == ind.master_era + ind.era_size
    assert ind.total == ind.shadow_era + ind.era_size
    dep = record.layout(tib, tib // 10, CHUNK, Kind.DEPENDENT)
    assert dep.era_size == 0 and dep.total == dep.record + MIB
    with pytest.raises(TooSmall, match=str(ind.total)):
        record.check_size(ind.total - 1, ind, "/dev/x")
    record.check_size(ind.total, ind, "/dev/x")


def test_record_round_trips_and_refuses_damage(tmp_path: Path) -> None:
    rec = Record(7, 9, "ab" * 16, [("/dev/ov", 1 << 20, 4 << 20)])
    raw = rec.encode()
    assert len(raw) == record.RECORD
    assert Record.decode(raw, "b") == rec
    assert Record.decode(b"\0" * record.RECORD, "b") == Record()
    paused = Record(1, 2, "cd" * 16, suspended=True)   # a suspended copy is kept
    assert Record.decode(paused.encode(), "b") == paused
    restoring = Record(1, 2, "cd" * 16, restore_sets=3)   # a restore through the stack
    assert Record.decode(restoring.encode(), "b") == restoring
    # a record written before suspensions were kept reads as not suspended
    body = b'{"master_era": 1, "shadow_era": 2, "uuid": "", "extents": []}'
    old = record.MAGIC + zlib.crc32(body).to_bytes(4, "little") + len(body).to_bytes(4, "little")
    assert Record.decode(old + body, "b") == Record(1, 2)
    damaged = bytearray(raw)
    damaged[20] ^= 1
    with pytest.raises(BadHeader, match="corrupted"):
        Record.decode(bytes(damaged), "b")
    with pytest.raises(BadHeader, match="no kernel data path record"):
        Record.decode(b"foreign!" + raw[8:], "b")
    with pytest.raises(InvalidArgument, match="too large"):
        Record(extents=[("/dev/" + "x" * 100, i, i) for i in range(100)]).encode()
    # written and read back through a file, durably
    lay = record.layout(64 * MIB, 64 * MIB, CHUNK, Kind.INDEPENDENT)
    path = tmp_path / "bitmap"
    path.write_bytes(b"")
    os.truncate(path, lay.total)
    fd = os.open(path, os.O_RDWR)
    try:
        record.write_record(fd, lay, rec)
        assert record.read_record(fd, lay, str(path)) == rec
        assert os.pread(fd, 8, lay.record) == record.MAGIC   # where layout says
    finally:
        os.close(fd)


def test_era_invalidate_output_is_parsed_leniently() -> None:
    # Debian's thin-provisioning-tools 0.9 puts spaces around '='
    xml = ('<blocks>\n  <range begin = "4" end = "7"/>\n  <block block = "12"/>\n'
           '<range begin="20" end="21"/>\n</blocks>\n')
    assert record.parse_invalidate(xml) == [(4, 3), (12, 1), (20, 1)]
    assert record.parse_invalidate("<blocks>\n</blocks>\n") == []


def test_overflow_extents_start_past_the_engine_slot_map() -> None:
    for size in (64 * MIB, 1 << 40):
        start = record.overflow_start(size)
        assert start % MIB == 0
        assert start >= 4096 + size // 4096 // 8


def test_tables_are_in_sectors_and_refuse_partial_sectors() -> None:
    assert tables.linear("/dev/a", MIB, 2 * MIB) == "0 2048 linear /dev/a 4096"
    assert tables.concat([("/dev/a", 0, MIB), ("/dev/b", MIB, 2 * MIB)]) == \
        "0 2048 linear /dev/a 0\n2048 4096 linear /dev/b 2048"
    assert tables.snapshot("8:0", "8:1", MIB, CHUNK) == "0 2048 snapshot 8:0 8:1 P 128"
    assert tables.snapshot("8:0", "8:1", MIB, CHUNK, persistent=False).endswith(" N 128")
    assert tables.era("8:2", "8:0", MIB, CHUNK) == "0 2048 era 8:2 8:0 128"
    assert tables.merge("8:0", "8:1", MIB, CHUNK) == "0 2048 snapshot-merge 8:0 8:1 P 128"
    with pytest.raises(InvalidArgument, match="sectors"):
        tables.linear("/dev/a", 1000)
