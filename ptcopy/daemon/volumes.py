"""Opening the volumes callers name, so the daemon never writes where it should not.

A path is opened once and every check is made on the open descriptor, which is what the engine
then uses: a symlink swapped between the check and the use changes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ptcopy.daemon import identity, options
from ptcopy.daemon.errors import ServiceError
from ptcopy.daemon.identity import Identity
from ptcopy.datapath import blockdev as loopdev
from ptcopy.datapath.kernel.names import PREFIX as DM_PREFIX
from ptcopy.errnames import ErrorName

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Opened:
    given: str      # the path as the caller gave it
    real: str       # what the descriptor really is
    fd: int
    block: bool
    size: int
    identity: Identity | None = None   # what the descriptor is (read from it, not the path)


@dataclass(frozen=True)
class Expect:
    """What an open must find: the identity recorded for the volume (None: nothing recorded
    yet, a state store from before identities were kept) and the UUID its ptcopy header must
    carry (bitmap and overflow volumes; '' for none)."""
    identity: Identity | None
    header: str = ""


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


def under(real: str, dirs: Sequence[str]) -> bool:
    """Whether the resolved path ``real`` lies inside one of ``dirs``."""
    for d in dirs:
        base = os.path.join(os.path.realpath(d), "")
        if real.startswith(base):
            return True
    return False


def _held_by_ptcopy(path: str) -> bool:
    """Every device stacked on ``path`` is one of the kernel data path's (ptcopy-*)."""
    held = loopdev.holders(path)
    names = []
    for h in held:
        try:
            with open(f"/sys/class/block/{h}/dm/name", encoding="utf-8") as f:
                names.append(f.read().strip())
        except OSError:
            return False
    return bool(names) and all(n.startswith(DM_PREFIX) for n in names)


def _served_by_ptcopy(st: os.stat_result, real: str) -> str:
    """What ptcopy itself serves at this volume ('' when nothing): such a volume under another
    set would send that set's I/O back through ptcopy (re-entrant, and a group freeze could
    wait on itself)."""
    on_fuse = loopdev.fuse_mounts_at("/")
    backing = real
    if stat.S_ISBLK(st.st_mode):
        sys_dir = f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        with contextlib.suppress(OSError), open(f"{sys_dir}/dm/name", encoding="utf-8") as f:
            name = f.read().strip()
            if name.startswith(DM_PREFIX):
                return f"the device-mapper device {name} that ptcopy serves"
        try:
            with open(f"{sys_dir}/loop/backing_file", encoding="utf-8") as f:
                backing = f.read().strip().removesuffix(" (deleted)")
        except OSError:
            return ""
    for mp in on_fuse:
        if backing.startswith(os.path.join(mp, "")):
            return f"served by ptcopy ({backing})"
    return ""


def _refusal(e: OSError, path: str, role: str) -> ServiceError:
    if e.errno == errno.ENOENT:
        return ServiceError(ErrorName.NOT_FOUND, f"{role} volume {path} does not exist")
    if e.errno == errno.EBUSY:
        mps, held = loopdev.mountpoints(path), loopdev.holders(path)
        what = " and ".join(
            ([f"mounted at {', '.join(mps)}"] if mps else [])
            + ([f"held by {', '.join('/dev/' + h for h in held)}"] if held else [])
        ) or "mounted or held by another program"
        return ServiceError(ErrorName.IN_USE, f"{role} volume {path} is {what}")
    if e.errno == errno.EISDIR:
        return ServiceError(ErrorName.INVALID_ARGUMENT, f"{role} volume {path} is a directory")
    return ServiceError(ErrorName.FAILED, f"{role} volume {path}: {e.strerror}")


def _is_device(path: str, held: int | None) -> bool:
    """``path`` is the block device numbered ``held``."""
    if held is None:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISBLK(st.st_mode) and st.st_rdev == held


def open_volume(path: str, role: str, file_dirs: Sequence[str], *,
                exclusive: bool = True, held: int | None = None) -> Opened:
    """Open a volume for the engine, or refuse it with a named error.

    Without ``exclusive`` the checks are the same (the device is opened exclusively once, so a
    mounted or held one is refused) but the descriptor returned is not exclusive: on the kernel
    data path device-mapper claims the volume itself. ``held``: the device number of a block
    device the engine already holds exclusively for this very volume (to serve it again)."""
    options.path(path, role)
    try:
        # O_EXCL without O_CREAT: exclusive for block devices (refused while mounted or held),
        # ignored for regular files.
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_EXCL | os.O_NOCTTY)
    except OSError as e:
        if not exclusive and e.errno == errno.EBUSY and (_held_by_ptcopy(path)
                                                         or _is_device(path, held)):
            # the kernel path's own devices hold it (a restart, or a second shadow of a
            # master), or the engine does (a set served again)
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
            exclusive = True   # already shared: nothing to reopen below
        else:
            raise _refusal(e, path, role) from e
    try:

        st = os.fstat(fd)
        real = os.readlink(f"/proc/self/fd/{fd}")
        served = _served_by_ptcopy(st, real)
        if served:
            raise ServiceError(ErrorName.INVALID_ARGUMENT,
                               f"{role} volume {path} is {served}: a set's volumes are real "
                               "volumes, never ones ptcopy serves")
        if stat.S_ISBLK(st.st_mode):
            if st.st_rdev in _root_devices():
                raise ServiceError(ErrorName.IN_USE,
                                   f"{role} volume {path} holds the root file system")
            with open(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/size",
                      encoding="ascii") as f:
                size = int(f.read()) * 512
            if not exclusive:
                shared = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
                os.close(fd)
                fd = shared
            return Opened(path, real, fd, True, size, identity.of_fd(fd, role))
        if stat.S_ISREG(st.st_mode):
            if not under(real, file_dirs):
                allowed = ", ".join(file_dirs) or "none configured"
                raise ServiceError(ErrorName.NOT_AUTHORIZED,
                                   f"{role} volume {path} is a file outside the directories "
                                   f"ptcopyd may use for file volumes ({allowed})")
            return Opened(path, real, fd, False, st.st_size, identity.of_fd(fd, role))
        raise ServiceError(ErrorName.INVALID_ARGUMENT,
                           f"{role} volume {path} is neither a block device nor a file")
    except BaseException:
        os.close(fd)
        raise


def check(v: Opened, role: str, want: Expect) -> identity.Verdict:
    """Refuse (``WrongVolume``) a descriptor that is not the recorded volume."""
    assert v.identity is not None
    if want.identity is None:   # nothing recorded yet: only the header can be checked
        verdict = identity.compare(v.identity, v.identity, want.header)
    else:
        verdict = identity.compare(want.identity, v.identity, want.header)
    if not verdict.ok:
        raise ServiceError(ErrorName.WRONG_VOLUME,
                           f"{role} volume {v.given} is not the volume recorded for it: "
                           f"{verdict.why}; nothing was written to it")
    if verdict.weak:
        log.warning("%s volume %s has no stable identifier (no WWN, serial, partition, "
                    "device-mapper or md UUID, loop backing file): it was checked by %s only",
                    role, v.given, ", ".join(sorted(v.identity.weak)))
    return verdict


@contextlib.contextmanager
def opened(paths: Sequence[tuple[str, str]], file_dirs: Sequence[str], *,
           exclusive: bool = True,
           expect: Sequence[Expect | None] | None = None,
           held: Sequence[int | None] | None = None) -> Iterator[list[Opened]]:
    """Open several (path, role) volumes; refuse the same volume twice; close them after.

    ``expect`` (one per path, None for no check): each descriptor must be the volume recorded
    for it (``check``) before anything uses it, so a refused volume has nothing written.
    ``held`` (one per path): as ``open_volume``'s."""
    done: list[Opened] = []
    try:
        for i, (p, role) in enumerate(paths):
            v = open_volume(p, role, file_dirs, exclusive=exclusive,
                            held=held[i] if held is not None else None)
            done.append(v)
            want = expect[i] if expect is not None else None
            if want is not None:
                check(v, role, want)
        seen: dict[tuple[int, int], str] = {}
        for v, (_, role) in zip(done, paths, strict=True):
            st = os.fstat(v.fd)
            key = (st.st_rdev, 0) if v.block else (st.st_dev, st.st_ino)
            if key in seen:
                raise ServiceError(ErrorName.SAME_VOLUME,
                                   f"{seen[key]} and {role} are the same volume ({v.given})")
            seen[key] = role
        yield done
    finally:
        for v in done:
            os.close(v.fd)
