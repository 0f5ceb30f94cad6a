"""Tests that run inside the VM test tier's guest (tests/vm/vmkit.py): Debian's stock kernel with
the device-mapper modules loaded, the host's root as /, the repository read-write at its own path,
no udev (DM_DISABLE_UDEV=1). Disks a host test attached are /dev/vda, /dev/vdb, ... in order.

Start them from the host with ``vmkit.run_guest_pytest(["tests/vm/guest/..."])``; the host never
collects this directory (tests/vm/conftest.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.guest.kernel_helpers import Pool


def pytest_configure(config: pytest.Config) -> None:
    # Named on the command line, this directory would be collected on the host anyway: refuse.
    if os.environ.get("PTCOPY_IN_VM") != "1":
        raise pytest.UsageError(
            "tests/vm/guest/ runs inside the VM test tier's guest (PTCOPY_IN_VM=1): start it "
            "from the host with vmkit.run_guest_pytest([...]) (see tests/vm/vmkit.py)"
        )


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    """Volumes for one test, released after it (modules that also tear down devices override
    this)."""
    p = Pool(str(tmp_path))
    yield p
    p.release()
