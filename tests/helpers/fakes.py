"""A fake ptcopyd for the CLI's unit tests: no bus, no root, no engine.

:class:`FakeDaemon` holds objects as a D-Bus object manager would (path -> interface ->
properties) and answers the calls of the CLI's pinned table (``ptcopy.cli._contract.CALLS``) the
way the contract says; :class:`FakeClient` is the CLI's own ``Client`` with only the transport
(``_send``) replaced, so everything the commands do above it (resolving names, reading the
inventory, options, rendering, errors and exit codes) is the real code. ``run_cli`` runs one
command line against a fake daemon in this process.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pytest
from dbus_fast import Variant

from ptcopy.cli import _client, _runner
from ptcopy.cli._contract import (
    CALLS,
    GROUP,
    JOB,
    MANAGER,
    NO_OBJECT,
    OBJECT_MANAGER,
    PROPERTIES,
    ROOT,
    SET,
)
from ptcopy.cli._errors import RemoteError

UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
ERR = "org.ptcopy.Imaging1.Error."


@dataclass
class Call:
    path: str
    iface: str
    member: str
    signature: str
    body: list[Any]


def set_props(name: str, kind: str, master: str, shadow: str, bitmap: str,
              **more: Any) -> dict[str, Any]:
    """An IISet's properties as ptcopyd shows a set that was just enabled (idle, normal)."""
    props: dict[str, Any] = {
        "Name": name, "Kind": kind, "Master": master, "Shadow": shadow, "Bitmap": bitmap,
        "MasterDevice": "", "ShadowDevice": "", "Overflow": NO_OBJECT, "Group": NO_OBJECT,
        "Status": "normal", "Flags": [], "Job": NO_OBJECT, "DifferencePercent": 0.0,
        "CopyPercent": 0.0, "Size": 4 << 20, "ChunkSize": 64 << 10,
        "ShadowChunksTotal": 64, "ShadowChunksUsed": 0, "CopyDelay": 0, "CopyUnits": 16,
        "LastModified": 0, "LockedBy": ""}
    props.update(more)
    return props


def job_props(operation: str, objects: Sequence[str], *, success: bool = True,
              message: str = "done") -> dict[str, Any]:
    """A Job's properties once it ended."""
    return {"Operation": operation, "Objects": list(objects), "Progress": 1.0,
            "ProgressValid": True, "Bytes": 4 << 20, "Rate": 0, "StartTime": 1_700_000_000_000_000,
            "ExpectedEndTime": 0, "Cancelable": False, "StartedByUID": 0, "Done": True,
            "Success": success, "Message": message}


@dataclass
class FakeDaemon:
    """Objects and answers of a ptcopyd; every call is recorded in ``calls``. ``refuse`` maps
    (interface, member) to the (D-Bus error name, message) the next such call fails with."""

    version: str = "9.9.9"
    data_path: str = "userspace"
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    refuse: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    _n: int = 0

    # ---- making objects ------------------------------------------------------------------

    def _path(self, kind: str) -> str:
        self._n += 1
        return f"{ROOT}/{kind}/{self._n}"

    def add_set(self, name: str, kind: str = "dependent", **props: Any) -> str:
        path = self._path("sets")
        self.objects[path] = {SET: set_props(name, kind, f"/vols/{name}-m.img",
                                             f"/vols/{name}-s.img", f"/vols/{name}-b.img",
                                             **props)}
        return path

    def add_group(self, name: str, sets: Sequence[str]) -> str:
        path = self._path("groups")
        self.objects[path] = {GROUP: {"Name": name, "Sets": list(sets), "Status": "normal",
                                      "Job": NO_OBJECT}}
        for s in sets:
            self.objects[s][SET]["Group"] = path
        return path

    def add_job(self, operation: str, objects: Sequence[str], **kw: Any) -> str:
        path = self._path("jobs")
        self.objects[path] = {JOB: job_props(operation, objects, **kw)}
        return path

    def called(self, member: str) -> list[Call]:
        return [c for c in self.calls if c.member == member]

    # ---- answering -----------------------------------------------------------------------

    def answer(self, path: str, iface: str, member: str, signature: str,
               body: list[Any]) -> list[Any]:
        """The reply body of one call; raises RemoteError as Client._send does for an error."""
        self.calls.append(Call(path, iface, member, signature, body))
        if (iface, member) in CALLS:
            wanted = CALLS[(iface, member)][0]
            assert signature == wanted, f"{member} sent {signature!r}, the contract {wanted!r}"
        if (iface, member) in self.refuse:
            name, text = self.refuse.pop((iface, member))
            raise RemoteError(name, text, member=member, path=path)
        if iface == OBJECT_MANAGER and member == "GetManagedObjects":
            return [{p: {i: dict(v) for i, v in ifaces.items()}
                     for p, ifaces in self.objects.items()}]
        if iface == PROPERTIES and member == "GetAll":
            if path == ROOT and body[0] == MANAGER:
                return [{"Version": Variant("s", self.version),
                         "DataPath": Variant("s", self.data_path)}]
            return [dict(self._object(path, member)[body[0]])]
        handler = getattr(self, f"_{iface.rsplit('.', 1)[-1]}_{member}", None)
        if handler is None:
            return self._generic(path, iface, member)
        result: list[Any] = handler(path, *body)
        return result

    def _object(self, path: str, member: str) -> dict[str, dict[str, Any]]:
        if path not in self.objects:
            raise RemoteError(UNKNOWN_OBJECT, f"no object {path}", member=member, path=path)
        return self.objects[path]

    def _generic(self, path: str, iface: str, member: str) -> list[Any]:
        self._object(path, member)
        out = CALLS[(iface, member)][1]
        return [self.add_job(member, [path])] if out == "o" else []

    def _Manager_LookUp(self, path: str, name: str) -> list[Any]:
        for p, ifaces in self.objects.items():
            s = ifaces.get(SET)
            if s is not None and name in (s["Name"], s["Shadow"]):
                return [p]
            g = ifaces.get(GROUP)
            if g is not None and g["Name"] == name:
                return [p]
        return [NO_OBJECT]

    def _Manager_CreateSet(self, path: str, name: str, kind: str, master: str, shadow: str,
                           bitmap: str, options: dict[str, Variant]) -> list[Any]:
        for ifaces in self.objects.values():
            if SET in ifaces and ifaces[SET]["Name"] == name:
                raise RemoteError(ERR + "Exists", f"a set named {name!r} exists",
                                  member="CreateSet", path=path)
        s = self._path("sets")
        self.objects[s] = {SET: set_props(name, kind, master, shadow, bitmap)}
        job = self.add_job("copy", [s]) if kind == "independent" else NO_OBJECT
        return [s, job]

    def _Manager_Refresh(self, path: str, options: dict[str, Variant]) -> list[Any]:
        return [0]

    def _IISet_Disable(self, path: str, options: dict[str, Variant]) -> list[Any]:
        self._object(path, "Disable")
        del self.objects[path]
        return []

    def _Job_Wait(self, path: str, seconds: float) -> list[Any]:
        return [bool(self._object(path, "Wait")[JOB]["Done"])]


class FakeClient(_client.Client):
    """The CLI's Client with the fake daemon behind it instead of a bus connection."""

    daemon: FakeDaemon   # set on the class by ``fake_client``

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    async def _send(self, path: str, iface: str, member: str, signature: str,
                    body: Sequence[Any], timeout: float | None = None) -> list[Any]:
        return self.daemon.answer(path, iface, member, signature, list(body))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"-> exit {self.returncode}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


@contextlib.contextmanager
def fake_client(monkeypatch: pytest.MonkeyPatch, daemon: FakeDaemon) -> Iterator[None]:
    """Commands connect to ``daemon`` instead of a bus while this is active."""
    cls = type("BoundFakeClient", (FakeClient,), {"daemon": daemon})
    with monkeypatch.context() as m:
        m.setattr(_runner, "Client", cls)
        yield


def run_cli(daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, *args: str,
            main: Callable[[list[str]], int] | None = None, stdin: str = "") -> Result:
    """One command line (``ptcopy ARGS``, or ``main`` given) against ``daemon``, in this
    process, without a terminal."""
    if main is None:
        from ptcopy.cli.main import main as ptcopy_main
        main = ptcopy_main
    out, err = io.StringIO(), io.StringIO()
    with fake_client(monkeypatch, daemon), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(args))
    return Result(int(code), out.getvalue(), err.getvalue())
