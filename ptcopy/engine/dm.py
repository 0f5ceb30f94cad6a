"""Device-mapper ioctls, done in C: the kernel data path's transactions and queries.

Tables, names and policy live in the kernel path (:mod:`ptcopy.datapath.kernel`); this module
only carries their text to the engine and its answers back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ptcopy.engine._ffi import ffi, lib, new_error
from ptcopy.engine.errors import InvalidArgument, check

__all__ = [
    "DmInfo", "DmOp", "dm_find_uuid", "dm_info", "dm_list", "dm_message", "dm_recover",
    "dm_rename", "dm_reserve", "dm_run", "dm_set_uuid", "dm_status", "dm_targets", "dm_version",
]


@dataclass(frozen=True)
class DmInfo:
    exists: bool
    suspended: bool = False
    read_only: bool = False
    live_table: bool = False
    inactive_table: bool = False
    open_count: int = 0
    target_count: int = 0
    major: int = 0
    minor: int = 0
    event_nr: int = 0
    uuid: str = ""   # the device's dm uuid, "" when it has none


@dataclass(frozen=True)
class DmOp:
    """One step of a device-mapper transaction (see dm_run)."""

    kind: str        # create, load, suspend, resume, remove, zero
    name: str        # device name, or a block device path for zero
    table: str = ""  # load: "<start> <length> <target> <args>" lines
    read_only: bool = False
    length: int = 0  # zero: bytes
    uuid: str = ""   # create: the new device's dm uuid ("" for none)


# DmOp.kind -> enum pt_dm_kind (ptcopy_engine.h)
_DM_KINDS: dict[str, int] = {
    "create": lib.PT_DM_CREATE,
    "load": lib.PT_DM_LOAD,
    "suspend": lib.PT_DM_SUSPEND,
    "resume": lib.PT_DM_RESUME,
    "remove": lib.PT_DM_REMOVE,
    "zero": lib.PT_DM_ZERO,
}


def _dm_text(fn: Any, *args: Any, size: int = 1 << 16) -> str:
    buf = ffi.new("char[]", size)
    err = new_error()
    check(fn(*args, buf, size, err), err)
    text: str = ffi.string(buf).decode("utf-8", "replace")
    return text


def dm_version() -> tuple[int, int, int]:
    """The kernel's device-mapper interface version; raises NotFound without device-mapper."""
    out = ffi.new("uint32_t[3]")
    err = new_error()
    check(lib.pt_dm_version(out, err), err)
    return int(out[0]), int(out[1]), int(out[2])


def dm_targets() -> dict[str, str]:
    """Loaded device-mapper targets and their versions."""
    text = _dm_text(lib.pt_dm_targets)
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


def dm_list() -> list[str]:
    """Names of the device-mapper devices."""
    return _dm_text(lib.pt_dm_list, size=1 << 20).splitlines()


def dm_info(name: str) -> DmInfo:
    """What the kernel says of device ``name``; ``exists`` False when there is none."""
    out = ffi.new("pt_dm_info *")
    err = new_error()
    check(lib.pt_dm_query(name.encode(), out, err), err)
    if not out.exists:
        return DmInfo(False)
    return DmInfo(True, bool(out.suspended), bool(out.read_only), bool(out.live_table),
                  bool(out.inactive_table), out.open_count, out.target_count, out.major,
                  out.minor, out.event_nr, ffi.string(out.uuid).decode("utf-8", "replace"))


def dm_find_uuid(uuid: str) -> str | None:
    """The name of the device whose dm uuid is ``uuid``; None when no device has it."""
    name = _dm_text(lib.pt_dm_find_uuid, uuid.encode(), size=256)
    return name or None


def dm_rename(name: str, new: str) -> None:
    """Rename device ``name`` to ``new`` (DM_DEV_RENAME): it keeps its number, its table and
    its openers; only ``/dev/mapper``'s name changes. Raises Already when ``new`` is taken."""
    err = new_error()
    check(lib.pt_dm_rename(name.encode(), new.encode(), 0, err), err)


def dm_reserve(fd: int, length: int) -> None:
    """Allocate the first ``length`` bytes of the file open at ``fd`` (fallocate; data there
    stays), so writes within them cannot fail for want of room: OutOfSpace when there is no
    room, InvalidArgument when the file system cannot reserve space."""
    err = new_error()
    check(lib.pt_dm_reserve(fd, length, err), err)


def dm_set_uuid(name: str, uuid: str) -> None:
    """Give device ``name`` the dm uuid ``uuid``; the kernel takes it only on a device that
    has none (InvalidArgument otherwise)."""
    err = new_error()
    check(lib.pt_dm_rename(name.encode(), uuid.encode(), 1, err), err)


def dm_status(name: str, *, table: bool = False) -> str:
    """Status (or with ``table`` the live table) lines of a device. Never on a suspended era
    device: the kernel blocks until it is resumed."""
    return _dm_text(lib.pt_dm_status, name.encode(), int(table))


def dm_message(name: str, message: str) -> str:
    """Send a target message to device ``name``; returns the target's answer."""
    return _dm_text(lib.pt_dm_message, name.encode(), message.encode())


def dm_run(ops: Sequence[DmOp], *, timeout: float = 10.0) -> float:
    """Run ``ops`` as one transaction in C with memory locked; on failure or timeout everything
    it did is undone and nothing stays suspended. Returns seconds the first suspended device
    was held."""
    arr = ffi.new("pt_dm_op[]", len(ops))
    keep = []
    for i, op in enumerate(ops):
        if op.kind not in _DM_KINDS:
            raise InvalidArgument(f"unknown device-mapper step {op.kind!r}")
        name = ffi.new("char[]", os.fsencode(op.name))
        table = ffi.new("char[]", op.table.encode())
        uuid = ffi.new("char[]", op.uuid.encode()) if op.uuid else ffi.NULL
        keep += [name, table, uuid]
        arr[i].kind = _DM_KINDS[op.kind]
        arr[i].name = name
        arr[i].table = table
        arr[i].read_only = int(op.read_only)
        arr[i].length = op.length
        arr[i].uuid = uuid
    held = ffi.new("uint64_t *")
    err = new_error()
    check(lib.pt_dm_run(arr, len(ops), max(1, int(timeout * 1000)), held, err), err)
    return int(held[0]) / 1e9


def dm_recover(prefix: str = "ptcopy-") -> dict[str, str]:
    """After a crash inside a device-mapper transaction (the daemon died with devices
    suspended): for every device named ``prefix...``, a table loaded but never resumed is cleared
    and a suspended device with a live table is resumed, as the transaction's rollback would
    have left them. Returns {name: "cleared" | "resumed" | "cleared+resumed"} for the devices it
    changed. Devices without a live table are left for the caller to remove or rebuild. Call it
    once at start, before any transaction of this process runs: a transaction in flight would
    be undone under its feet."""
    if not prefix or "\0" in prefix:
        raise InvalidArgument("a device-mapper name prefix is needed")
    text = _dm_text(lib.pt_dm_recover, prefix.encode(), size=1 << 20)
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
