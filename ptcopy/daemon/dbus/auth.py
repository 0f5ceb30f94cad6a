"""Who may mutate: uid 0, or a caller polkit grants the action to (polkit is asked when it runs
on this bus)."""

from __future__ import annotations

from typing import Any

from dbus_fast import DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ptcopy.daemon.dbus.bus import caller
from ptcopy.errnames import ErrorName

POLKIT_ACTION = "org.ptcopy.imaging.manage"


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
