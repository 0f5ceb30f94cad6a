"""The userspace data path: sets served on a FUSE mount, with a loop device on each file.

Applications never write a managed volume directly; they use ``/dev/loopN`` (or the FUSE file)
that this module hands out. It decides and observes; the engine's C threads move the bytes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ptcopy.datapath import blockdev
from ptcopy.datapath.base import Capabilities, SetVolumes, Volume
from ptcopy.engine import (
    Direction,
    Engine,
    Hold,
    InUse,
    InvalidArgument,
    Kind,
    NotFound,
    Progress,
    Server,
    Set,
)
from ptcopy.errnames import ErrorName

log = logging.getLogger(__name__)


class DataPathError(InvalidArgument, name=ErrorName.DATA_PATH):
    """The data path cannot do what was asked (missing /dev/fuse, loop devices, ...)."""


@dataclass
class Served:
    """What users get for one set: files on the FUSE mount and loop devices over them."""

    name: str
    set: Set
    master_file: str
    shadow_file: str
    devices: dict[Direction, str] = field(default_factory=dict)

    @property
    def master_device(self) -> str | None:
        return self.devices.get(Direction.TO_MASTER)

    @property
    def shadow_device(self) -> str | None:
        return self.devices.get(Direction.TO_SHADOW)


def _require(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise DataPathError(f"{path} is missing: {what}")


def private_dir(path: str) -> None:
    """Make ``path`` a directory only its owner, the daemon's user (root), can enter: created
    0700, a looser mode tightened. Refused when it is a symbolic link, not a directory, or
    owned by another user: that user could reach, or swap, what the daemon puts there."""
    parent = os.path.dirname(path)
    if parent and parent != path:
        os.makedirs(parent, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        # no following: the checks and the chmod act on the directory itself, not on whatever
        # a link (or a rename between a check and a use) points at
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        what = "a symbolic link" if os.path.islink(path) else "not a directory"
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            what = os.strerror(e.errno or errno.EIO)
        raise DataPathError(f"run directory {path} is {what}; refusing to serve "
                                  "volumes there") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise DataPathError(f"run directory {path} is owned by uid {st.st_uid}, not "
                                      f"{os.geteuid()}; refusing to serve volumes there (remove "
                                      "it, or give it to root)")
        if stat.S_IMODE(st.st_mode) != 0o700:
            log.warning("run directory %s had mode %o; made it 0700", path,
                        stat.S_IMODE(st.st_mode))
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _lock_run_dir(run_dir: str) -> int:
    """One data path per run directory: a second one would take the first one's mounts
    for leftovers. The lock dies with its process, so a killed server never blocks a restart."""
    path = os.path.join(run_dir, "datapath.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        with contextlib.suppress(OSError):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise InUse(f"run directory {run_dir} is served by another data path "
                          f"(pid {holder or '?'}); stop it first") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def cleanup_stale(mountpoint: str) -> list[str]:
    """Remove what a killed server left behind: loop devices over its files, its FUSE mount.

    Returns what was cleaned, for the log.
    """
    cleaned = []
    for lp in blockdev.loops_backed_by(mountpoint):
        with contextlib.suppress(blockdev.LoopError):
            for mp in blockdev.mountpoints(lp.device):
                blockdev.lazy_unmount(mp)
                cleaned.append(mp)
            blockdev.detach(lp.device)
            cleaned.append(lp.device)
    for mp in sorted(blockdev.fuse_mounts_at(mountpoint), reverse=True):
        blockdev.lazy_unmount(mp)
        cleaned.append(mp)
    return cleaned


CAPS = Capabilities(name="userspace", bitmap_in_memory=True, exclusive_volumes=True,
                    target_writable_during_copy=True, group_restore_dependent=True,
                    suspend_copy=True, rename_served=True, serve_one_side=True,
                    group_hold=True)


class UserspacePath:
    """Serves sets under ``<run_dir>/volumes`` (a ``DataPath``). The engine moves the bytes
    and runs the copies: copy state, progress and abort are the engine set's.

    Starting cleans what an earlier, killed server left behind, so a restart serves the sets
    again without manual steps.
    """

    caps = CAPS

    def __init__(self, engine: Engine, run_dir: str, *, max_threads: int = 16) -> None:
        _require("/dev/fuse", "load the fuse kernel module (modprobe fuse)")
        _require("/dev/loop-control", "load the loop kernel module (modprobe loop)")
        run_dir = os.path.abspath(run_dir)
        # Only root reaches a set's data: the run directory and the mount point are root's
        # alone, whatever mode they had (the FUSE mount checks its own modes on top).
        private_dir(run_dir)
        self._lock_fd = _lock_run_dir(run_dir)
        try:
            self.mountpoint = os.path.join(run_dir, "volumes")
            # a killed server leaves a dead mount here that even stat() fails on: clean first
            for item in cleanup_stale(self.mountpoint):
                log.warning("cleaned up after an unclean stop: %s", item)
            private_dir(self.mountpoint)
            self._server = Server(engine, self.mountpoint, max_threads=max_threads)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._served: dict[str, Served] = {}

    @property
    def served(self) -> dict[str, Served]:
        return dict(self._served)

    def check_new(self, kind: Kind, chunk: int, master_size: int, shadow: tuple[str, int],
                  bitmap: tuple[str, int] | None) -> None:
        """Every volume the engine accepts can be served here."""

    def serve(self, name: str, set_: Set, volumes: SetVolumes | None = None, *,
              loop: bool = True, shadow: bool = True) -> Served:
        """Serve a set's master and shadow; attach loop devices unless ``loop`` is False.
        ``volumes`` is not used: the FUSE server reads and writes through the engine's set.
        ``shadow=False`` (an exported shadow) attaches no shadow device; an imported shadow
        gets no master device (its FUSE master file refuses I/O: the engine has no master)."""
        master_file, shadow_file = self._server.export(name, set_)
        served = Served(name, set_, master_file, shadow_file)
        sides = {Direction.TO_MASTER: master_file, Direction.TO_SHADOW: shadow_file}
        if set_.status().kind is Kind.IMPORTED:
            del sides[Direction.TO_MASTER]
        if not shadow:
            del sides[Direction.TO_SHADOW]
        try:
            if loop:
                for direction, path in sides.items():
                    served.devices[direction] = blockdev.attach(path)
        except blockdev.LoopError as e:
            for dev in served.devices.values():
                with contextlib.suppress(blockdev.LoopError):
                    blockdev.detach(dev)
            self._server.unexport(name, force=True)
            raise DataPathError(f"cannot attach loop devices for {name}: {e}") from e
        self._served[name] = served
        return served

    def _not_busy(self, name: str, direction: Direction) -> None:
        """Refuse (InUse) while a served device of one side is in use."""
        busy = self.users(name, direction, processes=True)
        for _ in range(10):   # a process that only glances at it (udev, losetup -l)
            if not busy or any(not b.startswith("pid ") for b in busy):
                break
            time.sleep(0.1)
            busy = self.users(name, direction, processes=True)
        if busy:
            side = "master" if direction is Direction.TO_MASTER else "shadow"
            raise InUse(f"the {side} of {name} is in use by {', '.join(busy)}")

    def serve_shadow(self, name: str, on: bool) -> None:
        """Detach (``on`` False, refused while it is in use) or attach the shadow's loop
        device; the master's keeps serving. Without loop devices there is nothing to do: the
        engine refuses an exported shadow's I/O through its file."""
        served = self._get(name)
        dev = served.devices.get(Direction.TO_SHADOW)
        if not on and dev is not None:
            self._not_busy(name, Direction.TO_SHADOW)
            blockdev.detach(dev)
            del served.devices[Direction.TO_SHADOW]
        elif on and dev is None and Direction.TO_MASTER in served.devices:
            try:
                served.devices[Direction.TO_SHADOW] = blockdev.attach(served.shadow_file)
            except blockdev.LoopError as e:
                raise DataPathError(f"cannot attach the shadow's loop device of {name}: "
                                    f"{e}") from e

    def started(self, name: str, *, new: bool) -> None:
        """Nothing to start: the engine makes a new set's first copy and resumes its own."""

    def _get(self, name: str) -> Served:
        try:
            return self._served[name]
        except KeyError:
            raise NotFound(f"set {name!r} is not served") from None

    def users(self, name: str, direction: Direction, *, processes: bool = False,
              loops: list[blockdev.Loop] | None = None) -> list[str]:
        """Who holds the served device of one side: mount points, stacked devices, other loop
        devices over the same file (of ``loops`` when the caller listed them) and, when
        ``processes``, processes holding it open."""
        served = self._get(name)
        dev = served.devices.get(direction)
        found = blockdev.users(dev, processes=processes) if dev else []
        path = served.master_file if direction is Direction.TO_MASTER else served.shadow_file
        for lp in blockdev.loops_backed_by(os.path.dirname(path), loops):
            if lp.backing_file == path and lp.device != dev:
                found += [lp.device, *blockdev.users(lp.device, processes=processes)]
        return found

    def unserve(self, name: str, *, force: bool = False) -> None:
        """Stop serving a set: refused while a served device is in use, unless ``force``."""
        served = self._get(name)
        if not force:
            for direction in Direction:
                self._not_busy(name, direction)
        for direction, dev in list(served.devices.items()):
            try:
                blockdev.detach(dev)
            except blockdev.LoopError:
                if os.path.exists(dev) and not force:
                    raise
            del served.devices[direction]   # keep the record true to what is attached
        self._server.unexport(name, force=force)
        del self._served[name]

    def _check_target(self, name: str, direction: Direction,
                      loops: list[blockdev.Loop] | None = None) -> None:
        busy = self.users(name, direction, loops=loops)
        if busy:
            side = "master" if direction is Direction.TO_MASTER else "shadow"
            raise InUse(f"cannot copy into the {side} of {name}: it is in use by "
                              f"{', '.join(busy)}; unmount it first")

    def _refresh(self, name: str, direction: Direction) -> None:
        """Readers of the target must see the new point in time at once."""
        self._server.invalidate(name)
        dev = self._served[name].devices.get(direction)
        if dev:
            blockdev.flush_buffers(dev)

    def _sources(self, names: Sequence[str], direction: Direction) -> tuple[list[Set], list[str]]:
        """The engine sets, once every target is checked unused, and the mount points of the
        sources (frozen for the instant the point in time is taken)."""
        if not names:
            raise InvalidArgument("no set named")
        loops = blockdev.list_loops()   # once for every check below
        for name in names:
            self._check_target(name, direction, loops)
        source = Direction.TO_SHADOW if direction is Direction.TO_MASTER else Direction.TO_MASTER
        mounted = [mp for n in names for mp in self.users(n, source, loops=loops)
                   if mp.startswith("/") and not mp.startswith("/dev/")]
        return [self._served[n].set for n in names], mounted

    def copy(self, names: Sequence[str], direction: Direction, *, full: bool,
             owner: int = 0) -> float:
        """Copy or update one or several served sets at one point in time.

        The targets must not be in use. Mounted *sources* are frozen (FIFREEZE) for the instant
        the point in time is taken, so each file system is captured consistent. Returns how
        long writes were held, in seconds.
        """
        sets, mounted = self._sources(names, direction)
        with blockdev.frozen(mounted):
            held = sets[0]._engine.group_copy(sets, direction, full=full, owner=owner)
        for name in names:
            self._refresh(name, direction)
        return held

    def hold(self, names: Sequence[str], direction: Direction, *, full: bool, owner: int,
             timeout: float) -> UserspaceHold:
        """``copy``'s point in time held until ``release``. Mounted sources are frozen
        (FIFREEZE) while the engine takes the hold and thawed right after: their file systems
        are consistent at the hold's instant, and what they write later waits at the engine's
        gate, so nothing of it reaches the point in time."""
        sets, mounted = self._sources(names, direction)
        with blockdev.frozen(mounted):
            h = sets[0]._engine.group_hold(sets, direction, full=full, owner=owner,
                                           timeout=timeout)
        return UserspaceHold(self, list(names), direction, h)

    def progress(self, name: str) -> Progress:
        """The engine set's copy."""
        return self._get(name).set.progress()

    def abort(self, name: str) -> None:
        """Stop the engine set's copy."""
        self._get(name).set.abort()

    def wait(self, name: str, timeout: float | None = None) -> bool:
        """Until the engine set's copy is over; False at the timeout."""
        return self._get(name).set.wait(timeout)

    def suspend(self, name: str) -> None:
        """Suspend the engine set's copy (it keeps its place; I/O goes on as during a copy)."""
        self._get(name).set.suspend()

    def resume(self, name: str) -> None:
        """Resume the engine set's suspended copy."""
        self._get(name).set.resume()

    def rename(self, name: str, new: str) -> None:
        """The FUSE directory takes the new name and keeps its inodes, so open files and the
        loop devices (``/dev/loopN``, named by number) keep serving without a pause."""
        served = self._get(name)
        if new in self._served:
            raise InvalidArgument(f"a set named {new!r} is served already")
        served.master_file, served.shadow_file = self._server.rename(name, new)
        served.name = new
        self._served[new] = self._served.pop(name)

    def copier(self, name: str) -> Set:
        """A job follows the engine set itself."""
        return self._get(name).set

    def attach_overflow(self, name: str, overflow: Volume) -> None:
        """Nothing to follow: the FUSE server reads through the engine, which spills itself."""

    def detach_overflow(self, name: str) -> None:
        """Nothing uses the overflow volume here but the engine."""

    def status(self, name: str) -> dict[str, object]:
        """The served files and devices of a set."""
        served = self._get(name)
        return {"master_file": served.master_file, "shadow_file": served.shadow_file,
                "master_device": served.master_device, "shadow_device": served.shadow_device}

    def stop(self, *, force: bool = False) -> None:
        """Unserve everything and unmount; refused while a served device is in use."""
        if self._lock_fd < 0:
            return
        for name in list(self._served):
            self.unserve(name, force=force)
        self._server.stop()
        os.close(self._lock_fd)
        self._lock_fd = -1

    def __enter__(self) -> UserspacePath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(force=True)


class UserspaceHold:
    """A group point in time held on the userspace path (``UserspacePath.hold``)."""

    def __init__(self, path: UserspacePath, names: list[str], direction: Direction,
                 hold: Hold) -> None:
        self._path = path
        self._names = names
        self._direction = direction
        self._hold = hold

    def release(self, commit: bool) -> float:
        """Take the point in time or not; on a commit the targets must still be unused (a
        target mounted meanwhile aborts the hold: nothing changes)."""
        if commit:
            try:
                loops = blockdev.list_loops()
                for name in self._names:
                    self._path._check_target(name, self._direction, loops)
            except BaseException:
                self._hold.release(False)
                raise
        held = self._hold.release(commit)
        if commit:
            for name in self._names:
                self._path._refresh(name, self._direction)
        return held
