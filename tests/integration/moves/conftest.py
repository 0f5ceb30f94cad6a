"""Fixtures for the tests of shadows that move between hosts (root only): two ptcopyd, each
on its own private bus with its own state and run directories, sharing volume files."""

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
from tests.helpers.second_daemon import second_bus, second_daemon_factory  # noqa: F401

HERE = Path(__file__).parent


def _why_skip() -> str | None:
    return missing(("dbus-daemon", "busctl", "gdbus", "setpriv", "losetup"),
                   "needs root (ptcopyd serves loop devices over FUSE)")


(pytest_collection_modifyitems, pytest_pyfunc_call,
 pytest_runtest_makereport) = directory_hooks(HERE, _why_skip, timeout=150)
