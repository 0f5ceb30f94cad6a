"""Reading a dm-snapshot persistent store's exception table (ptcopy/datapath/kernel/exceptions.py)
from a file laid out as the kernel lays it out: header chunk, then areas of one metadata chunk
followed by the data chunks it describes, ended by an entry whose store chunk is 0."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from ptcopy.datapath.kernel.exceptions import MAGIC, runs, stored_chunks

CHUNK = 4096
PER_AREA = CHUNK // 16


def store(path: Path, olds: list[int]) -> None:
    data = bytearray(CHUNK * (1 + 2 * (PER_AREA + 1)))
    struct.pack_into("<IIII", data, 0, MAGIC, 1, 1, CHUNK // 512)
    for i, old in enumerate(olds):
        area, k = divmod(i, PER_AREA)
        meta = (1 + area * (PER_AREA + 1)) * CHUNK
        struct.pack_into("<QQ", data, meta + 16 * k, old, 2 + i + area)
    path.write_bytes(bytes(data))


def direct_ok(path: Path) -> None:
    """O_DIRECT is what the reader uses; a tmpfs test directory does not take it."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
    except OSError:
        pytest.skip("no O_DIRECT on this file system")


def test_table_across_two_areas(tmp_path: Path) -> None:
    f = tmp_path / "cow"
    olds = [*range(7, 7 + PER_AREA), 3, 1000, 8]   # the second area, one repeated
    store(f, olds)
    direct_ok(f)
    got = stored_chunks(str(f), CHUNK)
    assert got == sorted(set(olds))
    assert runs(got) == [(3, 1), (7, PER_AREA), (1000, 1)]


def test_zeroed_header_is_an_empty_store(tmp_path: Path) -> None:
    f = tmp_path / "cow"
    f.write_bytes(bytes(4 * CHUNK))
    direct_ok(f)
    assert stored_chunks(str(f), CHUNK) == []


def test_chunk_size_must_match(tmp_path: Path) -> None:
    f = tmp_path / "cow"
    store(f, [1])
    direct_ok(f)
    with pytest.raises(ValueError, match="chunks"):
        stored_chunks(str(f), 2 * CHUNK)
