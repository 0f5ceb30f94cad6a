"""The CLI's only D-Bus code: one connection to ptcopyd (``Client``), its typed calls and the
snapshots it reads. Every call is one the contract pins (``ptcopy.cli._contract``) and is bounded
by ``asyncio.wait_for``: a daemon that hangs cannot hang the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ptcopy._dbus_compat import CONNECT_ERRORS
from ptcopy.cli._contract import (
    BUS_NAME,
    CALLS,
    GROUP,
    HOST,
    JOB,
    MANAGER,
    NO_OBJECT,
    OBJECT_MANAGER,
    OPTION_TYPES,
    OVERFLOW,
    PROPERTIES,
    ROOT,
    SCHEDULE,
    SET,
    VOLUME,
    kind_of,
)
from ptcopy.cli._errors import (
    BusUnreachable,
    CallTimedOut,
    NotFoundError,
    RemoteError,
    WrongKindError,
)
from ptcopy.cli._snapshots import (
    GroupInfo,
    HostInfo,
    Inventory,
    JobInfo,
    OverflowInfo,
    ScheduleInfo,
    SetInfo,
    VolumeInfo,
    plain,
)


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
        return {k: plain(v) for k, v in values.items()}

    # ---- reading ---------------------------------------------------------------------------

    async def inventory(self) -> Inventory:
        (objects,) = await self._send(ROOT, OBJECT_MANAGER, "GetManagedObjects", "", [])
        inv = Inventory()
        for path, ifaces in sorted(objects.items()):
            for iface, raw in ifaces.items():
                p = plain(raw)
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
