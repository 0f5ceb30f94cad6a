"""Clients leaving the bus: the set locks and group holds a client has die with its
connection."""

from __future__ import annotations

import asyncio
import logging

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from ptcopy.daemon.background import Background
from ptcopy.daemon.service import Service

log = logging.getLogger(__name__)

NAME_OWNER_CHANGED = "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"


def _bus_call(member: str, body: list[str]) -> Message:
    return Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                   interface="org.freedesktop.DBus", member=member, signature="s", body=body)


class Clients:
    """Watches NameOwnerChanged and releases the locks of clients that left."""

    def __init__(self, bus: MessageBus, service: Service, background: Background) -> None:
        self.bus = bus
        self.service = service
        self.background = background

    async def watch(self) -> None:
        """Start receiving NameOwnerChanged (handled by ``on_message``)."""
        self.bus.add_message_handler(self.on_message)
        await self.bus.call(_bus_call("AddMatch", [NAME_OWNER_CHANGED]))

    def on_message(self, msg: Message) -> bool:
        """Message handler: a client that left holding locks has them released (never handles
        the message)."""
        if (msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged"
                and msg.sender == "org.freedesktop.DBus"):
            name, _old, new = msg.body
            # only a client that holds a lock costs a worker thread (release_locks_of takes
            # service.lock); every other client leaving costs this look only
            if name.startswith(":") and not new and any(
                    ms.locked_by == name for ms in list(self.service.sets.values())):
                log.debug("client %s left holding locks: releasing them", name)
                self.background.spawn(asyncio.to_thread(self.service.release_locks_of, name))
            if name.startswith(":") and not new and any(
                    h.owner == name for h in list(self.service.holds.values())):
                log.debug("client %s left holding group holds: thawing them", name)
                self.background.spawn(asyncio.to_thread(self.service.release_holds_of, name))
        return False

    async def release_if_gone(self, name: str) -> None:
        """After a Lock or Hold: a client that left while its call ran had its
        NameOwnerChanged looked at before the lock or hold existed (on_message), so release it
        here. Both are recorded before the bus is asked, so one of the two always sees it."""
        reply = await self.bus.call(_bus_call("NameHasOwner", [name]))
        if reply is not None and reply.message_type is MessageType.METHOD_RETURN \
                and not reply.body[0]:
            log.debug("client %s left during its call: releasing its locks and holds", name)
            await asyncio.to_thread(self.service.release_locks_of, name)
            await asyncio.to_thread(self.service.release_holds_of, name)
