"""The VM test tier (vmkit.py): host-side tests here boot a qemu guest; the tests in guest/ run
inside that guest, started by a host-side test through vmkit.run_guest_pytest.

The guest sets PTCOPY_IN_VM=1. Without it (on the host) guest/ is not collected; with it, the
host-side tests here are not (no qemu inside the guest). Every test of this directory is marked
``vm``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.vm import vmkit

HERE = Path(__file__).parent
IN_VM = os.environ.get("PTCOPY_IN_VM") == "1"

collect_ignore_glob = ["test_*.py"] if IN_VM else ["guest"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.vm)


@pytest.fixture(scope="session")
def vm_kit() -> vmkit.Kit:
    """The kernel cache and initramfs every boot shares. A machine without them fails the tests
    rather than skipping them: scripts/setup.sh provides them wherever the suite runs."""
    try:
        return vmkit.prepare()
    except vmkit.VmUnavailable as exc:
        why = str(exc)
    pytest.fail(f"VM test tier unavailable: {why}", pytrace=False)
