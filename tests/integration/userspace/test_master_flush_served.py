"""Security review finding 2, through the served files: fsync and close of the served master
succeed while the shadow, bitmap or overflow volume fails (EIO, or ENOSPC for a full disk), as
a file system on the master needs them to; the shadow's own fsync reports the failure; after
the fault is cleared, ``reset`` makes the shadow equal the master byte for byte.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
from pathlib import Path

import pytest

from ptcopy.engine import Flag, Kind, Set, VolumeRole
from tests.helpers.userspace import Harness

pytestmark = pytest.mark.root

C = 4096
N = 64
OFFLINE = Flag.MASTER_OFFLINE | Flag.SHADOW_OFFLINE | Flag.BITMAP_OFFLINE | Flag.OVERFLOW_OFFLINE
FLAG_OF = {VolumeRole.SHADOW: Flag.SHADOW_OFFLINE, VolumeRole.BITMAP: Flag.BITMAP_OFFLINE,
           VolumeRole.OVERFLOW: Flag.OVERFLOW_OFFLINE}


def make_set(dp: Harness, layout: str) -> tuple[Set, Path, Path]:
    if layout == "compact":   # a two-chunk shadow that spills into an overflow volume
        ov = dp.engine.init_overflow(dp.file("ov.img", 2 * 4096 + N * C), C)
        s, (m, sh, _) = dp.enable(Kind.DEPENDENT, N * C, 2 * C, chunk_size=C, overflow=ov)
    else:
        kind = Kind.INDEPENDENT if layout == "independent" else Kind.DEPENDENT
        s, (m, sh, _) = dp.enable(kind, N * C, chunk_size=C)
    with m.open("r+b") as f:
        f.write(random.Random(3).randbytes(N * C))
    assert s.wait(10)
    return s, m, sh


def read_all(path: str) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return f.read()


def write_chunks(fd: int, chunks: range, rng: random.Random) -> None:
    for c in chunks:
        data = rng.randbytes(200)
        assert os.pwrite(fd, data, c * C + rng.randrange(C - 200)) == 200


@pytest.mark.parametrize("error", [errno.EIO, errno.ENOSPC], ids=["EIO", "ENOSPC"])
@pytest.mark.parametrize(("layout", "failing"), [
    ("independent", VolumeRole.SHADOW), ("independent", VolumeRole.BITMAP),
    ("dependent", VolumeRole.SHADOW), ("compact", VolumeRole.OVERFLOW),
], ids=["independent-shadow", "independent-bitmap", "dependent-shadow", "compact-overflow"])
def test_served_master_fsync_survives_a_failing_shadow_side(dp: Harness, layout: str,
                                                            failing: VolumeRole,
                                                            error: int) -> None:
    s, m, sh = make_set(dp, layout)
    up = dp.userspace()
    served = up.serve("vol", s, loop=False)
    rng = random.Random(5)
    # the compact shadow's two chunks are taken first: the next copy-on-write needs the overflow
    first = 2 if failing == VolumeRole.OVERFLOW else 1
    fd = os.open(served.master_file, os.O_RDWR)
    try:
        write_chunks(fd, range(first), rng)
        os.fsync(fd)
        s.inject_error(failing, error=error)
        write_chunks(fd, range(first, N, 2), rng)
        os.fsync(fd)                      # a journal commit on the master: must succeed
        os.fdatasync(fd)
    finally:
        os.close(fd)                      # FUSE flush: must succeed too
    flags = s.status().flags
    assert flags & FLAG_OF[failing] or failing == VolumeRole.SHADOW, hex(flags)

    # the shadow's own fsync reports the failure, with the errno the volume gave
    sfd = os.open(served.shadow_file, os.O_RDWR)
    try:
        with pytest.raises(OSError) as ei:
            os.fsync(sfd)
        assert ei.value.errno in (error, errno.EIO), ei.value
    finally:
        with contextlib.suppress(OSError):   # its flush fails the same way
            os.close(sfd)
    flags = s.status().flags
    assert flags & FLAG_OF[failing] and flags & Flag.SHADOW_OFFLINE, hex(flags)
    assert not flags & Flag.MASTER_OFFLINE, hex(flags)

    # the master goes on, with its shadow side known to be offline
    fd = os.open(served.master_file, os.O_RDWR)
    try:
        write_chunks(fd, range(first + 1, N, 2), rng)
        os.fsync(fd)
    finally:
        os.close(fd)
    master = m.read_bytes()
    assert read_all(served.master_file) == master

    s.inject_error(failing, False)
    s.reset()
    assert s.wait(10)
    assert not s.status().flags & OFFLINE
    assert read_all(served.shadow_file) == master, "reset missed a chunk the master changed"
    if layout == "independent":
        assert sh.read_bytes() == master
    up.unserve("vol")


def test_a_close_syncs_what_its_descriptor_wrote_and_only_that(dp: Harness) -> None:
    """A served file's close (FUSE flush) syncs when its descriptor wrote since its last
    flush, and only then (losetup attaching a loop device, or a reader, must not wait for a
    sync behind a running copy); fsync always syncs. A failing shadow shows which did."""
    s, _m, _sh = make_set(dp, "independent")
    served = dp.userspace().serve("vol", s, loop=False)
    looker = os.open(served.shadow_file, os.O_RDWR)   # opened for writing, never writes
    reader = os.open(served.shadow_file, os.O_RDONLY)
    writer = os.open(served.shadow_file, os.O_RDWR)
    data = random.Random(6).randbytes(C)
    assert os.pwrite(writer, data, 0) == C
    assert os.pread(reader, C, 0) == data
    s.inject_error(VolumeRole.SHADOW, error=errno.EIO)
    try:
        os.close(looker)                  # nothing written through these: no sync, no error
        os.close(reader)
        with pytest.raises(OSError) as ei:
            os.close(writer)              # its flush syncs the shadow side, which fails
        assert ei.value.errno == errno.EIO, ei.value
        fd = os.open(served.shadow_file, os.O_RDONLY)
        try:
            with pytest.raises(OSError) as ei:
                os.fsync(fd)              # fsync syncs, whoever wrote
            assert ei.value.errno == errno.EIO, ei.value
        finally:
            os.close(fd)
    finally:
        s.inject_error(VolumeRole.SHADOW, on=False)
    assert s.status().flags & Flag.SHADOW_OFFLINE
