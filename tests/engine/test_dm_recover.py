"""Security review finding 10: devices a crashed ptcopyd left suspended are resumed at the next
start (engine.dm_recover). This machine's kernel has no device-mapper: here only the refusals;
the VM tier's guest tests drive the real recovery (tests/vm/guest)."""

from __future__ import annotations

import os

import pytest

from ptcopy import engine
from ptcopy.engine import InvalidArgument, NotFound

pytestmark = pytest.mark.skipif(os.path.exists("/dev/mapper/control"),
                                reason="this kernel has device-mapper (the VM tier covers it)")


def test_recover_names_the_missing_control_node() -> None:
    with pytest.raises(NotFound, match="device-mapper is not available"):
        engine.dm_recover()


@pytest.mark.parametrize("prefix", ["", "ptcopy\0"])
def test_recover_needs_a_prefix(prefix: str) -> None:
    with pytest.raises(InvalidArgument, match="prefix"):
        engine.dm_recover(prefix)
