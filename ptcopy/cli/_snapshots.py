"""What the daemon shows, as plain data: one frozen record per object kind (``SetInfo``,
``GroupInfo``, ...) built from its D-Bus properties, and the ``Inventory`` of them all that
one GetManagedObjects call gives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dbus_fast import Variant

from ptcopy.cli._contract import NO_OBJECT

OFFLINE_FLAGS = ("master-offline", "shadow-offline", "bitmap-offline", "overflow-offline")


def plain(value: Any) -> Any:
    """Variants (at any depth) to plain Python values."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def when(usec: int) -> str | None:
    """Microseconds since the epoch as ISO 8601 (UTC); None for 0."""
    if not usec:
        return None
    return datetime.fromtimestamp(usec / 1e6, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SetInfo:
    path: str
    name: str
    kind: str
    master: str
    shadow: str
    bitmap: str
    master_device: str
    shadow_device: str
    overflow: str           # object path or "/"
    group: str              # object path or "/"
    status: str
    flags: tuple[str, ...]
    job: str
    difference_percent: float
    copy_percent: float
    size: int
    chunk_size: int
    shadow_chunks_total: int
    shadow_chunks_used: int
    copy_delay: int
    copy_units: int
    last_modified: int      # microseconds since the epoch, 0 = never
    locked_by: str

    @classmethod
    def from_props(cls, path: str, p: Mapping[str, Any]) -> SetInfo:
        return cls(
            path=path, name=str(p["Name"]), kind=str(p["Kind"]), master=str(p["Master"]),
            shadow=str(p["Shadow"]), bitmap=str(p["Bitmap"]),
            master_device=str(p["MasterDevice"]), shadow_device=str(p["ShadowDevice"]),
            overflow=str(p["Overflow"]), group=str(p["Group"]), status=str(p["Status"]),
            flags=tuple(p["Flags"]), job=str(p["Job"]),
            difference_percent=float(p["DifferencePercent"]),
            copy_percent=float(p["CopyPercent"]), size=int(p["Size"]),
            chunk_size=int(p["ChunkSize"]), shadow_chunks_total=int(p["ShadowChunksTotal"]),
            shadow_chunks_used=int(p["ShadowChunksUsed"]), copy_delay=int(p["CopyDelay"]),
            copy_units=int(p["CopyUnits"]), last_modified=int(p["LastModified"]),
            locked_by=str(p["LockedBy"]))

    @property
    def copying(self) -> bool:
        return "copying" in self.flags

    @property
    def direction(self) -> str | None:
        if not self.copying:
            return None
        return "master" if "to-master" in self.flags else "shadow"

    @property
    def offline(self) -> list[str]:
        return [f.removesuffix("-offline") for f in self.flags if f in OFFLINE_FLAGS]


@dataclass(frozen=True)
class GroupInfo:
    path: str
    name: str
    sets: tuple[str, ...]
    status: str
    job: str
    hosts: tuple[str, ...] = ()   # the other hosts the group spans

    @classmethod
    def from_props(cls, path: str, p: Mapping[str, Any]) -> GroupInfo:
        # Hosts: a daemon from before groups spanned hosts has none
        return cls(path, str(p["Name"]), tuple(p["Sets"]), str(p["Status"]), str(p["Job"]),
                   tuple(p.get("Hosts", ())))


@dataclass(frozen=True)
class OverflowInfo:
    path: str
    volume: str
    sets: tuple[str, ...]
    chunks_total: int
    chunks_used: int
    counters_valid: bool

    @classmethod
    def from_props(cls, path: str, p: Mapping[str, Any]) -> OverflowInfo:
        return cls(path, str(p["Path"]), tuple(p["Sets"]), int(p["ChunksTotal"]),
                   int(p["ChunksUsed"]), bool(p["CountersValid"]))


@dataclass(frozen=True)
class VolumeInfo:
    path: str
    volume: str
    size: int
    type: str
    fs_type: str
    mounted: bool
    holders: tuple[str, ...]
    used_by: str
    available: bool
    unsuitable: str

    @classmethod
    def from_props(cls, path: str, p: Mapping[str, Any]) -> VolumeInfo:
        return cls(path, str(p["Path"]), int(p["Size"]), str(p["Type"]), str(p["FsType"]),
                   bool(p["Mounted"]), tuple(p["Holders"]), str(p["UsedBy"]),
                   bool(p["Available"]), str(p["Unsuitable"]))


@dataclass(frozen=True)
class JobInfo:
    path: str
    operation: str
    objects: tuple[str, ...]
    progress: float
    progress_valid: bool
    bytes: int
    rate: int
    start_time: int
    expected_end_time: int
    done: bool
    success: bool
    message: str
    started_by_uid: int

    @classmethod
    def from_props(cls, path: str, p: Mapping[str, Any]) -> JobInfo:
        return cls(path, str(p["Operation"]), tuple(p["Objects"]), float(p["Progress"]),
                   bool(p["ProgressValid"]), int(p["Bytes"]), int(p["Rate"]),
                   int(p["StartTime"]), int(p["ExpectedEndTime"]), bool(p["Done"]),
                   bool(p["Success"]), str(p["Message"]), int(p["StartedByUID"]))


@dataclass(frozen=True)
class ScheduleInfo:
    path: str
    name: str
    spec: str
    targets: tuple[str, ...]
    enabled: bool
    next_run: int
    last_run: int
    last_job: str
    last_result: str

    @classmethod
    def from_props(cls, path: str, p: Mapping[str, Any]) -> ScheduleInfo:
        return cls(path, str(p["Name"]), str(p["Spec"]), tuple(p["Targets"]),
                   bool(p["Enabled"]), int(p["NextRun"]), int(p["LastRun"]),
                   str(p["LastJob"]), str(p["LastResult"]))


@dataclass(frozen=True)
class HostInfo:
    path: str
    name: str
    target: str
    reachable: bool
    last_seen: int          # microseconds since the epoch, 0 = never
    version: str
    sets: int
    last_error: str

    @classmethod
    def from_props(cls, path: str, p: Mapping[str, Any]) -> HostInfo:
        return cls(path, str(p["Name"]), str(p["Target"]), bool(p["Reachable"]),
                   int(p["LastSeen"]), str(p["Version"]), int(p["Sets"]), str(p["LastError"]))


@dataclass
class Inventory:
    """Everything the daemon exports, read in one GetManagedObjects call."""

    sets: dict[str, SetInfo] = field(default_factory=dict)
    groups: dict[str, GroupInfo] = field(default_factory=dict)
    overflows: dict[str, OverflowInfo] = field(default_factory=dict)
    volumes: dict[str, VolumeInfo] = field(default_factory=dict)
    jobs: dict[str, JobInfo] = field(default_factory=dict)
    schedules: dict[str, ScheduleInfo] = field(default_factory=dict)
    hosts: dict[str, HostInfo] = field(default_factory=dict)

    def name_of(self, path: str) -> str | None:
        """A readable name for an object path ('/' and unknown paths give None)."""
        if path in self.sets:
            return self.sets[path].name
        if path in self.groups:
            return self.groups[path].name
        if path in self.overflows:
            return self.overflows[path].volume
        if path in self.schedules:
            return self.schedules[path].name
        return None if path == NO_OBJECT else path

    def names(self, kind: str) -> list[str]:
        """Every name a user could give for this kind of object."""
        if kind == "set":
            return [n for s in self.sets.values() for n in (s.name, s.shadow)]
        if kind == "group":
            return [g.name for g in self.groups.values()]
        if kind == "overflow volume":
            return [o.volume for o in self.overflows.values()]
        if kind == "schedule":
            return [x.name for x in self.schedules.values()]
        return []
