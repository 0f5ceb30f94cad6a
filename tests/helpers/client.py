"""A dbus-fast client with the calls the tests make (raw messages: exact control), the session's
event loop it lives on, and signal collectors."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from tests.helpers.names import BUS_NAME, DBUS, ERR, IJOB, ISET, MANAGER, OM, PROPS, ROOT

T = TypeVar("T")


def plain(value: Any) -> Any:
    """A D-Bus value with every Variant replaced by what it holds."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value


class CallFailed(AssertionError):
    def __init__(self, what: str, name: str, text: str) -> None:
        super().__init__(f"{what} failed: {name}: {text}")
        self.name = name
        self.text = text


class Runner:
    """One event loop for the session: dbus-fast connections live on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


class Client:
    """A dbus-fast connection with the calls the tests make (raw messages: exact control)."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls, address: str) -> Client:
        bus = await MessageBus(bus_address=address).connect()
        return cls(bus)

    @property
    def name(self) -> str:
        assert self.bus.unique_name is not None
        return self.bus.unique_name

    def disconnect(self) -> None:
        with contextlib.suppress(Exception):
            self.bus.disconnect()

    async def call(self, path: str, iface: str, member: str, sig: str = "",
                   body: Iterable[Any] = (), *, dest: str = BUS_NAME,
                   timeout: float = 30) -> Message:
        """The reply (METHOD_RETURN or ERROR); no reply in ``timeout`` fails the test."""
        msg = Message(destination=dest, path=path, interface=iface, member=member,
                      signature=sig, body=list(body))
        try:
            reply = await asyncio.wait_for(self.bus.call(msg), timeout)
        except TimeoutError:
            raise AssertionError(f"no reply to {iface}.{member} on {path} in {timeout}s") \
                from None
        assert reply is not None
        return reply

    async def ok(self, path: str, iface: str, member: str, sig: str = "",
                 body: Iterable[Any] = (), **kw: Any) -> list[Any]:
        reply = await self.call(path, iface, member, sig, body, **kw)
        if reply.message_type is MessageType.ERROR:
            raise CallFailed(f"{member} on {path}", reply.error_name or "?",
                             str(reply.body[0] if reply.body else ""))
        return plain(reply.body)

    async def fails(self, path: str, iface: str, member: str, sig: str = "",
                    body: Iterable[Any] = (), **kw: Any) -> tuple[str, str]:
        """(error name, message) of a call that must fail."""
        reply = await self.call(path, iface, member, sig, body, **kw)
        assert reply.message_type is MessageType.ERROR, \
            f"{iface}.{member}{tuple(body)} on {path} succeeded: {reply.body}"
        return reply.error_name or "", str(reply.body[0] if reply.body else "")

    async def refused(self, error: str, path: str, iface: str, member: str, sig: str = "",
                      body: Iterable[Any] = (), **kw: Any) -> str:
        """The call fails with org.ptcopy.Imaging1.Error.<error>; its message."""
        name, text = await self.fails(path, iface, member, sig, body, **kw)
        assert name == ERR + error, f"{member}: wanted {ERR + error}, got {name}: {text}"
        assert text.strip(), f"{name} without a message"
        return text

    async def get(self, path: str, iface: str, prop: str) -> Any:
        (v,) = await self.ok(path, PROPS, "Get", "ss", [iface, prop])
        return v

    async def props(self, path: str, iface: str) -> dict[str, Any]:
        (v,) = await self.ok(path, PROPS, "GetAll", "s", [iface])
        return dict(v)

    async def objects(self) -> dict[str, dict[str, dict[str, Any]]]:
        (v,) = await self.ok(ROOT, OM, "GetManagedObjects")
        return dict(v)

    async def introspect(self, path: str) -> str:
        (xml,) = await self.ok(path, "org.freedesktop.DBus.Introspectable", "Introspect")
        return str(xml)

    async def refresh(self) -> int:
        (n,) = await self.ok(ROOT, MANAGER, "Refresh", "a{sv}", [{}])
        return int(n)

    async def assert_refresh_zero(self) -> None:
        """lvmdbusd's check after every scenario: reconciling finds nothing to change."""
        n = await self.refresh()
        assert n == 0, f"Manager.Refresh() found {n} change(s) after a normal operation"

    async def ping(self) -> None:
        await self.ok(ROOT, "org.freedesktop.DBus.Peer", "Ping", timeout=10)

    # -- ptcopy calls --

    async def create_set(self, name: str, kind: str, master: str, shadow: str, bitmap: str,
                         **options: Variant) -> tuple[str, str]:
        s, j = await self.ok(ROOT, MANAGER, "CreateSet", "sssssa{sv}",
                             [name, kind, master, shadow, bitmap, options])
        return s, j

    async def create_group(self, name: str, sets: list[str]) -> str:
        (g,) = await self.ok(ROOT, MANAGER, "CreateGroup", "saoa{sv}", [name, sets, {}])
        return str(g)

    async def set_call(self, s: str, member: str, sig: str = "a{sv}",
                       body: Iterable[Any] | None = None) -> list[Any]:
        return await self.ok(s, ISET, member, sig, [{}] if body is None else body)

    async def update(self, obj: str, direction: str = "shadow", *, iface: str = ISET,
                     full: bool = False, **options: Variant) -> str:
        (j,) = await self.ok(obj, iface, "Copy" if full else "Update", "sa{sv}",
                             [direction, options])
        return str(j)

    async def wait_job(self, job: str, timeout: float = 60) -> dict[str, Any]:
        """Job.Wait until it ends; its properties afterwards (it must still be readable)."""
        assert job != "/", "no job to wait for"
        (done,) = await self.ok(job, IJOB, "Wait", "d", [float(timeout)], timeout=timeout + 10)
        assert done, f"{job} did not end in {timeout}s: {await self.props(job, IJOB)}"
        p = await self.props(job, IJOB)
        assert p["Done"] is True, p
        return p

    async def wait_prop(self, path: str, iface: str, prop: str, pred: Callable[[Any], bool],
                        timeout: float = 15) -> Any:
        end = time.monotonic() + timeout
        while True:
            v = await self.get(path, iface, prop)
            if pred(v):
                return v
            if time.monotonic() > end:
                raise AssertionError(f"{path} {prop} stayed {v!r} for {timeout}s")
            await asyncio.sleep(0.1)

    async def signals(self, **match: str) -> Signals:
        s = Signals(self, match)
        await s.start()
        return s


class Signals:
    """Collects the signals of one match rule on a client connection."""

    def __init__(self, client: Client, match: dict[str, str]) -> None:
        self.client = client
        self.match = {"type": "signal", **match}
        self.rule = ",".join(f"{k}='{v}'" for k, v in self.match.items())
        self.got: list[Message] = []
        self.times: list[float] = []     # time.monotonic() of each, when it arrived

    def _wanted(self, msg: Message) -> bool:
        if msg.message_type is not MessageType.SIGNAL:
            return False
        for key, attr in (("interface", "interface"), ("member", "member"), ("path", "path")):
            if key in self.match and getattr(msg, attr) != self.match[key]:
                return False
        return "path_namespace" not in self.match or (msg.path or "").startswith(
            self.match["path_namespace"])

    def _handler(self, msg: Message) -> None:
        if self._wanted(msg):
            self.got.append(msg)
            self.times.append(time.monotonic())

    async def start(self) -> None:
        await self.client.ok("/org/freedesktop/DBus", DBUS, "AddMatch", "s", [self.rule],
                             dest=DBUS)
        self.client.bus.add_message_handler(self._handler)

    async def stop(self) -> None:
        self.client.bus.remove_message_handler(self._handler)
        with contextlib.suppress(Exception):
            await self.client.ok("/org/freedesktop/DBus", DBUS, "RemoveMatch", "s",
                                 [self.rule], dest=DBUS)

    async def wait_for(self, pred: Callable[[Message], bool], timeout: float = 15) -> Message:
        end = time.monotonic() + timeout
        while True:
            for m in self.got:
                if pred(m):
                    return m
            if time.monotonic() > end:
                raise AssertionError(
                    f"no matching signal for {self.rule} in {timeout}s; got "
                    f"{[(m.path, m.member, plain(m.body)) for m in self.got][:20]}")
            await asyncio.sleep(0.05)

    def for_path(self, path: str) -> list[Message]:
        return [m for m in self.got if m.path == path]



def u(v: int) -> Variant:
    return Variant("u", v)


def b(v: bool) -> Variant:
    return Variant("b", v)


def o(v: str) -> Variant:
    return Variant("o", v)

