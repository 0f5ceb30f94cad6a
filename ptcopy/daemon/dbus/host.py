"""org.ptcopy.Imaging1.Host: the registered remote hosts (ptcopy.daemon.service.hosts), and
the exports that keep the Host objects in step with the registry."""

# no "from __future__ import annotations": dbus-fast reads the annotations at class creation
import asyncio
from collections.abc import Callable

# dbus-fast's decorators and annotations, also under Debian 12's dbus-fast 1.84
from ptcopy._dbus_compat import (
    DBusBool,
    DBusStr,
    DBusUInt32,
    DBusUInt64,
    dbus_property,
    method,
)
from ptcopy.daemon import options as opt
from ptcopy.daemon.background import Background
from ptcopy.daemon.dbus.args import NO_OPTS, Options, R
from ptcopy.daemon.dbus.auth import Authorizer
from ptcopy.daemon.dbus.bus import IFACE, ROOT
from ptcopy.daemon.dbus.errors import translated
from ptcopy.daemon.dbus.interface import Interface
from ptcopy.daemon.service.hosts import HostProber, Hosts
from ptcopy.daemon.state import Store
from ptcopy.remote.targets import host_object_id


def host_path(name: str) -> str:
    """The Host object of a registered host (a client finds it from the name alone)."""
    return f"{ROOT}/hosts/{host_object_id(name)}"


class Host(Interface):
    """A remote host ptcopyd knows by name, and what its last probe found there."""

    def __init__(self, registry: "HostObjects", name: str) -> None:
        super().__init__(IFACE + ".Host")
        self.registry = registry
        self.name_ = name

    @dbus_property(access=R)
    def Name(self) -> DBusStr:
        """The host's name in the registry (ptcopy --host NAME)."""
        return self.name_

    @dbus_property(access=R)
    def Target(self) -> DBusStr:
        """Where it is: the SSH destination [USER@]HOST[:PORT] (or an ssh_config alias)."""
        return str(self.registry.hosts.get(self.name_).target)

    @dbus_property(access=R)
    def Reachable(self) -> DBusBool:
        """Whether the last probe reached its ptcopyd (false until the first probe)."""
        return self.registry.hosts.reachable.get(self.name_, False)

    @dbus_property(access=R)
    def LastSeen(self) -> DBusUInt64:
        """When a probe last reached it, in microseconds since the epoch (0: never)."""
        return self.registry.hosts.get(self.name_).last_seen

    @dbus_property(access=R)
    def Version(self) -> DBusStr:
        """Its ptcopyd's version (Manager.Version there) when it was last seen; '' before."""
        return self.registry.hosts.get(self.name_).version

    @dbus_property(access=R)
    def Sets(self) -> DBusUInt32:
        """How many sets it had when it was last seen."""
        return self.registry.hosts.get(self.name_).sets

    @dbus_property(access=R)
    def LastError(self) -> DBusStr:
        """Why the last probe failed, in words ('' when it did not)."""
        return self.registry.hosts.get(self.name_).last_error

    @method()
    @translated
    async def Probe(self, options: Options) -> DBusBool:
        """Probe the host now (read-only: its version and number of sets), or wait for the
        probe in flight; whether it was reachable. The properties then show what was found."""
        opt.parse(options, NO_OPTS)
        return await self.registry.prober.probe(self.name_)

    @method()
    @translated
    async def Remove(self, options: Options) -> None:
        """Forget the host (nothing changes on the host itself)."""
        opt.parse(options, NO_OPTS)
        await self.registry.auth.check("remove hosts")
        await asyncio.to_thread(self.registry.hosts.remove, self.name_)
        self.registry.publish(self.name_)


class HostObjects:
    """The registry and its prober, and the Host objects that follow it."""

    def __init__(self, store: Store, background: Background, auth: Authorizer,
                 export: Callable[[str, Interface], bool], unexport: Callable[[str], None],
                 *, probe_interval: float) -> None:
        self.hosts = Hosts(store)
        self.prober = HostProber(self.hosts, background, probe_interval, self.publish)
        self.auth = auth
        self._export = export
        self._unexport = unexport
        self.objects: dict[str, Host] = {}

    def start(self) -> None:
        """Export every registered host and start probing."""
        for name in sorted(self.hosts.rows):
            self.publish(name)
        self.prober.start()

    def publish(self, name: str) -> None:
        """Export a new host's object, refresh one's properties, or unexport a removed
        one's."""
        obj = self.objects.get(name)
        if name not in self.hosts.rows:
            if obj is not None:
                self._unexport(host_path(name))
                del self.objects[name]
            return
        if obj is None:
            obj = Host(self, name)
            if self._export(host_path(name), obj):
                self.objects[name] = obj
        else:
            obj.refresh()

    async def add(self, name: str, target: str) -> str:
        """Register a host (idempotent for the same name and target); its object path."""
        if await asyncio.to_thread(self.hosts.add, name, target):
            self.publish(name)
            self.prober.soon(name)
        return host_path(name)
