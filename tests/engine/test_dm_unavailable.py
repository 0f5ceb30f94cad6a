"""Where the kernel has no device-mapper (this machine), every device-mapper call says so by
name, and the kernel path refuses to start with the missing piece named."""

from __future__ import annotations

import os

import pytest

from ptcopy import engine
from ptcopy.datapath.kernel import tables as dm
from ptcopy.engine import DmOp, InvalidArgument, NotFound

pytestmark = pytest.mark.skipif(os.path.exists("/dev/mapper/control"),
                                reason="this kernel has device-mapper (the VM tier covers it)")


def test_calls_name_the_missing_control_node() -> None:
    with pytest.raises(NotFound, match="/dev/mapper/control is missing"):
        engine.dm_version()
    with pytest.raises(NotFound, match="device-mapper is not available"):
        engine.dm_run([DmOp("create", "ptcopy-x")])
    with pytest.raises(NotFound):
        engine.dm_info("ptcopy-x")


def test_bad_arguments_are_refused_before_the_kernel() -> None:
    with pytest.raises(InvalidArgument, match="unknown device-mapper step"):
        engine.dm_run([DmOp("explode", "x")])
    with pytest.raises(InvalidArgument, match="0 steps"):
        engine.dm_run([])


def test_probe_says_why_and_require_refuses() -> None:
    why = dm.probe(load_modules=False)
    assert why is not None and "device-mapper" in why
    with pytest.raises(dm.KernelPathUnavailable, match="kernel data path cannot run here"):
        dm.require()
