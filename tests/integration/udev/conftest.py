"""Fixtures for the volume-discovery tests (root only): the daemon fixtures of
tests/helpers/fixtures.py (a private system bus, ptcopyd as a subprocess, exporting the host's
volumes), loop devices made and detached during the test, and systemd-udevd started here when the
machine runs none (stopped afterwards).

Test functions here may be ``async def``: they run on the session's event loop (fixture ``aio``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.fixtures import (  # noqa: F401  (fixtures pytest finds here)
    aio,
    client,
    connect,
    daemon_factory,
    directory_hooks,
    missing,
    ptcopyd,
    system_bus,
)
from tests.helpers.udev import Loops, Udevd

HERE = Path(__file__).parent


def _why_skip() -> str | None:
    return missing(("dbus-daemon", "losetup", "partx", "udevadm", "sfdisk", "mkfs.ext4", "blkid"),
                   "needs root (loop devices, mounts, udev)")


(pytest_collection_modifyitems, pytest_pyfunc_call,
 pytest_runtest_makereport) = directory_hooks(HERE, _why_skip, timeout=120)


@pytest.fixture
def daemon_args() -> list[str]:
    """Every block device of the host is exported: discovery is what these tests are about."""
    return ["--volumes", "host"]


@pytest.fixture(scope="session")
def udevd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Udevd]:
    """systemd-udevd runs (started for the session when the machine runs none)."""
    u = Udevd()
    u.start(tmp_path_factory.mktemp("udevd") / "udevd.log")
    yield u
    u.stop()


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[Loops]:
    base = tmp_path / "loops"
    base.mkdir()
    lo = Loops(base)
    yield lo
    lo.cleanup()
