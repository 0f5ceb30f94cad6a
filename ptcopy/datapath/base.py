"""The interface every data path implements: how a set's master and shadow reach applications.

The daemon holds one ``DataPath`` and never asks which one it is. What a path cannot do is a
``Capabilities`` field it reports (the daemon refuses with the path's words), never a branch on
its type. Paths today: ``userspace`` (FUSE + loop devices), ``kernel`` (device-mapper) and
``none`` (sets kept by the engine, nothing served: tests and `--data-path none`). A new path (ublk,
NBD) is one new module that implements this protocol, plus one line in ``select.py``.

Every method names a set by the name it was served under. Methods may block (device-mapper
transactions, loop attach, udev grace periods): the daemon calls them from worker threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ptcopy.engine import Direction, Kind, Progress, Set

# A volume as the daemon hands it over: the path it was given and the descriptor it opened and
# checked (identity, not mounted, allowed); a path serves the very volume behind the descriptor.
Volume = tuple[str, int]


@dataclass(frozen=True)
class Capabilities:
    """What a data path can and cannot do, for the daemon's refusals and for clients."""

    name: str
    # the set's bitmap may live in memory only (the kernel path keeps its era metadata and
    # store record on the bitmap volume, so it needs one)
    bitmap_in_memory: bool
    # the daemon opens block volumes O_EXCL (userspace); the kernel path's device-mapper tables
    # hold them itself, so the daemon's descriptors must not be exclusive
    exclusive_volumes: bool
    # the target of a running copy is writable (userspace); on the kernel path it is read-only
    # until the copy ends
    target_writable_during_copy: bool
    # a group restore (to the masters) may include dependent sets
    group_restore_dependent: bool
    # a running copy can be suspended and resumed where it stopped (``suspend``/``resume``)
    suspend_copy: bool = False
    # a served set can be renamed while its devices keep serving (``rename``)
    rename_served: bool = False
    # a set can be served with one side only: the master of a set whose shadow is exported to
    # another host (``serve(shadow=False)``), an imported shadow (kind IMPORTED: no master)
    serve_one_side: bool = False

    # a group point in time can be held across calls (``hold``), for a coordinator that spans
    # hosts
    group_hold: bool = False


@dataclass(frozen=True)
class SetVolumes:
    """The checked descriptors of a set's volumes, for ``DataPath.serve``."""

    master: Volume
    shadow: Volume
    bitmap: Volume | None          # None: the bitmap is in memory
    overflow: Volume | None = None


class Served(Protocol):
    """What users get for one set. A device is None when the path serves none for that side
    (``loop=False`` on the userspace path, or the ``none`` path)."""

    @property
    def master_device(self) -> str | None: ...

    @property
    def shadow_device(self) -> str | None: ...

    @property
    def master_file(self) -> str | None:
        """A file users may open instead of a device (the FUSE file), or None."""
        ...

    @property
    def shadow_file(self) -> str | None: ...


class Copy(Protocol):
    """A set's copy as a job follows it: what ``DataPath.copier`` returns."""

    @property
    def closed(self) -> bool: ...

    def progress(self) -> Progress: ...

    def abort(self) -> None: ...

    @property
    def cancelable(self) -> bool:
        """Whether ``abort`` can stop the copy now (a kernel merge cannot be stopped)."""
        ...

    @property
    def suspended(self) -> bool:
        """Whether the copy is suspended (it ended for now and resumes where it stopped)."""
        ...

    def done_fd(self) -> int:
        """A new descriptor, the caller's to close: unreadable while the copy runs, readable
        from the moment ``progress()`` shows it over until the next copy starts (a level, not
        an edge: watch it, never read it). A job watches it on its event loop, so it ends
        within milliseconds of the work."""
        ...


class HeldPoint(Protocol):
    """A group point in time ``DataPath.hold`` froze: writes to the sources wait until
    ``release`` (or the hold's timeout, when the path thaws it unchanged by itself)."""

    def release(self, commit: bool) -> float:
        """Take the point in time (``commit``: the instant of the hold; copies start) or not
        (nothing changes), and thaw; seconds writes were held. Raises the engine's ``Timeout``
        when the hold had thawed at its timeout already (nothing changed)."""
        ...


class DataPath(Protocol):
    """Serves sets and runs their copies. Implementations: ``userspace.UserspacePath``,
    ``kernel.KernelPath``, ``null.NullPath``."""

    @property
    def caps(self) -> Capabilities: ...

    def check_new(self, kind: Kind, chunk: int, master_size: int, shadow: tuple[str, int],
                  bitmap: tuple[str, int] | None) -> None:
        """Refuse, before the engine writes anything, volumes this path cannot serve a new set
        on (``shadow``/``bitmap`` = (path, size)); name what is needed."""
        ...

    def serve(self, name: str, set_: Set, volumes: SetVolumes, *, loop: bool = True,
              shadow: bool = True) -> Served:
        """Serve an open set (at enable, at start, after a volume came back). ``loop=False``:
        no block devices where the path can serve without them (userspace: files only).
        ``shadow=False``: the master alone (the shadow is exported); an imported shadow (kind
        IMPORTED) is served without a master. Both only where ``caps.serve_one_side``."""
        ...

    def serve_shadow(self, name: str, on: bool) -> None:
        """Take the shadow's device of a served set away (``on`` False: its shadow is exported;
        refused, InUse, while the device is in use) or bring it back, the master serving on
        throughout. Only where ``caps.serve_one_side``."""
        ...

    def started(self, name: str, *, new: bool) -> None:
        """Once a served set is ready: a new set's first copy, or a copy a crash interrupted,
        starts here on a path that runs copies itself (the engine resumes its own otherwise)."""
        ...

    def unserve(self, name: str, *, force: bool = False) -> None:
        """Stop serving: refused (InUse) while a served device is in use, unless ``force``."""
        ...

    def users(self, name: str, direction: Direction) -> list[str]:
        """Who holds the served device of one side (``TO_MASTER``: the master's): mount points,
        stacked devices, openers."""
        ...

    def copy(self, names: Sequence[str], direction: Direction, *, full: bool,
             owner: int = 0) -> float:
        """Copy (``full``) or update served sets, all at one point in time; returns the seconds
        writes to the sources were held."""
        ...

    def hold(self, names: Sequence[str], direction: Direction, *, full: bool, owner: int,
             timeout: float) -> HeldPoint:
        """``copy``'s point in time in two steps: freeze writes to every set's source and check
        each can take part (all or nothing), return with writes frozen; the ``HeldPoint`` takes
        it or not. Thawed unchanged after ``timeout`` seconds if not released. Where
        ``caps.group_hold`` is False, refuses saying why."""
        ...

    def progress(self, name: str) -> Progress:
        """The set's copy, as users see it (active until the target is usable again)."""
        ...

    def abort(self, name: str) -> None:
        """Stop the set's copy (refused where the path cannot stop it half way)."""
        ...

    def wait(self, name: str, timeout: float | None = None) -> bool:
        """Until the set's copy is over; False at the timeout."""
        ...

    def suspend(self, name: str) -> None:
        """Suspend the set's running copy: it keeps its place and resumes where it stopped
        (the set stays copying meanwhile). Where ``caps.suspend_copy`` is False, refuses
        saying why."""
        ...

    def resume(self, name: str) -> None:
        """Resume the set's suspended copy; returns at once."""
        ...

    def rename(self, name: str, new: str) -> None:
        """Serve the set under ``new`` from now on, without interrupting its devices. Where
        ``caps.rename_served`` is False, refuses saying why."""
        ...

    def copier(self, name: str) -> Copy:
        """What a job follows for this set's copy."""
        ...

    def attach_overflow(self, name: str, overflow: Volume) -> None:
        """The set's engine now spills into this overflow volume; the path follows."""
        ...

    def detach_overflow(self, name: str) -> None:
        """Before the engine lets the overflow go: refused while the path still uses it."""
        ...

    def status(self, name: str) -> dict[str, object]:
        """Path-specific facts for a set (devices, store use), for logs and diagnostics."""
        ...

    def stop(self, *, force: bool = False) -> None:
        """Stop serving everything (the kernel path leaves its devices to the next start)."""
        ...
