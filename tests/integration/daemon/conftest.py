"""Fixtures for the ptcopyd tests (root only): a private system bus with the real policy, the
daemon as a subprocess, dbus-fast clients (all from tests/helpers/fixtures.py).

Test functions here may be ``async def``: they run on the session's event loop (fixture ``aio``),
where the client connections live.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.helpers.fixtures import (  # noqa: F401  (fixtures pytest finds here)
    aio,
    client,
    connect,
    daemon_args,
    daemon_factory,
    directory_hooks,
    ptcopyd,
    system_bus,
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
