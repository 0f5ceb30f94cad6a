"""Typed Python objects over ptcopy's C engine.

This package is the only user of ``ptcopy._engine``, and its module :mod:`._ffi` the only
importer. Every C handle is owned by an object with ``close()`` and context-manager support; C
error codes become :class:`PtcopyError` subclasses; raw cffi data never leaves this package. C
never calls back into Python: copies run on engine threads and Python polls
:meth:`Set.progress`.

Modules, by concern:

- ``_ffi``: ``ffi`` and ``lib``, the seam to the compiled extension;
- ``errors``: the error tree (names are :class:`ptcopy.errnames.ErrorName`) and ``check``;
- ``types``: constants, enums and the typed results of status calls;
- ``lifetime``: a C handle's lifetime shared between threads;
- ``owner``: :class:`Engine`, the owner of every set and overflow volume;
- ``sets``: :class:`Set` and ``bitmap_size``; ``overflow``: :class:`Overflow`;
- ``tracked``, ``volspec``: what sets and overflow volumes share (a tracked handle, a volume as
  the C calls take it);
- ``hold``: a group point in time held across calls (:class:`Hold`);
- ``fuse``: the FUSE :class:`Server` (userspace data path);
- ``dm``: the device-mapper ioctls (kernel data path).

Import the public names from here (``from ptcopy.engine import Set``); the modules are its
layout, not its interface.
"""

from __future__ import annotations

from ptcopy.engine.dm import (
    DmInfo,
    DmOp,
    dm_info,
    dm_list,
    dm_message,
    dm_recover,
    dm_run,
    dm_status,
    dm_targets,
    dm_version,
)
from ptcopy.engine.errors import (
    BadHeader,
    Closed,
    CopyInProgress,
    Dependency,
    Incomplete,
    InUse,
    InvalidArgument,
    NoCopy,
    NotFound,
    NotLocked,
    Offline,
    OutOfSpace,
    PtcopyError,
    SameVolume,
    SizeMismatch,
    Timeout,
    TooSmall,
    VolumeIOError,
    WrongKind,
)
from ptcopy.engine.fuse import Server
from ptcopy.engine.hold import Hold
from ptcopy.engine.overflow import Overflow
from ptcopy.engine.owner import Engine, all_sets
from ptcopy.engine.sets import Set, bitmap_size
from ptcopy.engine.types import (
    CHUNK_DEFAULT,
    CHUNK_MAX,
    CHUNK_MIN,
    Direction,
    Flag,
    Kind,
    OverflowStatus,
    Progress,
    SetStatus,
    Side,
    VolumeLike,
    VolumeRole,
)

__all__ = [
    "CHUNK_DEFAULT",
    "CHUNK_MAX",
    "CHUNK_MIN",
    "BadHeader",
    "Closed",
    "CopyInProgress",
    "Dependency",
    "Direction",
    "DmInfo",
    "DmOp",
    "Engine",
    "Flag",
    "Hold",
    "InUse",
    "Incomplete",
    "InvalidArgument",
    "Kind",
    "NoCopy",
    "NotFound",
    "NotLocked",
    "Offline",
    "OutOfSpace",
    "Overflow",
    "OverflowStatus",
    "Progress",
    "PtcopyError",
    "SameVolume",
    "Server",
    "Set",
    "SetStatus",
    "Side",
    "SizeMismatch",
    "Timeout",
    "TooSmall",
    "VolumeIOError",
    "VolumeLike",
    "VolumeRole",
    "WrongKind",
    "all_sets",
    "bitmap_size",
    "dm_info",
    "dm_list",
    "dm_message",
    "dm_recover",
    "dm_run",
    "dm_status",
    "dm_targets",
    "dm_version",
]
