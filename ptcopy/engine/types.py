"""The engine's vocabulary in Python: constants, enums and the typed results of status calls.

Every value comes from ``lib``, that is from ``ptcopy_engine.h``; results are frozen
dataclasses, so no cffi data leaves the package.
"""

from __future__ import annotations

import enum
import os
import uuid as uuid_mod
from dataclasses import dataclass

from ptcopy.engine._ffi import lib

__all__ = [
    "CHUNK_DEFAULT", "CHUNK_MAX", "CHUNK_MIN", "Direction", "Flag", "Kind", "OverflowStatus",
    "Progress", "SetStatus", "Side", "VolumeLike", "VolumeRole",
]

CHUNK_DEFAULT: int = lib.PT_CHUNK_DEFAULT
CHUNK_MIN: int = lib.PT_CHUNK_MIN
CHUNK_MAX: int = lib.PT_CHUNK_MAX


class Kind(enum.IntEnum):
    INDEPENDENT = lib.PT_INDEPENDENT
    DEPENDENT = lib.PT_DEPENDENT
    IMPORTED = lib.PT_IMPORTED   # a shadow exported by another host (Engine.import_shadow)


class Side(enum.IntEnum):
    MASTER = lib.PT_MASTER
    SHADOW = lib.PT_SHADOW


class Direction(enum.IntEnum):
    TO_SHADOW = lib.PT_TO_SHADOW
    TO_MASTER = lib.PT_TO_MASTER


class VolumeRole(enum.IntEnum):
    MASTER = lib.PT_VOL_MASTER
    SHADOW = lib.PT_VOL_SHADOW
    BITMAP = lib.PT_VOL_BITMAP
    OVERFLOW = lib.PT_VOL_OVERFLOW


class Flag(enum.IntFlag):
    COPYING = lib.PT_F_COPYING
    TO_MASTER = lib.PT_F_TO_MASTER
    ABORT_REQUESTED = lib.PT_F_ABORT_REQUESTED
    COMPACT = lib.PT_F_COMPACT
    OUT_OF_SPACE = lib.PT_F_OUT_OF_SPACE
    SPILLED = lib.PT_F_SPILLED
    MASTER_OFFLINE = lib.PT_F_MASTER_OFFLINE
    SHADOW_OFFLINE = lib.PT_F_SHADOW_OFFLINE
    BITMAP_OFFLINE = lib.PT_F_BITMAP_OFFLINE
    OVERFLOW_OFFLINE = lib.PT_F_OVERFLOW_OFFLINE
    RECOVERED = lib.PT_F_RECOVERED
    INCOMPLETE = lib.PT_F_INCOMPLETE
    BITMAP_LOST = lib.PT_F_BITMAP_LOST
    UNRECORDED = lib.PT_F_UNRECORDED
    SUSPENDED = lib.PT_F_SUSPENDED
    RESTORE_HELD = lib.PT_F_RESTORE_HELD
    EXPORTED = lib.PT_F_EXPORTED   # the shadow is another host's until joined back


VolumeLike = str | os.PathLike[str] | int | tuple[str, int]
"""A path, an open descriptor, or both: (path used in messages, descriptor used for I/O)."""


@dataclass(frozen=True)
class Progress:
    active: bool
    direction: Direction
    aborting: bool
    result: int
    chunks_done: int
    chunks_total: int
    bytes_done: int
    bytes_total: int
    rate: int
    elapsed_s: float

    @property
    def fraction(self) -> float:
        return 1.0 if self.chunks_total == 0 else self.chunks_done / self.chunks_total


@dataclass(frozen=True)
class SetStatus:
    kind: Kind
    flags: Flag
    chunk_size: int
    copy_delay_ms: int
    copy_units: int
    master_size: int
    shadow_size: int
    chunks: int
    diff_chunks: int
    copy_chunks: int
    shadow_slots: int
    shadow_slots_used: int
    overflow_used: int
    lost_chunks: int
    generation: int
    last_modified_ns: int
    lock_owner: int
    bitmap_size: int
    uuid: uuid_mod.UUID
    overflow_uuid: uuid_mod.UUID | None

    @property
    def difference_percent(self) -> float:
        return 100.0 * self.diff_chunks / self.chunks if self.chunks else 0.0


@dataclass(frozen=True)
class OverflowStatus:
    chunk_size: int
    counters_valid: bool
    offline: bool
    chunks_total: int
    chunks_used: int
    uuid: uuid_mod.UUID
    sets: tuple[uuid_mod.UUID, ...]
