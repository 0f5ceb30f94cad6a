"""Block-device tooling for the data paths: loop devices, mounts, holders, freezing, and who
holds a device.

Uses util-linux's ``losetup`` for attaching (it knows every kernel's loop ioctls) and the
kernel's own tables (/proc/self/mountinfo, /sys/class/block) for observing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

TIMEOUT = 60.0  # seconds any losetup or umount may take before it counts as hung
BLKFLSBUF = 0x1261  # <linux/fs.h>: flush a block device's buffer cache
FIFREEZE = 0xC0045877  # <linux/fs.h>: _IOWR('X', 119, int)
FITHAW = 0xC0045878


class LoopError(Exception):
    """A loop-device or mount operation failed; the message names the device and the cause."""


def _run(tool: str, *args: str) -> str:
    """Run a util-linux tool with a timeout; its output, or LoopError saying what failed."""
    exe = shutil.which(tool)
    if exe is None:
        raise LoopError(f"{tool} is missing: install util-linux (scripts/setup.sh does)")
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, check=False,
                           timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise LoopError(f"{tool} {' '.join(args)}: no answer in {TIMEOUT:g} s (stopped); "
                        "the device may be hung") from None
    except OSError as e:
        raise LoopError(f"{tool} {' '.join(args)}: {e.strerror}") from e
    if r.returncode != 0:
        raise LoopError(f"{tool} {' '.join(args)}: {r.stderr.strip() or 'failed'}")
    return r.stdout


def _losetup(*args: str) -> str:
    return _run("losetup", *args)


def attach(path: str, *, read_only: bool = False, direct_io: bool = True) -> str:
    """Attach a loop device to ``path``; returns ``/dev/loopN``.

    Direct I/O keeps the loop device from caching what the backing file already serves.
    """
    args = ["--find", "--show"]
    if direct_io:
        args.append("--direct-io=on")
    if read_only:
        args.append("--read-only")
    return _losetup(*args, path).strip()


def detach(dev: str) -> None:
    """Detach a loop device."""
    _losetup("--detach", dev)


SYS_BLOCK = "/sys/block"


@dataclass(frozen=True)
class Loop:
    device: str
    backing_file: str


def list_loops() -> list[Loop]:
    """Every attached loop device with a size, and its backing file: what ``losetup --list``
    says, from /proc/partitions and sysfs without its process start (copies ask before every
    start). A loop device over an empty file serves nothing and is left out."""
    try:
        with open("/proc/partitions", encoding="utf-8") as f:
            names = [fs[3] for fs in map(str.split, f) if len(fs) == 4
                     and fs[3].startswith("loop")]
    except OSError:   # no procfs: losetup knows another way
        return _losetup_loops()
    found = []
    for name in names:
        try:   # a bound loop device has it, a partition of one does not
            with open(os.path.join(SYS_BLOCK, name, "loop", "backing_file"), "rb") as f:
                back = os.fsdecode(f.read().removesuffix(b"\n"))
        except OSError:
            continue
        found.append(Loop(f"/dev/{name}", back.removesuffix(" (deleted)")))
    return found


def _losetup_loops() -> list[Loop]:
    out = _losetup("--list", "--json", "--output", "NAME,BACK-FILE")
    if not out.strip():
        return []
    rows = json.loads(out).get("loopdevices", [])
    return [Loop(r["name"], (r.get("back-file") or "").removesuffix(" (deleted)")) for r in rows]


def loops_backed_by(prefix: str, loops: list[Loop] | None = None) -> list[Loop]:
    """Loop devices whose backing file lies under ``prefix`` (of ``loops``, when the caller
    listed them already)."""
    base = os.path.join(os.path.realpath(prefix), "")
    return [lp for lp in (list_loops() if loops is None else loops)
            if lp.backing_file.startswith(base)]


def _devnum(dev: str) -> tuple[int, int]:
    rdev = os.stat(dev).st_rdev
    return os.major(rdev), os.minor(rdev)


def mountpoints(dev: str) -> list[str]:
    """Where the block device ``dev`` is mounted (empty when it is not)."""
    try:
        major, minor = _devnum(dev)
    except OSError:
        return []
    want = f"{major}:{minor}"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[2] == want:
                found.append(fields[4].replace("\\040", " "))
    return found


def holders(dev: str) -> list[str]:
    """Block devices stacked on ``dev`` (device-mapper, md, ...)."""
    name = os.path.basename(os.path.realpath(dev))
    try:
        return sorted(os.listdir(f"/sys/class/block/{name}/holders"))
    except OSError:
        return []


def openers(dev: str) -> list[str]:
    """Processes that hold ``dev`` open, as ``pid N (comm)``."""
    try:
        rdev = os.stat(dev).st_rdev
    except OSError:
        return []
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                st = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if st.st_rdev == rdev and stat.S_ISBLK(st.st_mode):
                try:
                    with open(f"/proc/{pid}/comm", encoding="utf-8") as f:
                        comm = f.read().strip()
                except OSError:
                    comm = "?"
                found.append(f"pid {pid} ({comm})")
                break
    return found


def users(dev: str, *, processes: bool = False) -> list[str]:
    """What holds ``dev``: mount points, stacked devices and (when asked) processes."""
    found = mountpoints(dev) + [f"/dev/{h}" for h in holders(dev)]
    return found + openers(dev) if processes else found


def flush_buffers(dev: str) -> None:
    """Drop the block device's buffer cache so readers see what the set now holds."""
    fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, BLKFLSBUF, 0)
    finally:
        os.close(fd)


def fuse_mounts_at(path: str) -> list[str]:
    """ptcopy FUSE mounts at or under ``path`` (left behind by a killed server)."""
    base = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-") if "-" in fields else -1
            fstype = fields[sep + 1] if sep > 0 and sep + 1 < len(fields) else ""
            mp = fields[4].replace("\\040", " ") if len(fields) > 4 else ""
            if fstype == "fuse.ptcopy" and (mp == base or mp.startswith(os.path.join(base, ""))):
                found.append(mp)
    return found


def lazy_unmount(path: str) -> None:
    """Detach a mount even when it is busy or its server is dead."""
    _run("umount", "--lazy", path)


@contextlib.contextmanager
def frozen(mountpoints_: list[str]) -> Iterator[None]:
    """Freeze file systems (FIFREEZE) for the duration of the block; always thaws."""
    fds: list[int] = []
    try:
        for mp in mountpoints_:
            fd = os.open(mp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fds.append(fd)
            try:
                fcntl.ioctl(fd, FIFREEZE, 0)
            except OSError as e:
                fds.pop()
                os.close(fd)
                raise LoopError(f"cannot freeze the file system at {mp}: {e.strerror}") from e
        yield
    finally:
        for fd in reversed(fds):
            with contextlib.suppress(OSError):  # thaw what we froze, whatever happened
                fcntl.ioctl(fd, FITHAW, 0)
            os.close(fd)


# ---- loop devices over an open descriptor -------------------------------------------------
# losetup takes a path and resolves it again (it canonicalises even /proc/self/fd/N to the
# file's name), so a file swapped after it was checked would be what the loop serves. These
# work from the descriptor itself: LOOP_CONFIGURE binds the very open file, and a loop device
# found already bound is accepted only when its backing file is that file (device and inode).

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_SET_DIRECT_IO = 0x4C08
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_DIRECT_IO = 16
# struct loop_info64: device, inode, rdevice, offset, sizelimit (u64); number, encrypt type,
# key size, flags (u32); file name, crypt name (64 bytes each), key (32), init (2 x u64)
_INFO64 = "=QQQQQIIII64s64s32sQQ"
_INFO64_SIZE = 232


@dataclass(frozen=True)
class BoundLoop:
    device: str     # /dev/loopN
    rdev: int       # its device number, from the descriptor it was checked on


def _decode_dev(dev: int) -> int:
    """The kernel's huge_encode_dev (loop_info64.lo_device) as os.makedev's number."""
    return os.makedev((dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00))


def _backing_key(lfd: int) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file a loop device is bound to, None when it is free."""
    buf = bytearray(_INFO64_SIZE)
    try:
        fcntl.ioctl(lfd, LOOP_GET_STATUS64, buf, True)
    except OSError:   # ENXIO: not bound
        return None
    fields = struct.unpack(_INFO64, bytes(buf))
    return _decode_dev(fields[0]), fields[1]


def loop_over(fd: int) -> BoundLoop | None:
    """A loop device already bound to the open file ``fd`` (the same device and inode)."""
    st = os.fstat(fd)
    want = (st.st_dev, st.st_ino)
    try:
        names = sorted(n for n in os.listdir("/sys/block") if n.startswith("loop"))
    except OSError:
        return None
    for name in names:
        if not os.path.isdir(f"/sys/block/{name}/loop"):
            continue   # not bound
        try:
            lfd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            lst = os.fstat(lfd)
            if stat.S_ISBLK(lst.st_mode) and _backing_key(lfd) == want:
                return BoundLoop(f"/dev/{name}", lst.st_rdev)
        finally:
            os.close(lfd)
    return None


def attach_fd(fd: int, *, direct_io: bool = True) -> BoundLoop:
    """Bind a free loop device to the open file ``fd`` itself; direct I/O where the file's
    file system has it (the kernel falls back to the page cache where it has not)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise LoopError(f"descriptor {fd} is not a regular file")
    name = os.readlink(f"/proc/self/fd/{fd}").encode()[:63]
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise LoopError(f"cannot open /dev/loop-control: {e.strerror}") from e
    try:
        for _ in range(32):   # another program may take the free device first
            try:
                n = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                lfd = os.open(f"/dev/loop{n}", os.O_RDWR | os.O_CLOEXEC)
            except OSError as e:
                raise LoopError(f"no free loop device: {e.strerror}") from e
            try:
                for flags in ((LO_FLAGS_DIRECT_IO, 0) if direct_io else (0,)):
                    info = struct.pack(_INFO64, 0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"", b"",
                                       0, 0)
                    config = struct.pack("=II", fd, 0) + info + bytes(64)
                    try:
                        fcntl.ioctl(lfd, LOOP_CONFIGURE, config)
                    except OSError as e:
                        if e.errno == errno.EINVAL and flags:
                            continue   # no direct I/O on this file system
                        if e.errno == errno.EBUSY:
                            break      # taken meanwhile: the next free one
                        raise LoopError(f"cannot bind /dev/loop{n} to {name.decode()}: "
                                        f"{e.strerror}") from e
                    if _backing_key(lfd) != (st.st_dev, st.st_ino):   # cannot happen: say so
                        raise LoopError(f"/dev/loop{n} is not bound to {name.decode()}")
                    return BoundLoop(f"/dev/loop{n}", os.fstat(lfd).st_rdev)
            finally:
                os.close(lfd)
        raise LoopError("no free loop device stayed free")
    finally:
        os.close(ctl)
