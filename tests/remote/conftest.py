"""Fixtures for the remote tests (root only): real hosts on this machine, each in a network
namespace with its own sshd, bus and ptcopyd (tests/remote/testhosts.py).

``make_hosts(n)`` gives a running cluster host1..hostN; the cluster is shared by the session
(starting one takes a few seconds) and healed before it is handed out again: links up, sshd and
ptcopyd running. What tests create on the hosts (sets, groups) stays: use unique names.
``make_hosts(n, fresh=True)`` gives a cluster of the test's own, stopped after it.
Test functions here may be ``async def``: they run on the session's event loop (fixture ``aio``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.fixtures import aio, directory_hooks  # noqa: F401  (a fixture pytest finds)
from tests.remote.testhosts import TestHosts, skip_reason, start_hosts

HERE = Path(__file__).parent

(pytest_collection_modifyitems, pytest_pyfunc_call,
 pytest_runtest_makereport) = directory_hooks(HERE, skip_reason, timeout=150)

MakeHosts = Callable[..., TestHosts]


@pytest.fixture(scope="session")
def shared_hosts() -> Iterator[dict[tuple[object, ...], TestHosts]]:
    """The session's clusters, by their parameters; stopped (and checked) at the end."""
    made: dict[tuple[object, ...], TestHosts] = {}
    yield made
    for hosts in made.values():
        hosts.stop()


@pytest.fixture
def make_hosts(shared_hosts: dict[tuple[object, ...], TestHosts],
               ) -> Iterator[MakeHosts]:
    """``make_hosts(n, data_path="userspace", daemon_args=(), fresh=False)``: a running
    cluster host1..hostN (see the module docstring)."""
    own: list[TestHosts] = []

    def make(n: int, *, data_path: str = "userspace", daemon_args: tuple[str, ...] = (),
             fresh: bool = False) -> TestHosts:
        if fresh:
            own.append(start_hosts(n, data_path=data_path, daemon_args=daemon_args))
            return own[-1]
        key = (n, data_path, tuple(daemon_args))
        if key in shared_hosts:
            shared_hosts[key].heal()
        else:
            shared_hosts[key] = start_hosts(n, data_path=data_path, daemon_args=daemon_args)
        return shared_hosts[key]

    yield make
    for hosts in own:
        hosts.stop()
