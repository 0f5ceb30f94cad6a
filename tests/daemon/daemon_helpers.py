"""Helpers for the ptcopyd tests: a private system bus, the daemon process, a dbus-fast client,
signal collectors and block-device I/O.

The bus is a real ``dbus-daemon`` whose configuration mirrors Debian's system bus (deny by
default) and includes the project's own ``dbus/org.ptcopy.Imaging1.conf``, so the policy that
ships is the one tested. The daemon is ``python -m ptcopy.daemon.main`` in a subprocess with its
own state, run and volume directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import mmap
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ptcopy.datapath import blockdev as loopdev
from ptcopy.engine import Kind, bitmap_size

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "dbus" / "org.ptcopy.Imaging1.conf"
CONTRACT = REPO / "dbus" / "org.ptcopy.Imaging1.xml"

BUS_NAME = "org.ptcopy.Imaging1"
ROOT = "/org/ptcopy/Imaging1"
IFACE = "org.ptcopy.Imaging1"
MANAGER = IFACE + ".Manager"
ISET = IFACE + ".IISet"
IGROUP = IFACE + ".IIGroup"
IOVERFLOW = IFACE + ".IIOverflow"
IVOLUME = IFACE + ".Volume"
IJOB = IFACE + ".Job"
ERR = IFACE + ".Error."
PROPS = "org.freedesktop.DBus.Properties"
OM = "org.freedesktop.DBus.ObjectManager"
DBUS = "org.freedesktop.DBus"

MIB = 1 << 20
KIB = 1 << 10
NOBODY = 65534

T = TypeVar("T")

# The project's private-bus configuration (Debian's system bus policy plus ptcopy's), with room
# for the tests' fake polkit, which runs as root (polkit's own file lets user polkitd own it).
FAKE_POLKIT = """<policy user="root">
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>"""


def bus_config(listen: str, *, extra: str = "") -> str:
    """dbus/private-bus.conf.in filled in: listening on ``listen``, with ptcopy's policy."""
    text = (REPO / "dbus" / "private-bus.conf.in").read_text()
    return (text.replace("@LISTEN@", listen).replace("@POLICY@", str(POLICY))
            .replace("@EXTRA@", extra))


# ---- values ------------------------------------------------------------------------------------


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


# ---- the bus -----------------------------------------------------------------------------------


@dataclass
class PrivateBus:
    """A private dbus-daemon configured like the system bus."""

    dir: Path
    socket: Path
    address: str
    proc: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        """Environment for real clients (busctl --system, gdbus --system)."""
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}

    @classmethod
    def start(cls) -> PrivateBus:
        # world-searchable, so a second uid can reach the socket (pytest's tmp dirs are 0700)
        d = Path(tempfile.mkdtemp(prefix="ptcopy-test-bus-", dir="/tmp"))
        d.chmod(0o755)
        sock = d / "system_bus_socket"
        conf = d / "system.conf"
        conf.write_text(bus_config(f"unix:path={sock}", extra=FAKE_POLKIT))
        proc = subprocess.Popen(["dbus-daemon", "--config-file", str(conf), "--nofork",
                                 "--print-address"], stdout=subprocess.PIPE,
                                stderr=open(d / "dbus-daemon.log", "wb"))  # noqa: SIM115
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("unix:"):
            proc.kill()
            proc.wait()
            log = (d / "dbus-daemon.log").read_text(errors="replace")
            raise RuntimeError(f"dbus-daemon did not start: {line!r} {log}")
        return cls(d, sock, f"unix:path={sock}", proc)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def busctl(self, *args: str, check: bool = True, uid: int | None = None,
               timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.tool("busctl", "--system", *args, check=check, uid=uid, timeout=timeout)

    def gdbus(self, *args: str, check: bool = True, uid: int | None = None,
              timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.tool("gdbus", args[0], "--system", *args[1:], check=check, uid=uid,
                         timeout=timeout)

    def tool(self, *cmd: str, check: bool = True, uid: int | None = None,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        argv = list(cmd)
        if uid is not None:
            argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]
        r = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}): "
                                 f"{r.stderr.strip()} {r.stdout.strip()}")
        return r

    def owner_pid(self) -> int | None:
        """PID of the connection owning org.ptcopy.Imaging1, None when nobody owns it."""
        r = self.busctl("call", DBUS, "/org/freedesktop/DBus", DBUS,
                        "GetConnectionUnixProcessID", "s", BUS_NAME, check=False, timeout=5)
        if r.returncode != 0:
            return None
        return int(r.stdout.split()[1])


# ---- the daemon --------------------------------------------------------------------------------


def ptcopy_mounts_under(path: Path) -> list[str]:
    """Every mount point at or under ``path`` (fuse.ptcopy or anything stacked on its devices)."""
    base = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == base or mp.startswith(base + "/"):
                found.append(mp)
    return found


@dataclass
class Ptcopyd:
    """One ptcopyd process (restartable on the same state directory)."""

    bus: PrivateBus
    base: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state_dir = self.base / "state"
        self.run_dir = self.base / "run"
        self.vol_dir = self.base / "vols"
        self.log_path = self.base / "ptcopyd.log"
        self.vol_dir.mkdir(parents=True, exist_ok=True)
        self._n = 0

    # -- process --

    def command(self) -> list[str]:
        # PTCOPY_DAEMON_COVERAGE=1 (with coverage importable, COVERAGE_FILE set): measure the
        # daemon itself; SIGTERM ends it normally, so its data is written
        run = ["-m", "coverage", "run", "--parallel-mode", "--source=ptcopy"] \
            if os.environ.get("PTCOPY_DAEMON_COVERAGE") == "1" else []
        return [sys.executable, *run, "-m", "ptcopy.daemon.main", "--bus", self.bus.address,
                "--state-dir", str(self.state_dir), "--run-dir", str(self.run_dir),
                "--file-volumes", str(self.vol_dir),
                # only the volumes in use: these tests count objects, and the host's other
                # block devices come and go (tests/udev covers discovery)
                *([] if "--volumes" in self.args else ["--volumes", "used"]),
                # these tests are about the userspace path (FUSE files, loop devices), which
                # "auto" would not pick on a kernel with device-mapper
                *([] if "--data-path" in self.args else ["--data-path", "userspace"]),
                *self.args]

    def start(self, timeout: float = 30) -> None:
        assert self.proc is None or self.proc.poll() is not None, "ptcopyd is already running"
        with self.log_path.open("ab") as log:
            log.write(f"---- start: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=REPO)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"ptcopyd exited with {self.proc.returncode} at start:\n"
                                     f"{self.log_tail()}")
            if self.bus.owner_pid() == self.proc.pid:
                return
            time.sleep(0.05)
        raise AssertionError(f"ptcopyd did not take {BUS_NAME} in {timeout}s:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM; the exit status (also checked by :meth:`check_clean`)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ptcopyd did not stop on SIGTERM in {timeout}s:\n"
                                 f"{self.log_tail()}") from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def leftovers(self) -> list[str]:
        """Mounts under the run dir and loop devices backed by files under it."""
        loops = loopdev.loops_backed_by(str(self.run_dir))
        return ptcopy_mounts_under(self.run_dir) + [f"{lp.device} -> {lp.backing_file}"
                                                    for lp in loops]

    def stop_and_check(self) -> None:
        """Stop with SIGTERM: exit status 0, nothing left mounted or attached."""
        rc = self.stop()
        assert rc == 0, f"ptcopyd exited with {rc} on SIGTERM:\n{self.log_tail()}"
        left = self.leftovers()
        assert not left, f"ptcopyd left behind after SIGTERM: {left}"

    def cleanup(self) -> None:
        """Whatever happened: stop the process, then remove what it left behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        from ptcopy.datapath.userspace import cleanup_stale
        with contextlib.suppress(Exception):
            cleanup_stale(str(self.run_dir / "volumes"))
        for lp in loopdev.loops_backed_by(str(self.run_dir)):
            with contextlib.suppress(Exception):
                loopdev.detach(lp.device)
        for mp in sorted(ptcopy_mounts_under(self.run_dir), reverse=True):
            with contextlib.suppress(Exception):
                loopdev.lazy_unmount(mp)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- volumes --

    def volume(self, size: int, name: str | None = None, data: bytes | None = None) -> str:
        """A sparse file volume under the daemon's file-volume directory."""
        if name is None:
            self._n += 1
            name = f"v{self._n}.img"
        p = self.vol_dir / name
        with p.open("xb") as f:
            f.truncate(size)
            if data is not None:
                f.write(data)
        return str(p)

    def set_volumes(self, master: int = 16 * MIB, shadow: int | None = None, *,
                    chunk_size: int = 0, kind: str = "dependent",
                    master_data: bytes | None = None) -> tuple[str, str, str]:
        shadow = master if shadow is None else shadow
        k = Kind.DEPENDENT if kind == "dependent" else Kind.INDEPENDENT
        m = self.volume(master, data=master_data)
        s = self.volume(shadow)
        b = self.volume(bitmap_size(master, shadow, chunk_size, k))
        return m, s, b


def finish(daemons: list[Ptcopyd], *, check_log: bool = True) -> None:
    """Stop every daemon with SIGTERM (exit 0, nothing left behind), clean up regardless; a
    traceback in a daemon's log is a failure too (an unexpected exception somewhere)."""
    errors: list[str] = []
    for d in daemons:
        try:
            if d.running:
                d.stop_and_check()
            if check_log and "Traceback" in d.log_text():
                errors.append(f"ptcopyd logged a traceback:\n{d.log_tail(80)}")
        except AssertionError as e:
            errors.append(str(e))
        finally:
            d.cleanup()
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


# ---- the client --------------------------------------------------------------------------------


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


# ---- block devices -----------------------------------------------------------------------------


def _aligned(data: bytes) -> mmap.mmap:
    buf = mmap.mmap(-1, max(len(data), 1))
    buf.write(data)
    return buf


def write_dev(dev: str, offset: int, data: bytes) -> None:
    """Write to a served device with O_DIRECT (4 KiB aligned) and fsync."""
    assert offset % 4096 == 0 and len(data) % 4096 == 0
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
    try:
        buf = _aligned(data)
        try:
            n = os.pwrite(fd, buf, offset)
        finally:
            buf.close()
        assert n == len(data), f"short write to {dev}: {n} of {len(data)}"
        os.fsync(fd)
    finally:
        os.close(fd)


def read_dev(dev: str, offset: int, length: int) -> bytes:
    """Read a served device with O_DIRECT (no page cache between us and the set)."""
    assert offset % 4096 == 0 and length % 4096 == 0
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        buf = mmap.mmap(-1, length)
        try:
            n = os.preadv(fd, [buf], offset)
            return bytes(buf[:n])
        finally:
            buf.close()
    finally:
        os.close(fd)


def dev_size(dev: str) -> int:
    fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def digest(dev: str) -> str:
    """sha256 of a whole device, read with O_DIRECT."""
    size = dev_size(dev)
    h = hashlib.sha256()
    step = MIB
    for off in range(0, size, step):
        h.update(read_dev(dev, off, min(step, size - off)))
    return h.hexdigest()


def same_content(a: str, b: str) -> str:
    """'' when two devices hold the same bytes, else where they first differ."""
    size = dev_size(a)
    if size != dev_size(b):
        return f"sizes differ: {a} {size}, {b} {dev_size(b)}"
    for off in range(0, size, MIB):
        x = read_dev(a, off, min(MIB, size - off))
        y = read_dev(b, off, min(MIB, size - off))
        if x != y:
            first = next(i for i in range(len(x)) if x[i] != y[i])
            return f"{a} and {b} differ at byte {off + first}"
    return ""


def u(v: int) -> Variant:
    return Variant("u", v)


def b(v: bool) -> Variant:
    return Variant("b", v)


def o(v: str) -> Variant:
    return Variant("o", v)


# ---- what the conftests of tests/daemon and tests/udev share ----------------------------------

def directory_hooks(here: Path, why_skip: Callable[[], str | None], timeout: float,
                    ) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """The pytest hooks of a directory of root-only tests whose ``async def`` tests run on the
    session loop (fixture ``aio``): mark them, skip them with the reason when the machine
    cannot run them, and remember each phase's report on the item for teardown checks."""

    def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
        why = why_skip()
        for item in items:
            if not Path(str(item.fspath)).is_relative_to(here):
                continue
            item.add_marker(pytest.mark.root)
            if why is not None:
                item.add_marker(pytest.mark.skip(reason=why))

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
        fn = pyfuncitem.obj
        if not inspect.iscoroutinefunction(fn) or not Path(
                str(pyfuncitem.fspath)).is_relative_to(here):
            return None
        aio: Runner = pyfuncitem.funcargs["aio"]  # type: ignore[assignment]
        kwargs = {a: pyfuncitem.funcargs[a] for a in pyfuncitem._fixtureinfo.argnames}
        aio.run(fn(**kwargs), timeout=timeout)
        return True

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None],
                                  ) -> Iterator[None]:
        rep = yield
        setattr(item, f"rep_{rep.when}", rep)
        return rep

    return pytest_collection_modifyitems, pytest_pyfunc_call, pytest_runtest_makereport


def session_loop() -> Iterator[Runner]:
    """Fixture body: the session's event loop, where the client connections live."""
    r = Runner()
    yield r
    r.close()


def session_bus() -> Iterator[PrivateBus]:
    """Fixture body: a private dbus-daemon, Debian's system bus policy plus
    dbus/org.ptcopy.Imaging1.conf."""
    bus = PrivateBus.start()
    yield bus
    bus.stop()
