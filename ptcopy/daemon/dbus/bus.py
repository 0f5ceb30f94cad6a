"""The bus side: who is calling, may they, and the ObjectManager signals from the root path.

dbus-fast gives method handlers no caller; a message handler records the sender of each call in
a ContextVar before dbus-fast creates the task that runs the method, so the task sees it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import socket
import time
from typing import Any, cast

from dbus_fast import DBusError, Message, MessageType, Variant
from dbus_fast import introspection as intr
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from ptcopy.errnames import ErrorName

log = logging.getLogger(__name__)

BUS_NAME = "org.ptcopy.Imaging1"
ROOT = "/org/ptcopy/Imaging1"
IFACE = "org.ptcopy.Imaging1"
POLKIT_ACTION = "org.ptcopy.imaging.manage"
DOC = "org.gtk.GDBus.DocString"
FRESH = 0.5   # seconds a property read may lag the engine

caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


class _PatientSocket:
    """The bus socket as dbus-fast's writer sees it, with a full send buffer reported as
    nothing sent. dbus-fast (up to 5.2.0 at least) takes the EAGAIN of a non-blocking
    ``send`` for a dead connection and drops the bus, and the daemon with it, whenever the
    bus daemon reads more slowly than ptcopyd answers (many clients, PropertiesChanged bursts).
    Sending 0 bytes makes its writer keep the rest and wait until the socket is writable."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, data: Any) -> int:
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class PtcopyBus(MessageBus):
    """A bus connection whose ObjectManager signals come from the manager's path (ROOT), as
    the specification says and GDBusObjectManagerClient expects, and that survives a full
    send buffer."""

    async def connect(self) -> PtcopyBus:
        await super().connect()
        writer = self._writer
        if writer is not None and isinstance(writer.sock, socket.socket):
            writer.sock = cast(socket.socket, _PatientSocket(writer.sock))
        return self

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        if self._disconnected:
            return

        def done(iface: ServiceInterface, result: Any, user_data: Any,
                 e: Exception | None) -> None:
            if e is not None:
                log.error("properties of %s at %s: %s", iface.name, path, e)
            self.send(Message.new_signal(
                path=ROOT, interface="org.freedesktop.DBus.ObjectManager",
                member="InterfacesAdded", signature="oa{sa{sv}}",
                body=[path, {iface.name: result or {}}]))

        ServiceInterface._get_all_property_values(interface, done)

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        if self._disconnected:
            return
        self.send(Message.new_signal(
            path=ROOT, interface="org.freedesktop.DBus.ObjectManager",
            member="InterfacesRemoved", signature="oas", body=[path, removed_interfaces]))


    def _default_get_managed_objects_handler(self, msg: Message, send_reply: Any) -> None:
        """GetManagedObjects from the objects' property snapshots, with the variants built
        once per change: with thousands of objects, building every property per call is what
        makes the call slow (see docs/PERFORMANCE.md)."""
        if msg.path != ROOT:
            super()._default_get_managed_objects_handler(msg, send_reply)
            return
        result: dict[str, dict[str, Any]] = {}
        prefix = ROOT + "/"
        for node, ifaces in self._path_exports.items():
            if node.startswith(prefix):
                # dbus-fast >= 2 keeps a dict by interface name, 1.x (Debian 12) a list
                exported = ifaces.values() if isinstance(ifaces, dict) else ifaces
                result[node] = {i.name: i.fresh_variants() for i in exported
                                if isinstance(i, Interface)}
        send_reply(Message.new_method_return(msg, "a{oa{sa{sv}}}", [result]))


def record_caller(msg: Message) -> bool:
    """Message handler: remember who sent this method call (never handles it)."""
    if msg.message_type is MessageType.METHOD_CALL and msg.sender:
        caller.set(msg.sender)
    return False


class Authorizer:
    """Mutations need uid 0 or the polkit action; polkit is asked when it runs on this bus."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    async def _call(self, dest: str, path: str, iface: str, member: str, sig: str,
                    body: list[Any]) -> Message:
        reply = await self.bus.call(Message(destination=dest, path=path, interface=iface,
                                            member=member, signature=sig, body=body))
        if reply.message_type is MessageType.ERROR:
            raise DBusError(reply.error_name or ErrorName.FAILED.dbus, str(reply.body))
        return reply

    async def uid_of(self, sender: str) -> int:
        r = await self._call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "GetConnectionUnixUser", "s", [sender])
        return int(r.body[0])

    async def _polkit_running(self) -> bool:
        r = await self._call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "NameHasOwner", "s",
                             ["org.freedesktop.PolicyKit1"])
        return bool(r.body[0])

    async def check(self, what: str) -> int:
        """Raise NotAuthorized unless the current caller may mutate; returns its uid."""
        sender = caller.get()
        if not sender:
            raise DBusError(ErrorName.NOT_AUTHORIZED.dbus, "cannot tell who is calling")
        uid = await self.uid_of(sender)
        if uid == 0:
            return uid
        if await self._polkit_running():
            subject = ("system-bus-name", {"name": Variant("s", sender)})
            r = await self._call("org.freedesktop.PolicyKit1",
                                 "/org/freedesktop/PolicyKit1/Authority",
                                 "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization",
                                 "(sa{sv})sa{ss}us",
                                 [subject, POLKIT_ACTION, {}, 0, ""])
            authorized = bool(r.body[0][0])
            if authorized:
                return uid
        raise DBusError(ErrorName.NOT_AUTHORIZED.dbus,
                        f"uid {uid} may not {what}: it needs root or the polkit action "
                        f"{POLKIT_ACTION}")


class Interface(ServiceInterface):
    """Our interfaces: introspection carries each member's docstring, and properties are
    emitted as PropertiesChanged only when their values really change."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._last: dict[str, Any] = {}
        self._stamp = 0.0
        self._variants: dict[str, Variant] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Property reads are answered from the last snapshot (refreshed on every change the
        daemon makes, by jobs twice a second, and by a sweep): GetManagedObjects over thousands
        of objects then costs no engine call, and no read waits behind an operation."""
        super().__init_subclass__(**kwargs)
        for attr in list(cls.__dict__.values()):
            getter = getattr(attr, "prop_getter", None)
            if getter is None or hasattr(attr, "compute"):
                continue

            @functools.wraps(getter)   # dbus-fast looks the getter up by its name
            def cached(self: Interface, _get: Any = getter, _name: str = attr.name) -> Any:
                if self._last and time.monotonic() - self._stamp > FRESH:
                    self.refresh()   # a direct read is never more than FRESH seconds old
                snap = self._last
                return snap[_name] if _name in snap else _get(self)

            attr.compute = getter
            attr.prop_getter = cached

    def introspect(self) -> intr.Interface:
        base = super().introspect()
        cls = type(self)
        if not hasattr(base, "annotations"):   # dbus-fast 1.x (Debian 12): no annotations
            return base
        for m in base.methods:
            _doc(m.annotations, cls, m.name)
        for p in base.properties:
            p.annotations.setdefault("org.freedesktop.DBus.Property.EmitsChangedSignal",
                                     "true")
            _doc(p.annotations, cls, p.name)
        for s in base.signals:
            _doc(s.annotations, cls, s.name)
        return base

    def values(self) -> dict[str, Any]:
        """Current property values, by name (plain Python values)."""
        out = {}
        for prop in ServiceInterface._get_properties(self):
            out[prop.name] = getattr(prop, "compute", prop.prop_getter)(self)
        return out

    def variants(self) -> dict[str, Variant]:
        """The snapshot as D-Bus variants, built once per change."""
        if self._variants is None or not self._last:
            if not self._last:
                self._last = self.values()
            sigs = {p.name: p.signature for p in ServiceInterface._get_properties(self)}
            self._variants = {k: Variant(sigs[k], v) for k, v in self._last.items()}
        return self._variants

    def fresh_variants(self) -> dict[str, Variant]:
        """The variants, refreshed first if the snapshot is older than FRESH and changed."""
        if self._last and time.monotonic() - self._stamp > FRESH and self.changed():
            self.refresh()
        return self.variants()

    def changed(self) -> bool:
        """Whether a refresh could change anything (objects with cheap checks override)."""
        return True

    def refresh(self) -> None:
        """Emit PropertiesChanged with what differs from the last refresh (the first one only
        records: InterfacesAdded carried the values)."""
        now = self.values()
        if self._last:
            changed = {k: v for k, v in now.items() if self._last.get(k) != v}
            if changed:
                self._variants = None
                self.emit_properties_changed(changed)
        else:
            self._variants = None
        self._last = now
        self._stamp = time.monotonic()


def _doc(annotations: dict[str, str], cls: type, member: str) -> None:
    for klass in cls.__mro__:
        fn = klass.__dict__.get(member)
        if fn is None:
            continue
        target = getattr(fn, "__wrapped__", fn)
        doc = inspect.getdoc(getattr(target, "fget", target)) or ""
        if doc:
            annotations[DOC] = " ".join(doc.split())
        return
