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
    daemon_tier_skip,
    directory_hooks,
    ptcopyd,
    system_bus,
)
from tests.helpers.second_daemon import second_bus, second_daemon_factory  # noqa: F401

HERE = Path(__file__).parent


(pytest_collection_modifyitems, pytest_pyfunc_call,
 pytest_runtest_makereport) = directory_hooks(HERE, daemon_tier_skip, timeout=150)
