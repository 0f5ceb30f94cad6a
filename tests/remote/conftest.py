"""Fixtures for the remote tests (root only): real hosts on this machine, each in a network
namespace with its own sshd, bus and ptcopyd (tests/remote/testhosts.py).

``make_hosts(n)`` gives a running cluster host1..hostN; the cluster is shared by the session
(three hosts start in about a second) and healed before it is handed out again: links up, sshd and
ptcopyd running. What tests create on the hosts (sets, groups) stays: use unique names.
``make_hosts(n, fresh=True)`` gives a cluster of the test's own, stopped after it.
Test functions here may be ``async def``: they run on the session's event loop (fixture ``aio``).
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.fixtures import aio, directory_hooks  # noqa: F401  (a fixture pytest finds)
from tests.remote.fixtures import make_hosts, shared_hosts  # noqa: F401  (fixtures)
from tests.remote.testhosts import skip_reason

HERE = Path(__file__).parent

(pytest_collection_modifyitems, pytest_pyfunc_call,
 pytest_runtest_makereport) = directory_hooks(HERE, skip_reason, timeout=150)
