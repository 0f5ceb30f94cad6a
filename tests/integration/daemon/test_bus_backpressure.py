"""ptcopyd's bus connection survives a bus daemon that reads more slowly than ptcopyd writes.

dbus-fast's writer treats the EAGAIN of a full socket send buffer as a dead connection; under
many clients ptcopyd then lost the bus and stopped (found by tests/reliability, figure "load").
Here the bus daemon is stopped (SIGSTOP) while ptcopyd's connection queues more than a socket
buffer holds, so every send past the buffer meets EAGAIN, deterministically.
"""

from __future__ import annotations

import asyncio
import os
import signal

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from ptcopy.daemon.dbus.bus import PtcopyBus
from tests.helpers.bus import PrivateBus

SIGNALS = 64
PAYLOAD = "x" * (64 * 1024)   # 64 signals of 64 KiB: 4 MiB, far more than a socket buffer


async def test_full_send_buffer_keeps_the_connection(aio: object) -> None:
    bus = PrivateBus.start()
    sender: MessageBus | None = None
    receiver: MessageBus | None = None
    try:
        sender = await PtcopyBus(bus_address=bus.address).connect()
        receiver = await MessageBus(bus_address=bus.address).connect()
        got: list[int] = []

        def count(msg: Message) -> None:
            if msg.message_type is MessageType.SIGNAL and msg.member == "Flood":
                got.append(len(msg.body[0]))

        receiver.add_message_handler(count)
        await receiver.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=["type='signal',member='Flood'"]))

        os.kill(bus.proc.pid, signal.SIGSTOP)
        try:
            sent = [sender.send(Message.new_signal("/org/ptcopy/test", "org.ptcopy.Test",
                                                   "Flood", "s", [PAYLOAD]))
                    for _ in range(SIGNALS)]
            await asyncio.sleep(0.3)   # the writer meets the full buffer meanwhile
            assert sender.connected, "the connection was dropped on a full send buffer"
        finally:
            os.kill(bus.proc.pid, signal.SIGCONT)

        await asyncio.wait_for(asyncio.gather(*sent), 30)
        reply = await asyncio.wait_for(sender.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="GetId")), 30)
        assert reply is not None and reply.message_type is MessageType.METHOD_RETURN
        for _ in range(300):
            if len(got) == SIGNALS:
                break
            await asyncio.sleep(0.1)
        assert got == [len(PAYLOAD)] * SIGNALS
    finally:
        for b in (sender, receiver):
            if b is not None:
                b.disconnect()
        bus.stop()
