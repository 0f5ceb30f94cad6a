"""The fixtures of the test hosts, for tests/remote/conftest.py and any other test package's
conftest to import: ``make_hosts(n)`` gives a running cluster host1..hostN (docs/testing.md,
"Test hosts")."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.remote.testhosts import TestHosts, start_hosts

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
