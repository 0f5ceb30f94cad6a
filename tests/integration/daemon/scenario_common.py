"""What the scenario tests over D-Bus share (test_daemon_scenarios.py, test_daemon_jobs.py)."""

from __future__ import annotations

from tests.helpers.client import Client
from tests.helpers.names import ISET

CHUNK = 32 * 1024   # the daemon's default chunk size


async def devices(client: Client, set_path: str) -> tuple[str, str]:
    p = await client.props(set_path, ISET)
    mdev, sdev = p["MasterDevice"], p["ShadowDevice"]
    assert mdev.startswith("/dev/loop") and sdev.startswith("/dev/loop"), p
    return mdev, sdev
