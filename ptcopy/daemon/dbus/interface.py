"""The base of ptcopy's interfaces: introspection carries each member's docstring, property
reads are answered from a snapshot, and PropertiesChanged carries only real changes."""

from __future__ import annotations

import functools
import inspect
import struct
import time
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast import introspection as intr
from dbus_fast.service import ServiceInterface

DOC = "org.gtk.GDBus.DocString"
FRESH = 0.5   # seconds a property read may lag the engine
OBJECTS = "a{oa{sa{sv}}}"   # GetManagedObjects' reply
Entry = tuple[bytes, int]   # a marshalled entry of it padded to 8 bytes, and the padding


class Interface(ServiceInterface):
    """Our interfaces: introspection carries each member's docstring, and properties are
    emitted as PropertiesChanged only when their values really change."""

    # snapshot changes of all objects so far: GetManagedObjects' reply is reused while this
    # (and the set of exported objects) stays the same
    changes = 0

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._last: dict[str, Any] = {}
        self._stamp = 0.0
        self._variants: dict[str, Variant] | None = None
        self._entry: tuple[str, Entry] | None = None   # (path, marshalled) of the variants

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

    def entry(self, path: str) -> Entry:
        """This object's entry of a GetManagedObjects reply, ``{path: {name: variants}}``
        marshalled, built once per change (marshalling thousands of them on every call is
        what made the call slow)."""
        variants = self.variants()
        if self._entry is None or self._entry[0] != path:
            self._entry = (path, marshal_entry(path, {self.name: variants}))
        return self._entry[1]

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
                self._forget_snapshot()
                self.emit_properties_changed(changed)
        else:
            self._forget_snapshot()
        self._last = now
        self._stamp = time.monotonic()


    def _forget_snapshot(self) -> None:
        self._variants = None
        self._entry = None
        Interface.changes += 1


def marshal_entry(path: str, ifaces: dict[str, dict[str, Variant]]) -> Entry:
    """One dict entry of an ``a{oa{sa{sv}}}`` array, marshalled as it is at any offset that
    is a multiple of 8 (every such entry starts at one): an array holding only it, without
    the array's length and the padding after it; then zeros up to a multiple of 8 (where
    the next entry starts), and how many."""
    msg = Message(message_type=MessageType.METHOD_RETURN, reply_serial=1,
                  signature=OBJECTS, body=[{path: ifaces}])
    data = reply_body(msg._marshall(False))[8:]
    pad = -len(data) % 8
    return data + b"\0" * pad, pad


def reply_body(wire: bytes | bytearray) -> bytes:
    """The body of a marshalled message (little-endian, as dbus-fast writes)."""
    (body_len,) = struct.unpack_from("<I", wire, 4)
    return bytes(wire[len(wire) - body_len:])


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
