"""Block-device I/O for checks: O_DIRECT reads and writes (no page cache between the test and
the set), whole-device digests and comparisons."""

from __future__ import annotations

import hashlib
import mmap
import os

from tests.helpers.names import MIB


def _aligned(data: bytes) -> mmap.mmap:
    buf = mmap.mmap(-1, max(len(data), 1))
    buf.write(data)
    return buf


def write_dev(dev: str, offset: int, data: bytes) -> None:
    """Write to a served device with O_DIRECT (4 KiB aligned) and fsync."""
    assert offset % 4096 == 0 and len(data) % 4096 == 0
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
    try:
        buf = _aligned(data)
        try:
            n = os.pwrite(fd, buf, offset)
        finally:
            buf.close()
        assert n == len(data), f"short write to {dev}: {n} of {len(data)}"
        os.fsync(fd)
    finally:
        os.close(fd)


def read_dev(dev: str, offset: int, length: int) -> bytes:
    """Read a served device with O_DIRECT (no page cache between us and the set)."""
    assert offset % 4096 == 0 and length % 4096 == 0
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        buf = mmap.mmap(-1, length)
        try:
            n = os.preadv(fd, [buf], offset)
            return bytes(buf[:n])
        finally:
            buf.close()
    finally:
        os.close(fd)


def dev_size(dev: str) -> int:
    fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def digest(dev: str) -> str:
    """sha256 of a whole device, read with O_DIRECT."""
    size = dev_size(dev)
    h = hashlib.sha256()
    step = MIB
    for off in range(0, size, step):
        h.update(read_dev(dev, off, min(step, size - off)))
    return h.hexdigest()


def same_content(a: str, b: str) -> str:
    """'' when two devices hold the same bytes, else where they first differ."""
    size = dev_size(a)
    if size != dev_size(b):
        return f"sizes differ: {a} {size}, {b} {dev_size(b)}"
    for off in range(0, size, MIB):
        x = read_dev(a, off, min(MIB, size - off))
        y = read_dev(b, off, min(MIB, size - off))
        if x != y:
            first = next(i for i in range(len(x)) if x[i] != y[i])
            return f"{a} and {b} differ at byte {off + first}"
    return ""

