"""Fixtures for the volume-discovery tests (root only): the daemon fixtures of tests/daemon
(a private system bus, ptcopyd as a subprocess), loop devices made and detached during the test,
and systemd-udevd started here when the machine runs none (stopped afterwards).

Test functions here may be ``async def``: they run on the session's event loop (fixture ``aio``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "daemon"))

from daemon_helpers import (  # noqa: E402
    Client,
    PrivateBus,
    Ptcopyd,
    Runner,
    directory_hooks,
    finish,
    session_bus,
    session_loop,
)

from ptcopy.daemon.discovery import udevd_running  # noqa: E402
from ptcopy.datapath import blockdev as loopdev  # noqa: E402

UDEVD = "/lib/systemd/systemd-udevd"


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root (loop devices, mounts, udev)"
    for tool in ("dbus-daemon", "losetup", "partx", "udevadm", "sfdisk", "mkfs.ext4", "blkid"):
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/setup.sh installs it)"
    if not os.path.exists("/dev/fuse") or not os.path.exists("/dev/loop-control"):
        return "needs /dev/fuse and /dev/loop-control"
    return None


(pytest_collection_modifyitems, pytest_pyfunc_call,
 pytest_runtest_makereport) = directory_hooks(HERE, _why_skip, timeout=120)
aio = pytest.fixture(scope="session", name="aio")(session_loop)
system_bus = pytest.fixture(scope="session", name="system_bus")(session_bus)


@pytest.fixture
def daemon_factory(system_bus: PrivateBus, tmp_path: Path,
                   request: pytest.FixtureRequest) -> Iterator[Callable[..., Ptcopyd]]:
    made: list[Ptcopyd] = []

    def make(*args: str, start: bool = True) -> Ptcopyd:
        d = Ptcopyd(system_bus, tmp_path / f"d{len(made)}", ["--volumes", "host", *args])
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    rep = getattr(request.node, "rep_call", None)
    finish(made, check_log=rep is None or rep.passed)


@pytest.fixture
def ptcopyd(daemon_factory: Callable[..., Ptcopyd]) -> Ptcopyd:
    return daemon_factory()


@pytest.fixture
def client(system_bus: PrivateBus, aio: Runner) -> Iterator[Client]:
    c = aio.run(Client.connect(system_bus.address), timeout=15)
    yield c
    c.disconnect()


class Udevd:
    """systemd-udevd, started here when nothing runs it (and then stopped here)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, log: Path) -> None:
        if udevd_running():
            return
        if not os.path.exists(UDEVD):
            pytest.skip(f"needs {UDEVD} (Debian's udev package)")
        self.proc = subprocess.Popen([UDEVD], stdout=log.open("ab"),
                                     stderr=subprocess.STDOUT)
        end = time.monotonic() + 10
        while not udevd_running():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"systemd-udevd did not start: {log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def udevd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Udevd]:
    """systemd-udevd runs (started for the session when the machine runs none)."""
    u = Udevd()
    u.start(tmp_path_factory.mktemp("udevd") / "udevd.log")
    yield u
    u.stop()


class Loops:
    """Loop devices over files of this test, detached at the end whatever happened."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.devices: list[str] = []
        self.mounts: list[str] = []
        self._n = 0

    def file(self, size: int, *, ext4: bool = False, table: str = "") -> Path:
        self._n += 1
        p = self.base / f"loop{self._n}.img"
        with p.open("xb") as f:
            f.truncate(size)
        if ext4:
            subprocess.run(["mkfs.ext4", "-q", "-F", str(p)], check=True)
        if table:
            subprocess.run(["sfdisk", "-q", str(p)], input=table.encode(), check=True,
                           capture_output=True)
        return p

    def attach(self, path: Path, *, partitions: bool = False) -> str:
        args = ["losetup", "--find", "--show", *(["--partscan"] if partitions else []),
                str(path)]
        dev = subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
        self.devices.append(dev)
        name = os.path.basename(dev)
        if partitions and not any(p.startswith(name + "p")
                                  for p in os.listdir(f"/sys/class/block/{name}")):
            # some kernels do not scan a loop device's table on attach: partx adds the
            # partitions (BLKPG), with the same add uevents
            subprocess.run(["partx", "--add", dev], check=True, capture_output=True)
        return dev

    def detach(self, dev: str) -> None:
        loopdev.detach(dev)
        with contextlib.suppress(ValueError):
            self.devices.remove(dev)

    def mount(self, dev: str, where: Path) -> None:
        where.mkdir()
        subprocess.run(["mount", dev, str(where)], check=True)
        self.mounts.append(str(where))

    def cleanup(self) -> None:
        for mp in reversed(self.mounts):
            subprocess.run(["umount", mp], check=False, capture_output=True)
        for dev in self.devices:
            with contextlib.suppress(loopdev.LoopError):
                loopdev.detach(dev)


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Loops]:
    base = tmp_path / "loops"
    base.mkdir()
    lo = Loops(base)
    yield lo
    lo.cleanup()


Connect = Callable[[], Coroutine[Any, Any, Client]]
