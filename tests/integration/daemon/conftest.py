"""Fixtures for the ptcopyd tests (root only): a private system bus with the real policy, the
daemon as a subprocess, dbus-fast clients (all from tests/helpers/fixtures.py).

Test functions here may be ``async def``: they run on the session's event loop (fixture ``aio``),
where the client connections live.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.fixtures import (  # noqa: F401  (fixtures pytest finds here)
    aio,
    client,
    connect,
    daemon_args,
    daemon_factory,
    directory_hooks,
    missing,
    ptcopyd,
    system_bus,
)

HERE = Path(__file__).parent


def _why_skip() -> str | None:
    return missing(("dbus-daemon", "busctl", "gdbus", "setpriv", "losetup"),
                   "needs root (ptcopyd serves loop devices over FUSE)")


(pytest_collection_modifyitems, pytest_pyfunc_call,
 pytest_runtest_makereport) = directory_hooks(HERE, _why_skip, timeout=150)
