"""A second ptcopyd on a second private bus, as another host on the same machine: its own bus,
state, run and volume directories (the export/import/join tests; tests/remote does hosts
reached over SSH)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.bus import PrivateBus
from tests.helpers.daemon import Ptcopyd, finish


@pytest.fixture
def second_bus() -> Iterator[PrivateBus]:
    """A private bus of its own, for a daemon that must not see the first one's."""
    bus = PrivateBus.start()
    yield bus
    bus.stop()


@pytest.fixture
def second_daemon_factory(second_bus: PrivateBus, tmp_path: Path,
                          request: pytest.FixtureRequest) -> Iterator[Callable[..., Ptcopyd]]:
    """``make(*args, start=True)``: a ptcopyd on ``second_bus`` under ``tmp_path/host-b<N>``
    (the userspace path, only the volumes in use); stopped and checked as ``daemon_factory``'s
    are. Give it ``--file-volumes DIR`` to reach the first daemon's volume files."""
    made: list[Ptcopyd] = []

    def make(*args: str, start: bool = True) -> Ptcopyd:
        d = Ptcopyd(second_bus, tmp_path / f"host-b{len(made)}", list(args))
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    rep = getattr(request.node, "rep_call", None)
    finish(made, check_log=rep is None or rep.passed)
