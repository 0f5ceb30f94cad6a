"""Security review findings 11 and 13: corrupted bitmap and overflow volumes.

Finding 11: bits past the last chunk (the padding of a bitmap's last word and page) were counted
but never found, so a copy waited for a count that could not reach zero, at 100% CPU. They are
dropped at open and join now; a copy ends. Each copy below is waited for with a generous bound:
the old code never ended it.

Finding 13: an overflow header's data offset had no lower bound and its end could wrap; the
overflow's chunk size was not compared with the set's; index entries naming overflow chunks were
not bounds-checked. Each crafted volume below has its header checksum fixed, so the check under
test is the one that refuses it, with a named error naming the volume.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ptcopy.engine import (
    CHUNK_MIN,
    BadHeader,
    Direction,
    Engine,
    Kind,
    Set,
    Side,
    bitmap_size,
)
from tests.helpers.names import MakeVol

CHUNK = CHUNK_MIN
NCHUNKS = 100            # not a multiple of 64: the last word has 28 padding bits
BOUND = 60.0


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def patch_header(path: Path, fields: list[tuple[int, str, int]]) -> None:
    """Set header fields (offset, struct format, value) and fix the checksum."""
    with path.open("r+b") as f:
        h = bytearray(f.read(4096))
        for off, fmt, value in fields:
            struct.pack_into(fmt, h, off, value)
        struct.pack_into("<I", h, 4092, crc32c(bytes(h[:4092])))
        f.seek(0)
        f.write(h)


def set_bytes(path: Path, off: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(off)
        old = f.read(len(data))
        f.seek(off)
        f.write(bytes(a | b for a, b in zip(old, data, strict=True)))


def header_u64(path: Path, off: int) -> int:
    with path.open("rb") as f:
        f.seek(off)
        (v,) = struct.unpack("<Q", f.read(8))
    return int(v)


class Vols:
    def __init__(self, tmp_vol: MakeVol, tag: str, kind: Kind = Kind.INDEPENDENT) -> None:
        size = NCHUNKS * CHUNK
        self.kind = kind
        self.master = tmp_vol(size, f"{tag}-m")
        self.shadow = tmp_vol(size, f"{tag}-s")
        self.bitmap = tmp_vol(bitmap_size(size, size, CHUNK, kind), f"{tag}-b")

    def enable(self, eng: Engine) -> Set:
        return eng.enable(self.master, self.shadow, self.bitmap, self.kind, chunk_size=CHUNK)

    def open(self, eng: Engine) -> Set:
        return eng.open(self.master, self.shadow, self.bitmap)

    def bitmap_off(self, which: str) -> int:
        return header_u64(self.bitmap, 96 if which == "shadow" else 104)


def stray_bits(v: Vols, which: str, *, real: int | None) -> None:
    """Padding bits in the last word and in the rest of the page, plus optionally one real
    chunk's bit."""
    base = v.bitmap_off(which)
    set_bytes(v.bitmap, base + NCHUNKS // 8, bytes([0xF0]))        # bits 100..103
    set_bytes(v.bitmap, base + 14, b"\xff\xff")                     # bits 112..127
    set_bytes(v.bitmap, base + 300, b"\xff" * 8)                    # past the last word
    if real is not None:
        set_bytes(v.bitmap, base + real // 8, bytes([1 << (real % 8)]))


def settled_set(eng: Engine, tmp_vol: MakeVol, tag: str) -> Vols:
    v = Vols(tmp_vol, tag)
    s = v.enable(eng)
    assert s.wait(BOUND)
    s.close()
    return v


def test_padding_bits_in_the_shadow_bitmap(tmp_vol: MakeVol) -> None:
    with Engine() as eng:
        v = settled_set(eng, tmp_vol, "d")
        stray_bits(v, "shadow", real=5)
        s = v.open(eng)
        assert s.bits("shadow") == [5]
        assert s.status().diff_chunks == 1, "padding bits were counted as chunks"
        s.update(Direction.TO_SHADOW)
        assert s.wait(BOUND), "the update never ended (it waits for bits that are not there)"
        st = s.status()
        assert st.copy_chunks == 0 and st.diff_chunks == 0
        s.close()
        # the repaired page was written back: a second open finds nothing stray
        s = v.open(eng)
        assert s.status().diff_chunks == 0
        s.close()


def test_padding_bits_in_the_copy_bitmap_of_an_interrupted_copy(tmp_vol: MakeVol) -> None:
    with Engine() as eng:
        v = settled_set(eng, tmp_vol, "c")
        stray_bits(v, "copy", real=None)
        flags = struct.unpack_from("<I", v.bitmap.read_bytes()[:4096], 40)[0]
        patch_header(v.bitmap, [(40, "<I", flags | 0x02)])   # COPYING: open resumes the copy
        s = v.open(eng)
        assert s.wait(BOUND), "the resumed copy never ended"
        assert s.status().copy_chunks == 0
        s.close()


def test_join_of_a_bitmap_with_padding_bits(tmp_vol: MakeVol) -> None:
    with Engine() as eng:
        x = settled_set(eng, tmp_vol, "x")
        y = settled_set(eng, tmp_vol, "y")
        stray_bits(y, "shadow", real=7)
        s = x.open(eng)
        s.join(y.bitmap)
        assert s.bits("shadow") == [7] and s.status().diff_chunks == 1
        s.update(Direction.TO_SHADOW)
        assert s.wait(BOUND), "the update after a join never ended"
        s.close()


# ---- overflow volumes (finding 13) -----------------------------------------------------------

OV_SIZE = 2 << 20   # 510 chunks of 4 KiB at data offset 8192


def fresh_overflow(eng: Engine, tmp_vol: MakeVol, name: str) -> Path:
    p = tmp_vol(OV_SIZE, name)
    eng.init_overflow(p, CHUNK).close()
    assert header_u64(p, 48) == 8192 and header_u64(p, 40) == 510
    return p


@pytest.mark.parametrize("data_off, why", [
    (0, "overlaps the header"),                      # chunk 0 would be the header
    (4096, "overlaps the header"),                   # ... or the allocation map
    (8192 + 512, "not a multiple of the chunk size"),
    ((1 << 64) - 4096, "past the end"),              # data_off + 510 chunks wraps to 2 MiB
])
def test_overflow_data_offset_out_of_range(tmp_vol: MakeVol, data_off: int, why: str) -> None:
    with Engine() as eng:
        p = fresh_overflow(eng, tmp_vol, "ov")
        patch_header(p, [(48, "<Q", data_off)])
        with pytest.raises(BadHeader) as exc:
            eng.open_overflow(p)
        assert str(p) in exc.value.message and why in exc.value.message


def spilled_set(eng: Engine, tmp_vol: MakeVol) -> tuple[Path, Path, Path, Path, list[int]]:
    """A compact set with 4 chunks on its shadow and 4 on the overflow; all closed."""
    size, shadow = 32 * CHUNK, 4 * CHUNK
    m, s_, b = (tmp_vol(size, "cm"), tmp_vol(shadow, "cs"),
                tmp_vol(bitmap_size(size, shadow, CHUNK, Kind.DEPENDENT), "cb"))
    ovp = fresh_overflow(eng, tmp_vol, "cov")
    ov = eng.open_overflow(ovp)
    s = eng.enable(m, s_, b, Kind.DEPENDENT, chunk_size=CHUNK, overflow=ov)
    for c in range(8):
        s.write(Side.MASTER, c * CHUNK, bytes([c + 1]) * CHUNK)
    assert s.status().overflow_used == 4
    s.close()
    ov.close()
    idx = b.read_bytes()[4096:4096 + 4 * 32]
    on_ov = [c for c in range(32) if struct.unpack_from("<I", idx, 4 * c)[0] & 0x80000000]
    assert len(on_ov) == 4
    return m, s_, b, ovp, on_ov


def test_overflow_chunk_size_differs_from_the_set(tmp_vol: MakeVol) -> None:
    with Engine() as eng:
        m, s_, b, ovp, _ = spilled_set(eng, tmp_vol)
        # a self-consistent overflow header with 8 KiB chunks: it opens by itself ...
        patch_header(ovp, [(32, "<I", 2 * CHUNK), (40, "<Q", 255), (48, "<Q", 8192)])
        ov = eng.open_overflow(ovp)
        # ... but the set's chunks are 4 KiB: its index would address the wrong bytes
        with pytest.raises(BadHeader) as exc:
            eng.open(m, s_, b, overflow=ov)
        assert str(ovp) in exc.value.message and "8192-byte chunks" in exc.value.message


def test_index_entry_past_the_overflow(tmp_vol: MakeVol) -> None:
    with Engine() as eng:
        m, s_, b, ovp, on_ov = spilled_set(eng, tmp_vol)
        with b.open("r+b") as f:   # the index has no checksum: nothing else notices
            f.seek(4096 + 4 * on_ov[0])
            f.write(struct.pack("<I", 0x80000000 | 5000))
        ov = eng.open_overflow(ovp)
        with pytest.raises(BadHeader) as exc:
            eng.open(m, s_, b, overflow=ov)
        assert str(b) in exc.value.message and "overflow chunk 5000" in exc.value.message
        ov.close()
