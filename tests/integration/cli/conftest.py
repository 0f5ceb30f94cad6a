"""End-to-end CLI tests: the real ``ptcopy`` and ``iiadm`` console scripts against a real
ptcopyd on a private bus whose policy is Debian's system bus policy plus ptcopy's own
dbus/org.ptcopy.Imaging1.conf (the one that ships).

One bus and one daemon serve the whole session (starting them costs seconds); every test works in
its own directory of volume files and names its sets, groups and overflow volumes with its own
prefix, and what it leaves behind is disabled or deleted after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count

import pytest

from tests.helpers.bus import PrivateBus
from tests.helpers.cli import Cli, Daemon
from tests.helpers.daemon import Ptcopyd


@pytest.fixture(scope="session")
def bus() -> Iterator[PrivateBus]:
    """A private bus; its socket is reachable by every user (for the nobody tests)."""
    b = PrivateBus.start(extra="")
    yield b
    b.stop()


@pytest.fixture(scope="session")
def daemon(bus: PrivateBus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Ptcopyd(bus, tmp_path_factory.mktemp("ptcopyd"),
                # every volume of the host, and the userspace path whether device-mapper is
                # there or not: what these tests expect
                ["--volumes", "host", "--job-retention", "600", "--data-path", "userspace"])
    d.start()
    yield Daemon(bus.address, d)
    rc = d.stop()
    assert rc == 0, f"ptcopyd exited with {rc}: {d.log_tail()}"


_tests = count(1)


@pytest.fixture
def cli(daemon: Daemon) -> Iterator[Cli]:
    n = next(_tests)
    d = daemon.volumes / f"t{n:03d}"
    d.mkdir()
    c = Cli(daemon, f"t{n:03d}", d)
    yield c
    c.cleanup()
