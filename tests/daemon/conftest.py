"""Fixtures for the ptcopyd tests (root only): a private system bus with the real policy, the
daemon as a subprocess, dbus-fast clients.

Test functions here may be ``async def``: they run on the session's event loop (fixture ``aio``),
where the client connections live.
"""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import Client, PrivateBus, Ptcopyd, Runner, finish

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = _why_skip()
    for item in items:
        if not Path(str(item.fspath)).is_relative_to(HERE):
            continue
        item.add_marker(pytest.mark.root)
        if why is not None:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests of this directory on the session loop."""
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn) or not Path(str(pyfuncitem.fspath)).is_relative_to(
            HERE):
        return None
    aio: Runner = pyfuncitem.funcargs["aio"]  # type: ignore[assignment]
    kwargs = {a: pyfuncitem.funcargs[a] for a in pyfuncitem._fixtureinfo.argnames}
    aio.run(fn(**kwargs), timeout=150)
    return True


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None],
                              ) -> Iterator[None]:
    """Remember each phase's report on the item (fixtures look at it when tearing down)."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(scope="session")
def aio() -> Iterator[Runner]:
    r = Runner()
    yield r
    r.close()


@pytest.fixture(scope="session")
def system_bus() -> Iterator[PrivateBus]:
    """A private dbus-daemon: Debian's system bus policy plus dbus/org.ptcopy.Imaging1.conf."""
    bus = PrivateBus.start()
    yield bus
    bus.stop()


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
