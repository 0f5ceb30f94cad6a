"""The block devices under and over a set: what each volume is served from (its own device, or
for a file the loop device bound to that open file), and who holds a served device open."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ptcopy.datapath import blockdev as loopdev
from ptcopy.datapath.base import SetVolumes
from ptcopy.engine import InvalidArgument, dm_info

# udev probes (blkid) a device after every change event, and the resume that puts a new point
# in time in force is one: for a few milliseconds a device can be open with nobody using it.
# An opener still there after this grace is a user, and the operation is refused.
OPEN_GRACE = 3.0


@dataclass(frozen=True)
class Block:
    """What one volume is served from: the checked descriptor's own device, or for a file the
    loop device bound to that very open file."""

    label: str                # the path as given (messages)
    node: str                 # a block device node (the given device, or /dev/loopN)
    ref: str                  # "major:minor", what tables name: the device that was checked
    key: tuple[int, int]      # (0, rdev) of a device, (st_dev, st_ino) of a file
    loop: bool


def block(label: str, fd: int) -> Block:
    """The block device a checked descriptor is served from. Nothing is looked up by path:
    a block device is named in tables by its device number, a file gets the loop device bound
    to the open file (one per file, found again by device and inode, so sets sharing a master
    file share one origin and a restarted ptcopyd finds the device it built on)."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return Block(label, label, f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}",
                     (0, st.st_rdev), False)
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"{label} is neither a block device nor a file")
    try:
        lp = loopdev.loop_over(fd) or loopdev.attach_fd(fd)
    except loopdev.LoopError as e:
        raise InvalidArgument(f"cannot attach a loop device to {label}: {e}") from e
    return Block(label, lp.device, f"{os.major(lp.rdev)}:{os.minor(lp.rdev)}",
                 (st.st_dev, st.st_ino), True)


def kept(fd: int) -> int:
    """A descriptor of the path's own for a volume the caller checked (the caller closes its)."""
    mine = os.dup(fd)
    os.set_inheritable(mine, False)
    return mine


def size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)


def unbind_loop(device: str) -> None:
    """Detach a loop device by ioctl (no losetup process). One still open elsewhere is
    detached by the kernel when its last opener closes it (LOOP_CLR_FD then sets autoclear);
    one already free is left as it is."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        with contextlib.suppress(OSError):   # ENXIO: free already; EBUSY: older kernels
            fcntl.ioctl(fd, loopdev.LOOP_CLR_FD, 0)
    finally:
        os.close(fd)


def release_loops(blocks: Iterable[Block], in_use: set[str]) -> None:
    """Detach the loop devices of these volumes that no served set uses any more (``in_use``:
    the refs of every volume still served)."""
    used = set(in_use)
    for ref, node in sorted({(b.ref, b.node) for b in blocks if b.loop}):
        if ref in used:
            continue
        with contextlib.suppress(loopdev.LoopError):   # still held: it stays
            loopdev.detach(node)
        used.add(ref)


@contextlib.contextmanager
def opened_volumes(master: str, shadow: str, bitmap: str,
                   overflow: str | None = None) -> Iterator[SetVolumes]:
    """A set's volumes named by path (library callers, tests, benchmarks), opened for
    ``KernelPath.serve`` and closed afterwards (the path keeps descriptors of its own)."""
    fds: list[int] = []
    try:
        vols: list[tuple[str, int] | None] = []
        for path in (master, shadow, bitmap, overflow):
            if path is None:
                vols.append(None)
                continue
            fds.append(os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY))
            vols.append((path, fds[-1]))
        m, s, b, o = vols
        assert m is not None and s is not None
        yield SetVolumes(m, s, b, o)
    finally:
        for fd in fds:
            os.close(fd)


@contextlib.contextmanager
def opened_volume(path: str) -> Iterator[tuple[str, int]]:
    """One volume named by path, as ``opened_volumes``."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        yield path, fd
    finally:
        os.close(fd)


def settled_open_count(name: str) -> int:
    """The dm device's open count once transient openers (udev's probe) are gone, or at the
    end of OPEN_GRACE."""
    deadline = time.monotonic() + OPEN_GRACE
    while True:
        info = dm_info(name)
        if not info.exists or not info.open_count or time.monotonic() >= deadline:
            return info.open_count if info.exists else 0
        time.sleep(0.05)


def users(device: str) -> list[str]:
    """Who holds a served device (``/dev/mapper/<name>``) open: mounts, stacked devices, or
    the number of openers when they cannot be named; [] when nobody does."""
    count = settled_open_count(os.path.basename(device))
    found = loopdev.users(device) if count and os.path.exists(device) else []
    if count and not found:
        found = [f"{count} opener(s)"]
    return found
