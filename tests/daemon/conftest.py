"""Fixtures for the ptcopyd tests (root only): a private system bus with the real policy, the
daemon as a subprocess, dbus-fast clients.

Test functions here may be ``async def``: they run on the session's event loop (fixture ``aio``),
where the client connections live.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import (
    Client,
    PrivateBus,
    Ptcopyd,
    Runner,
    directory_hooks,
    finish,
    session_bus,
    session_loop,
)

HERE = Path(__file__).parent


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ptcopyd serves loop devices over FUSE)"
    for tool in ("dbus-daemon", "busctl", "gdbus", "setpriv", "losetup"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not os.path.exists("/dev/fuse") or not os.path.exists("/dev/loop-control"):
        return "needs /dev/fuse and /dev/loop-control"
    return None


(pytest_collection_modifyitems, pytest_pyfunc_call,
 pytest_runtest_makereport) = directory_hooks(HERE, _why_skip, timeout=150)
aio = pytest.fixture(scope="session", name="aio")(session_loop)
system_bus = pytest.fixture(scope="session", name="system_bus")(session_bus)


@pytest.fixture
def daemon_factory(system_bus: PrivateBus, tmp_path: Path, aio: Runner,
                   request: pytest.FixtureRequest) -> Iterator[Callable[..., Ptcopyd]]:
    """``make(*args, start=True)``: a ptcopyd with its own state, run and volume directories
    (extra command-line arguments appended). Stopped with SIGTERM and checked afterwards."""
    made: list[Ptcopyd] = []

    def make(*args: str, start: bool = True) -> Ptcopyd:
        d = Ptcopyd(system_bus, tmp_path / f"d{len(made)}", list(args))
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    rep = getattr(request.node, "rep_call", None)
    # a test that failed already reported what went wrong: only stop and clean up then
    finish(made, check_log=rep is None or rep.passed)


@pytest.fixture
def ptcopyd(daemon_factory: Callable[..., Ptcopyd]) -> Ptcopyd:
    """A running ptcopyd with default options."""
    return daemon_factory()


@pytest.fixture
def connect(system_bus: PrivateBus, aio: Runner,
            ) -> Iterator[Callable[[], Coroutine[Any, Any, Client]]]:
    """``await connect()``: another dbus-fast client connection (disconnected afterwards)."""
    made: list[Client] = []

    async def make() -> Client:
        c = await Client.connect(system_bus.address)
        made.append(c)
        return c

    yield make
    for c in made:
        c.disconnect()


@pytest.fixture
def client(connect: Callable[[], Coroutine[Any, Any, Client]], aio: Runner) -> Client:
    """A dbus-fast client (root) on the private system bus."""
    return aio.run(connect(), timeout=15)
