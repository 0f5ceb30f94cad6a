"""The bus connection: who is calling, and the ObjectManager signals from the root path.

dbus-fast gives method handlers no caller; a message handler records the sender of each call in
a ContextVar before dbus-fast creates the task that runs the method, so the task sees it.
"""

from __future__ import annotations

import contextvars
import logging
import socket
import struct
from typing import Any, cast

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from ptcopy.daemon.dbus.interface import OBJECTS, Entry, Interface, marshal_entry

log = logging.getLogger(__name__)

BUS_NAME = "org.ptcopy.Imaging1"
ROOT = "/org/ptcopy/Imaging1"
IFACE = "org.ptcopy.Imaging1"

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

    _exports = 0   # exports and unexports so far
    # GetManagedObjects' reply body, and (Interface.changes, _exports) when it was built
    _objects: tuple[tuple[int, int], bytes] = ((-1, -1), b"")

    def export(self, path: str, interface: ServiceInterface) -> None:
        """Export, counted (GetManagedObjects' reply is then built again)."""
        super().export(path, interface)
        self._exports += 1

    def unexport(self, path: str, interface: Any = None) -> None:
        """Unexport, counted (GetManagedObjects' reply is then built again)."""
        super().unexport(path, interface)
        self._exports += 1

    async def connect(self) -> PtcopyBus:
        await super().connect()
        writer = self._writer
        if writer is not None and isinstance(writer.sock, socket.socket):
            writer.sock = cast(socket.socket, _PatientSocket(writer.sock))
        return self

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        if self._disconnected:
            return
        if isinstance(interface, Interface):   # the snapshot: no getter runs again
            self.send(Message.new_signal(
                path=ROOT, interface="org.freedesktop.DBus.ObjectManager",
                member="InterfacesAdded", signature="oa{sa{sv}}",
                body=[path, {interface.name: interface.variants()}]))
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
        """GetManagedObjects from each object's marshalled entry, built once per change: with
        thousands of objects, building and marshalling every property on every call is what
        made the call slow (see docs/PERFORMANCE.md). The entries are the snapshots the sweep
        and every announced change keep (at most SWEEP seconds behind I/O counters)."""
        if msg.path != ROOT:
            super()._default_get_managed_objects_handler(msg, send_reply)
            return
        key = (Interface.changes, self._exports)
        if key != self._objects[0]:
            self._objects = (key, objects_body(self._entries()))
        send_reply(MarshalledReply(msg, self._objects[1]))

    def _entries(self) -> list[Entry]:
        entries: list[Entry] = []
        prefix = ROOT + "/"
        for node, ifaces in self._path_exports.items():
            if not node.startswith(prefix):
                continue
            # dbus-fast >= 2 keeps a dict by interface name, 1.x (Debian 12) a list
            exported = [i for i in (ifaces.values() if isinstance(ifaces, dict) else ifaces)
                        if isinstance(i, Interface)]
            if len(exported) == 1:
                entries.append(exported[0].entry(node))
            else:
                entries.append(marshal_entry(node, {i.name: i.variants() for i in exported}))
        return entries


def objects_body(entries: list[Entry]) -> bytes:
    """The body of a GetManagedObjects reply from its marshalled dict entries: the array's
    length, padding to 8, and the entries (each padded to 8, but for the last)."""
    data = b"".join([e for e, _ in entries])
    if entries:
        data = data[:len(data) - entries[-1][1]]
    return struct.pack("<I", len(data)) + b"\0" * 4 + data


class MarshalledReply(Message):
    """A method return of GetManagedObjects whose body is already marshalled: dbus-fast's
    writer asks each message for its bytes (``_marshall``); this one marshals its header for
    an empty reply and puts the body after it."""

    def __init__(self, call: Message, body: bytes) -> None:
        super().__init__(message_type=MessageType.METHOD_RETURN, reply_serial=call.serial,
                         destination=call.sender, signature=OBJECTS, body=[{}])
        self.marshalled_body = body

    def _marshall(self, negotiate_unix_fd: bool = False) -> bytearray:
        wire = bytearray(super()._marshall(negotiate_unix_fd))
        if wire[:1] != b"l":
            raise ValueError("dbus-fast wrote a big-endian message")
        (empty,) = struct.unpack_from("<I", wire, 4)
        del wire[len(wire) - empty:]
        struct.pack_into("<I", wire, 4, len(self.marshalled_body))
        return wire + self.marshalled_body


def record_caller(msg: Message) -> bool:
    """Message handler: remember who sent this method call (never handles it)."""
    if msg.message_type is MessageType.METHOD_CALL and msg.sender:
        caller.set(msg.sender)
    return False
