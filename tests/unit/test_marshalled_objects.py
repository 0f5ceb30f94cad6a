"""GetManagedObjects' reply built from per-object marshalled entries (issue 13) is byte for
byte the reply dbus-fast marshals from the whole dict, with any dbus-fast the project runs
on (the Debian 12 package's 1.84 or a current one)."""

from __future__ import annotations

from typing import Any

from dbus_fast import Message, MessageType, Variant

from ptcopy.daemon.dbus.bus import MarshalledReply, objects_body
from ptcopy.daemon.dbus.interface import OBJECTS, marshal_entry


def _objects(n: int) -> dict[str, dict[str, dict[str, Variant]]]:
    out: dict[str, dict[str, dict[str, Variant]]] = {}
    for i in range(n):
        # lengths vary so that entries end at every offset modulo 8
        out[f"/org/ptcopy/Imaging1/sets/s{'x' * i}"] = {"org.ptcopy.Imaging1.IISet": {
            "Name": Variant("s", "n" * i), "Size": Variant("t", 2**40 + i),
            "Flags": Variant("as", ["copying"] * (i % 3)), "Job": Variant("o", "/"),
            "Ratio": Variant("d", i / 7), "Units": Variant("u", i),
            "On": Variant("b", bool(i % 2))}}
    return out


def _call() -> Message:
    return Message(destination="org.ptcopy.Imaging1", path="/org/ptcopy/Imaging1",
                   interface="org.freedesktop.DBus.ObjectManager",
                   member="GetManagedObjects", serial=41, sender=":1.7")


def _wire(objects: dict[str, Any]) -> bytes:
    call = _call()
    plain = Message(message_type=MessageType.METHOD_RETURN, reply_serial=call.serial,
                    destination=call.sender, signature=OBJECTS, body=[objects], serial=9)
    return bytes(plain._marshall(False))


def test_entries_make_the_same_reply() -> None:
    for n in (0, 1, 2, 9):
        objects = _objects(n)
        body = objects_body([marshal_entry(p, ifs) for p, ifs in objects.items()])
        reply = MarshalledReply(_call(), body)
        reply.serial = 9
        assert bytes(reply._marshall(False)) == _wire(objects), n


def test_an_entry_is_marshalled_once_per_change() -> None:
    objects = _objects(3)
    entries = [marshal_entry(p, ifs) for p, ifs in objects.items()]
    path = next(iter(objects))
    objects[path]["org.ptcopy.Imaging1.IISet"]["Name"] = Variant("s", "renamed")
    assert marshal_entry(path, objects[path]) != entries[0]
    entries[0] = marshal_entry(path, objects[path])
    reply = MarshalledReply(_call(), objects_body(entries))
    reply.serial = 9
    assert bytes(reply._marshall(False)) == _wire(objects)
