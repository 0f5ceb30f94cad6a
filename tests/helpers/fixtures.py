"""What the conftests of the root tiers with a private bus share (tests/integration/daemon and
tests/integration/udev): directory hooks, the session's event loop and bus, and the daemon and
client fixtures."""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.bus import PrivateBus
from tests.helpers.client import Client, Runner
from tests.helpers.daemon import Ptcopyd, finish


def missing(tools: tuple[str, ...], without_root: str) -> str | None:
    """Why a root tier cannot run here (``without_root`` when not root, else the first missing
    tool or device), or None when it can."""
    if os.geteuid() != 0:
        return without_root
    for tool in tools:
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/setup.sh installs it)"
    if not os.path.exists("/dev/fuse") or not os.path.exists("/dev/loop-control"):
        return "needs /dev/fuse and /dev/loop-control"
    return None


def daemon_tier_skip() -> str | None:
    """Why a tier that runs ptcopyd on a private bus cannot run here, or None."""
    return missing(("dbus-daemon", "busctl", "gdbus", "setpriv", "losetup"),
                   "needs root (ptcopyd serves loop devices over FUSE)")


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


@pytest.fixture(scope="session")
def aio() -> Iterator[Runner]:
    """The session's event loop, where the client connections live."""
    yield from session_loop()


@pytest.fixture(scope="session")
def system_bus() -> Iterator[PrivateBus]:
    """A private dbus-daemon, Debian's system bus policy plus dbus/org.ptcopy.Imaging1.conf."""
    yield from session_bus()


@pytest.fixture
def daemon_args() -> list[str]:
    """Arguments every ptcopyd of a directory gets first (a conftest overrides this fixture)."""
    return []


@pytest.fixture
def daemon_factory(system_bus: PrivateBus, tmp_path: Path, daemon_args: list[str],
                   request: pytest.FixtureRequest) -> Iterator[Callable[..., Ptcopyd]]:
    """``make(*args, start=True)``: a ptcopyd with its own state, run and volume directories
    (extra command-line arguments appended). Stopped with SIGTERM and checked afterwards."""
    made: list[Ptcopyd] = []

    def make(*args: str, start: bool = True) -> Ptcopyd:
        d = Ptcopyd(system_bus, tmp_path / f"d{len(made)}", [*daemon_args, *args])
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


Connect = Callable[[], Coroutine[Any, Any, Client]]


@pytest.fixture
def connect(system_bus: PrivateBus, aio: Runner) -> Iterator[Connect]:
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
def client(connect: Connect, aio: Runner) -> Client:
    """A dbus-fast client (root) on the private system bus."""
    return aio.run(connect(), timeout=15)
