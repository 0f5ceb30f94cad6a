"""The CLI's only D-Bus code: one connection to ptcopyd, typed calls, typed snapshots.

The interface names and the signature of every call the CLI makes are pinned here (``CALLS``);
tests/integration/cli/test_contract.py checks them against dbus/org.ptcopy.Imaging1.xml, so a
change of the contract shows up as a failing test instead of a confusing error at a user's
terminal.
Every call is bounded by ``asyncio.wait_for``: a daemon that hangs cannot hang the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ptcopy._dbus_compat import CONNECT_ERRORS
from ptcopy.cli._errors import (
    BusUnreachable,
    CallTimedOut,
    NotFoundError,
    RemoteError,
    WrongKindError,
)

BUS_NAME = "org.ptcopy.Imaging1"
ROOT = "/org/ptcopy/Imaging1"
IFACE = "org.ptcopy.Imaging1"
MANAGER = IFACE + ".Manager"
SET = IFACE + ".IISet"
GROUP = IFACE + ".IIGroup"
OVERFLOW = IFACE + ".IIOverflow"
VOLUME = IFACE + ".Volume"
JOB = IFACE + ".Job"
SCHEDULE = IFACE + ".Schedule"
HOST = IFACE + ".Host"
PROPERTIES = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
NO_OBJECT = "/"

# Every ptcopy method this CLI calls: (interface, member) -> (in signature, out signature).
CALLS: dict[tuple[str, str], tuple[str, str]] = {
    (MANAGER, "CreateSet"): ("sssssa{sv}", "oo"),
    (MANAGER, "CreateGroup"): ("saoa{sv}", "o"),
    (MANAGER, "CreateOverflow"): ("sa{sv}", "o"),
    (MANAGER, "LookUp"): ("s", "o"),
    (MANAGER, "Candidates"): ("ssa{sv}", "ao"),
    (MANAGER, "Refresh"): ("a{sv}", "u"),
    (SET, "Copy"): ("sa{sv}", "o"),
    (SET, "Update"): ("sa{sv}", "o"),
    (SET, "Abort"): ("a{sv}", ""),
    (SET, "Reset"): ("a{sv}", "o"),
    (SET, "Disable"): ("a{sv}", ""),
    (SET, "SetCopyParameters"): ("uua{sv}", ""),
    (SET, "AttachOverflow"): ("oa{sv}", ""),
    (SET, "DetachOverflow"): ("a{sv}", ""),
    (SET, "Export"): ("a{sv}", ""),
    (SET, "Join"): ("sa{sv}", "o"),
    (MANAGER, "ImportShadow"): ("ssa{sv}", "o"),
    (SET, "Rename"): ("sa{sv}", ""),
    (SET, "Suspend"): ("a{sv}", ""),
    (SET, "Resume"): ("a{sv}", "o"),
    (GROUP, "AddSet"): ("oa{sv}", ""),
    (GROUP, "RemoveSet"): ("oa{sv}", ""),
    (GROUP, "Copy"): ("sa{sv}", "o"),
    (GROUP, "Update"): ("sa{sv}", "o"),
    (GROUP, "Abort"): ("a{sv}", ""),
    (GROUP, "Rename"): ("sa{sv}", ""),
    (GROUP, "Delete"): ("a{sv}", ""),
    (GROUP, "Hold"): ("ssda{sv}", "s"),
    (GROUP, "Release"): ("sba{sv}", "ot"),
    (GROUP, "SetHosts"): ("asa{sv}", ""),
    (OVERFLOW, "Delete"): ("a{sv}", ""),
    (JOB, "Cancel"): ("a{sv}", ""),
    (JOB, "Wait"): ("d", "b"),
    (MANAGER, "CreateSchedule"): ("ssaoa{sv}", "o"),
    (SCHEDULE, "NextRuns"): ("u", "at"),
    (SCHEDULE, "Pause"): ("a{sv}", ""),
    (SCHEDULE, "Resume"): ("a{sv}", ""),
    (SCHEDULE, "RunNow"): ("a{sv}", "o"),
    (SCHEDULE, "Delete"): ("a{sv}", ""),
    (MANAGER, "AddHost"): ("ssa{sv}", "o"),
    (HOST, "Probe"): ("a{sv}", "b"),
    (HOST, "Remove"): ("a{sv}", ""),
}
# The properties the CLI reads, per interface (also checked against the contract).
PROPS: dict[str, tuple[str, ...]] = {
    MANAGER: ("Version", "DataPath"),
    SET: ("Name", "Kind", "Master", "Shadow", "Bitmap", "MasterDevice", "ShadowDevice",
          "Overflow", "Group", "Status", "Flags", "Job", "DifferencePercent", "CopyPercent",
          "Size", "ChunkSize", "ShadowChunksTotal", "ShadowChunksUsed", "CopyDelay",
          "CopyUnits", "LastModified", "LockedBy"),
    GROUP: ("Name", "Sets", "Status", "Job", "Hosts"),
    OVERFLOW: ("Path", "Sets", "ChunksTotal", "ChunksUsed", "CountersValid"),
    VOLUME: ("Path", "Size", "Type", "FsType", "Mounted", "Holders", "UsedBy", "Available",
             "Unsuitable"),
    JOB: ("Operation", "Objects", "Progress", "ProgressValid", "Bytes", "Rate", "StartTime",
          "ExpectedEndTime", "Cancelable", "StartedByUID", "Done", "Success", "Message"),
    SCHEDULE: ("Name", "Spec", "Targets", "Enabled", "NextRun", "LastRun", "LastJob",
               "LastResult"),
    HOST: ("Name", "Target", "Reachable", "LastSeen", "Version", "Sets", "LastError"),
}
KIND_OF_PREFIX = {f"{ROOT}/sets/": "set", f"{ROOT}/groups/": "group",
                  f"{ROOT}/overflow/": "overflow volume", f"{ROOT}/jobs/": "job",
                  f"{ROOT}/volumes/": "volume", f"{ROOT}/schedules/": "schedule",
                  f"{ROOT}/hosts/": "host"}
OFFLINE_FLAGS = ("master-offline", "shadow-offline", "bitmap-offline", "overflow-offline")


def kind_of(path: str) -> str:
    for prefix, kind in KIND_OF_PREFIX.items():
        if path.startswith(prefix):
            return kind
    return "object"


def _plain(value: Any) -> Any:
    """Variants (at any depth) to plain Python values."""
    if isinstance(value, Variant):
        return _plain(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _when(usec: int) -> str | None:
    if not usec:
        return None
    return datetime.fromtimestamp(usec / 1e6, UTC).isoformat(timespec="seconds")


# ---- what the daemon shows, as plain data ------------------------------------------------------


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


def when(usec: int) -> str | None:
    """Microseconds since the epoch as ISO 8601 (UTC); None for 0."""
    return _when(usec)


# ---- the connection ----------------------------------------------------------------------------


# The option keys the CLI sends, with their D-Bus types (see the methods' documentation).
OPTION_TYPES = {"confirm": "b", "chunk_size": "u", "overflow": "o", "group": "o",
                "copy_delay": "u", "copy_units": "u", "bitmap_in_memory": "b", "loop": "b",
                "kind": "s", "name": "s"}


def _options(opts: Mapping[str, bool | int | str] | None) -> dict[str, Variant]:
    return {key: Variant(OPTION_TYPES[key], value) for key, value in (opts or {}).items()}


def _either(kinds: Sequence[str]) -> str:
    return " or ".join(k for k in kinds if k != "job") or "job"


class Client:
    """One connection to ptcopyd. ``address`` None means the system bus (which honours
    DBUS_SYSTEM_BUS_ADDRESS); ``timeout`` bounds every call, in seconds."""

    def __init__(self, address: str | None, timeout: float, *, label: str = "",
                 connect_timeout: float | None = None, host: str = "") -> None:
        self.address = address
        self.host = host     # the remote host (--host) this connection reaches, "" = local
        self.timeout = timeout
        self.label = label   # what the address is, for messages (a remote host)
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._bus: MessageBus | None = None

    @property
    def where(self) -> str:
        if self.label:
            return self.label
        if self.address:
            return self.address
        env = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        return f"the system bus ({env or 'unix:path=/run/dbus/system_bus_socket'})"

    async def __aenter__(self) -> Client:
        try:
            if self.address:
                bus = MessageBus(bus_address=self.address)
            else:
                bus = MessageBus(bus_type=BusType.SYSTEM)
            self._bus = await asyncio.wait_for(bus.connect(), self.connect_timeout)
        except TimeoutError as e:
            raise BusUnreachable(self.where, "it did not answer") from e
        except CONNECT_ERRORS as e:
            raise BusUnreachable(self.where, _reason(e)) from e
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._bus is not None:
            with contextlib.suppress(Exception):
                self._bus.disconnect()
            self._bus = None

    # ---- raw calls ------------------------------------------------------------------------

    async def _send(self, path: str, iface: str, member: str, signature: str,
                    body: Sequence[Any], timeout: float | None = None) -> list[Any]:
        assert self._bus is not None, "use Client as an async context manager"
        msg = Message(destination=BUS_NAME, path=path, interface=iface, member=member,
                      signature=signature, body=list(body))
        limit = self.timeout if timeout is None else timeout
        try:
            reply = await asyncio.wait_for(self._bus.call(msg), limit)
        except TimeoutError as e:
            raise CallTimedOut(f"{iface.rsplit('.', 1)[-1]}.{member}", limit) from e
        except (OSError, EOFError) as e:
            raise BusUnreachable(self.where, f"the connection broke ({_reason(e)})") from e
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise RemoteError(reply.error_name or "", text, member=member, path=path)
        return list(reply.body)

    async def call(self, path: str, iface: str, member: str, *args: Any,
                   timeout: float | None = None) -> list[Any]:
        """Call one of the pinned ptcopy methods."""
        signature, _ = CALLS[(iface, member)]
        return await self._send(path, iface, member, signature, args, timeout)

    async def props(self, path: str, iface: str) -> dict[str, Any]:
        (values,) = await self._send(path, PROPERTIES, "GetAll", "s", [iface])
        return {k: _plain(v) for k, v in values.items()}

    # ---- reading ---------------------------------------------------------------------------

    async def inventory(self) -> Inventory:
        (objects,) = await self._send(ROOT, OBJECT_MANAGER, "GetManagedObjects", "", [])
        inv = Inventory()
        for path, ifaces in sorted(objects.items()):
            for iface, raw in ifaces.items():
                p = _plain(raw)
                if iface == SET:
                    inv.sets[path] = SetInfo.from_props(path, p)
                elif iface == GROUP:
                    inv.groups[path] = GroupInfo.from_props(path, p)
                elif iface == OVERFLOW:
                    inv.overflows[path] = OverflowInfo.from_props(path, p)
                elif iface == VOLUME:
                    inv.volumes[path] = VolumeInfo.from_props(path, p)
                elif iface == JOB:
                    inv.jobs[path] = JobInfo.from_props(path, p)
                elif iface == SCHEDULE:
                    inv.schedules[path] = ScheduleInfo.from_props(path, p)
                elif iface == HOST:
                    inv.hosts[path] = HostInfo.from_props(path, p)
        return inv

    async def manager(self) -> dict[str, Any]:
        return await self.props(ROOT, MANAGER)

    async def set_info(self, path: str) -> SetInfo:
        return SetInfo.from_props(path, await self.props(path, SET))

    async def group_info(self, path: str) -> GroupInfo:
        return GroupInfo.from_props(path, await self.props(path, GROUP))

    async def overflow_info(self, path: str) -> OverflowInfo:
        return OverflowInfo.from_props(path, await self.props(path, OVERFLOW))

    async def job_info(self, path: str) -> JobInfo:
        return JobInfo.from_props(path, await self.props(path, JOB))

    async def schedule_info(self, path: str) -> ScheduleInfo:
        return ScheduleInfo.from_props(path, await self.props(path, SCHEDULE))

    async def find_schedule(self, name: str) -> ScheduleInfo:
        """A schedule by name (or object path); NotFoundError with near matches."""
        inv = await self.inventory()
        for info in inv.schedules.values():
            if name in (info.name, info.path):
                return info
        near = difflib.get_close_matches(name, inv.names("schedule"), n=3, cutoff=0.6)
        raise NotFoundError("schedule", name, near)

    # ---- names -----------------------------------------------------------------------------

    async def look_up(self, name: str) -> str:
        (path,) = await self.call(ROOT, MANAGER, "LookUp", name)
        return str(path)

    async def resolve(self, name: str, kind: str) -> str:
        """The object path of a set (by name or shadow path), group (by name) or overflow
        volume (by path). Raises NotFoundError with near matches, or WrongKindError."""
        return (await self.resolve_any(name, (kind,)))[1]

    async def resolve_any(self, name: str, kinds: Sequence[str]) -> tuple[str, str]:
        """Like resolve, for a name that may be one of several kinds: (kind, path).
        Jobs are named by their object path."""
        if "job" in kinds and name.startswith(f"{ROOT}/jobs/"):
            return "job", name
        candidates = [name]
        if "/" in name or name.startswith("."):
            absolute = os.path.abspath(name)
            if absolute != name:
                candidates.append(absolute)
        for candidate in candidates:
            path = await self.look_up(candidate)
            if path == NO_OBJECT:
                continue
            found = kind_of(path)
            if found not in kinds:
                raise WrongKindError(name, found, _either(kinds))
            return found, path
        inv = await self.inventory()
        known = [n for k in kinds for n in inv.names(k)]
        near = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        raise NotFoundError(_either(kinds), name, near)

    async def candidates(self, master: str, role: str, kind: str) -> list[str]:
        """Paths of the volumes that could be the shadow or bitmap for this master."""
        (paths,) = await self.call(ROOT, MANAGER, "Candidates", master, role,
                                   _options({"kind": kind}))
        found = []
        for p in paths:
            props = await self.props(str(p), VOLUME)
            found.append(str(props.get("Path", p)))
        return found

    # ---- changing --------------------------------------------------------------------------

    async def create_set(self, name: str, kind: str, master: str, shadow: str, bitmap: str,
                         opts: Mapping[str, bool | int | str]) -> tuple[str, str]:
        set_path, job = await self.call(ROOT, MANAGER, "CreateSet", name, kind, master, shadow,
                                        bitmap, _options(opts))
        return str(set_path), str(job)

    async def import_shadow(self, shadow: str, bitmap: str,
                            opts: Mapping[str, bool | int | str]) -> str:
        (path,) = await self.call(ROOT, MANAGER, "ImportShadow", shadow, bitmap, _options(opts))
        return str(path)

    async def create_group(self, name: str, sets: Sequence[str],
                           hosts: Sequence[str] = ()) -> str:
        opts = {"hosts": Variant("as", list(hosts))} if hosts else {}
        (path,) = await self.call(ROOT, MANAGER, "CreateGroup", name, list(sets), opts)
        return str(path)

    async def group_set_hosts(self, path: str, hosts: Sequence[str]) -> None:
        await self.call(path, GROUP, "SetHosts", list(hosts), {})

    async def group_hold(self, path: str, operation: str, direction: str, timeout: float, *,
                         confirm: bool = False) -> str:
        """Freeze the group's members for a coordinator; the hold's token."""
        opts = _options({"confirm": True} if confirm else {})
        (token,) = await self.call(path, GROUP, "Hold", operation, direction, float(timeout),
                                   opts)
        return str(token)

    async def group_release(self, path: str, token: str, commit: bool) -> tuple[str, int]:
        """End a hold: (the job of the copies, or '/'; microseconds writes were frozen)."""
        job, frozen = await self.call(path, GROUP, "Release", token, bool(commit), {})
        return str(job), int(frozen)

    async def create_overflow(self, volume: str, chunk_size: int) -> str:
        opts = _options({"chunk_size": chunk_size} if chunk_size else {})
        (path,) = await self.call(ROOT, MANAGER, "CreateOverflow", volume, opts)
        return str(path)

    async def create_schedule(self, name: str, spec: str, targets: Sequence[str]) -> str:
        (path,) = await self.call(ROOT, MANAGER, "CreateSchedule", name, spec, list(targets),
                                  {})
        return str(path)

    async def refresh(self) -> int:
        (n,) = await self.call(ROOT, MANAGER, "Refresh", {})
        return int(n)

    async def copy(self, path: str, iface: str, direction: str, *, full: bool,
                   confirm: bool) -> str:
        opts = _options({"confirm": True} if confirm else {})
        (job,) = await self.call(path, iface, "Copy" if full else "Update", direction, opts)
        return str(job)

    async def simple(self, path: str, iface: str, member: str, *args: Any) -> list[Any]:
        """A method whose last argument is an empty options dictionary."""
        return await self.call(path, iface, member, *args, {})

    async def job_wait(self, path: str, seconds: float) -> bool:
        (ended,) = await self.call(path, JOB, "Wait", float(seconds),
                                   timeout=seconds + self.timeout)
        return bool(ended)


def _reason(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return "its socket does not exist"
    if isinstance(e, ConnectionRefusedError):
        return "nothing listens on its socket"
    if isinstance(e, PermissionError):
        return "permission denied on its socket"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
