"""Fixtures for the userspace data-path tests (FUSE server + loop devices; root only)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.userspace import Harness


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    why = None
    if os.geteuid() != 0:
        why = "needs root (FUSE mounts, loop devices, mkfs/mount)"
    elif not os.path.exists("/dev/fuse") or not os.path.exists("/dev/loop-control"):
        why = "needs /dev/fuse and /dev/loop-control"
    if why is None:
        return
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def dp(tmp_path: Path) -> Iterator[Harness]:
    """The engine, data paths and mounts of one test; all torn down afterwards."""
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()
