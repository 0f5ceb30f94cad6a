"""Opening the volumes callers name, so the daemon never writes where it should not.

A path is opened once and every check is made on the open descriptor, which is what the engine
then uses: a symlink swapped between the check and the use changes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ptcopy import loopdev
from ptcopy.daemon import options
from ptcopy.daemon.errors import ServiceError


@dataclass(frozen=True)
class Opened:
    given: str      # the path as the caller gave it
    real: str       # what the descriptor really is
    fd: int
    block: bool
    size: int


def _root_devices() -> set[int]:
    """The device holding / and, for a partition, its whole disk."""
    dev = os.stat("/").st_dev
    found = {dev}
    with contextlib.suppress(OSError):
        sys_path = os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
        if os.path.exists(os.path.join(sys_path, "partition")):
            with open(os.path.join(os.path.dirname(sys_path), "dev"), encoding="ascii") as f:
                major, minor = f.read().strip().split(":")
                found.add(os.makedev(int(major), int(minor)))
    return found


def _under(real: str, dirs: Sequence[str]) -> bool:
    for d in dirs:
        base = os.path.join(os.path.realpath(d), "")
        if real.startswith(base):
            return True
    return False


def open_volume(path: str, role: str, file_dirs: Sequence[str]) -> Opened:
    """Open a volume for the engine, or refuse it with a named error."""
    options.path(path, role)
    try:
        # O_EXCL without O_CREAT: exclusive for block devices (refused while mounted or held),
        # ignored for regular files.
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_EXCL | os.O_NOCTTY)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise ServiceError("NotFound", f"{role} volume {path} does not exist") from e
        if e.errno == errno.EBUSY:
            mps, held = loopdev.mountpoints(path), loopdev.holders(path)
            what = " and ".join(
                ([f"mounted at {', '.join(mps)}"] if mps else [])
                + ([f"held by {', '.join('/dev/' + h for h in held)}"] if held else [])
            ) or "mounted or held by another program"
            raise ServiceError("InUse", f"{role} volume {path} is {what}") from e
        if e.errno == errno.EISDIR:
            raise ServiceError("InvalidArgument", f"{role} volume {path} is a directory") from e
        raise ServiceError("Failed", f"{role} volume {path}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        real = os.readlink(f"/proc/self/fd/{fd}")
        if stat.S_ISBLK(st.st_mode):
            if st.st_rdev in _root_devices():
                raise ServiceError("InUse", f"{role} volume {path} holds the root file system")
            with open(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/size",
                      encoding="ascii") as f:
                size = int(f.read()) * 512
            return Opened(path, real, fd, True, size)
        if stat.S_ISREG(st.st_mode):
            if not _under(real, file_dirs):
                allowed = ", ".join(file_dirs) or "none configured"
                raise ServiceError("NotAuthorized",
                                   f"{role} volume {path} is a file outside the directories "
                                   f"ptcopyd may use for file volumes ({allowed})")
            return Opened(path, real, fd, False, st.st_size)
        raise ServiceError("InvalidArgument",
                           f"{role} volume {path} is neither a block device nor a file")
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def opened(paths: Sequence[tuple[str, str]], file_dirs: Sequence[str]) -> Iterator[list[Opened]]:
    """Open several (path, role) volumes; refuse the same volume twice; close them after."""
    done: list[Opened] = []
    try:
        for p, role in paths:
            v = open_volume(p, role, file_dirs)
            done.append(v)
        seen: dict[tuple[int, int], str] = {}
        for v, (_, role) in zip(done, paths, strict=True):
            st = os.fstat(v.fd)
            key = (st.st_rdev, 0) if v.block else (st.st_dev, st.st_ino)
            if key in seen:
                raise ServiceError("SameVolume", f"{seen[key]} and {role} are the same volume "
                                                 f"({v.given})")
            seen[key] = role
        yield done
    finally:
        for v in done:
            os.close(v.fd)
