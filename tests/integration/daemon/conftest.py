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
    daemon_tier_skip,
    directory_hooks,
    ptcopyd,
    system_bus,
)

HERE = Path(__file__).parent


(pytest_collection_modifyitems, pytest_pyfunc_call,
 pytest_runtest_makereport) = directory_hooks(HERE, daemon_tier_skip, timeout=150)
