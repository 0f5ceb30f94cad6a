"""The host registry: remote hosts ptcopyd knows by name, kept in the state store, and their
probes. A probe reaches the host's ptcopyd over the same SSH transport ``ptcopy --host`` uses
(ptcopy.remote), READ-ONLY: it reads Manager.Version and counts the host's sets, and never
calls a method that changes anything there. Probes run as ptcopyd (root, with root's SSH
identity); a user's own commands on a remote host go there under the user's own SSH login
(docs/remote-hosts.md), never through ptcopyd."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from ptcopy.daemon.background import Background
from ptcopy.daemon.errors import ServiceError, invalid, not_found
from ptcopy.daemon.state import HostRow, Store
from ptcopy.errnames import ErrorName
from ptcopy.remote.ssh import SshOptions
from ptcopy.remote.targets import BadTarget, check_host_name, parse_target
from ptcopy.remote.tunnel import Tunnel

log = logging.getLogger(__name__)

BUS_NAME = "org.ptcopy.Imaging1"
ROOT = "/org/ptcopy/Imaging1"
MANAGER = "org.ptcopy.Imaging1.Manager"
CONNECT_TIMEOUT = 5.0   # seconds for ssh to connect and log in
CALL_TIMEOUT = 5.0      # seconds for the bus connection and each read over it
# a child node of the introspected path (its own node is named by its full path, with '/')
_CHILD = re.compile(r"<node\s+name=\"[^\"/]+\"")


def now_us() -> int:
    return int(time.time() * 1_000_000)


@dataclass(frozen=True)
class ProbeResult:
    """What one probe found: the host's ptcopyd version and number of sets, or why it could
    not be reached (``error``, a sentence)."""

    reachable: bool
    version: str = ""
    sets: int = 0
    error: str = ""


async def _call(bus: MessageBus, path: str, iface: str, member: str, sig: str = "",
                body: list[object] | None = None) -> list[object]:
    reply = await asyncio.wait_for(bus.call(Message(
        destination=BUS_NAME, path=path, interface=iface, member=member, signature=sig,
        body=body or [])), CALL_TIMEOUT)
    if reply.message_type is MessageType.ERROR:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        if reply.error_name == "org.freedesktop.DBus.Error.ServiceUnknown":
            raise _Refused("ptcopyd is not running there")
        raise _Refused(f"{member}: {reply.error_name}: {text}".rstrip(": "))
    return list(reply.body)


class _Refused(Exception):
    """The host's bus answered, with an error."""


async def _read(address: str) -> ProbeResult:
    """Version and number of sets of the ptcopyd behind this bus address. The sets are
    counted from the introspection of their parent path (one short XML listing of their ids)
    rather than GetManagedObjects, which carries every property of every object."""
    bus = await asyncio.wait_for(MessageBus(bus_address=address).connect(), CALL_TIMEOUT)
    try:
        (version,) = await _call(bus, ROOT, "org.freedesktop.DBus.Properties", "Get", "ss",
                                 [MANAGER, "Version"])
        (xml,) = await _call(bus, f"{ROOT}/sets", "org.freedesktop.DBus.Introspectable",
                             "Introspect")
        value = getattr(version, "value", version)
        return ProbeResult(True, str(value), len(_CHILD.findall(str(xml))))
    finally:
        bus.disconnect()


async def probe(target_text: str, opts: SshOptions | None = None) -> ProbeResult:
    """Reach the host once, read-only; never raises (a failure is a ProbeResult saying
    why). Bounded: ssh's connect timeout, then CALL_TIMEOUT per step."""
    opts = opts or SshOptions(connect_timeout=CONNECT_TIMEOUT)
    try:
        target = parse_target(target_text)
    except BadTarget as e:
        return ProbeResult(False, error=str(e))
    try:
        async with Tunnel(target, opts) as tunnel:
            try:
                return await asyncio.wait_for(_read(tunnel.address),
                                              opts.connect_timeout + 3 * CALL_TIMEOUT)
            except _Refused as e:
                return ProbeResult(False, error=f"host {target}: {e}")
            except Exception as e:  # any failure of the link is a finding
                failure = await tunnel.failure(wait=1.0)
                if failure is not None:
                    return ProbeResult(False, error=failure.message)
                why = "it did not answer in time" if isinstance(e, TimeoutError) else \
                    (str(e) or type(e).__name__)
                return ProbeResult(False, error=f"host {target}: {why}")
    except OSError as e:   # the tunnel's socket or ssh itself could not start
        return ProbeResult(False, error=f"host {target}: {e.strerror or e}")


class Hosts:
    """Every registered host, by name; each change is one store write. What the last probe
    found is kept with the row (Reachable in memory only: unknown until the first probe)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rows: dict[str, HostRow] = {r.name: r for r in store.hosts()}
        self.reachable: dict[str, bool] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> HostRow:
        row = self.rows.get(name)
        if row is None:
            raise not_found(f"no host {name!r} is registered")
        return row

    def add(self, name: str, target_text: str) -> bool:
        """Register a host; True when it is new, False when the same name and target were
        there already. Exists when the name is taken by another target."""
        try:
            check_host_name(name)
            target = str(parse_target(target_text))
        except BadTarget as e:
            raise invalid(str(e)) from e
        with self._lock:
            old = self.rows.get(name)
            if old is not None:
                if old.target == target:
                    return False
                raise ServiceError(ErrorName.EXISTS, f"there is already a host {name!r} "
                                   f"({old.target}); remove it first to point it elsewhere")
            row = HostRow(name, target, added=now_us())
            self.store.put_host(row)
            self.rows[name] = row
            return True

    def remove(self, name: str) -> None:
        with self._lock:
            self.get(name)
            self.store.delete_host(name)
            del self.rows[name]
            self.reachable.pop(name, None)

    def record(self, name: str, target: str, found: ProbeResult) -> bool:
        """Keep what a probe of ``target`` found; False when the host was removed or
        re-registered meanwhile (the finding is dropped)."""
        with self._lock:
            row = self.rows.get(name)
            if row is None or row.target != target:
                return False
            self.reachable[name] = found.reachable
            if found.reachable:
                new = row.with_(last_seen=now_us(), version=found.version, sets=found.sets,
                                last_error="")
            else:
                new = row.with_(last_error=found.error)
            if new != row:
                self.store.put_host(new)
                self.rows[name] = new
            return True


class HostProber:
    """Probes the registered hosts: all in parallel, at start and every ``interval``
    seconds (0: only when asked); one probe at a time per host (a second ask joins it)."""

    def __init__(self, hosts: Hosts, background: Background, interval: float,
                 publish: Callable[[str], None]) -> None:
        self.hosts = hosts
        self.background = background
        self.interval = interval
        self.publish = publish   # a host's findings changed
        self._running: dict[str, asyncio.Future[bool]] = {}

    async def probe(self, name: str) -> bool:
        """Probe one host now (or join its probe in flight); whether it was reachable."""
        self.hosts.get(name)
        fut = self._running.get(name)
        if fut is None:
            fut = asyncio.ensure_future(self._probe(name))
            self._running[name] = fut
            fut.add_done_callback(functools.partial(self._forget, name))
        return await asyncio.shield(fut)

    def _forget(self, name: str, fut: asyncio.Future[bool]) -> None:
        if self._running.get(name) is fut:
            del self._running[name]

    async def _probe(self, name: str) -> bool:
        target = self.hosts.get(name).target
        found = await probe(target)
        if not found.reachable:
            log.info("host %s: %s", name, found.error)
        if await asyncio.to_thread(self.hosts.record, name, target, found):
            self.publish(name)
        return found.reachable

    async def probe_all(self) -> None:
        """Probe every registered host at once."""
        names = list(self.hosts.rows)
        results = await asyncio.gather(*(self.probe(n) for n in names), return_exceptions=True)
        for n, r in zip(names, results, strict=True):
            if isinstance(r, BaseException) and not isinstance(r, ServiceError):
                log.error("probe of host %s: %s", n, r)

    def soon(self, name: str) -> None:
        """Probe a host in the background (a new one), when probing is on."""
        if self.interval > 0:
            self.background.spawn(self._quietly(name))

    async def _quietly(self, name: str) -> None:
        with contextlib.suppress(ServiceError):   # removed before its probe ran
            await self.probe(name)

    def start(self) -> None:
        """Probe in the background: now, then every interval (nothing when it is 0)."""
        if self.interval > 0:
            self.background.spawn(self._loop())

    async def _loop(self) -> None:
        while True:
            await self.probe_all()
            await asyncio.sleep(self.interval)
