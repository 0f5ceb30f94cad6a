"""The kernel path's device names and set states, without device-mapper (host tests)."""

from __future__ import annotations

from typing import Any

import pytest

from ptcopy.datapath.kernel import names
from ptcopy.datapath.kernel.record import Layout, Record
from ptcopy.datapath.kernel.state import KernelSet, Master, Phase, State
from ptcopy.engine import Direction, Kind


def test_names_follow_the_device_diagram() -> None:
    assert names.master("db") == "ptcopy-db-master"
    assert names.shadow("db") == "ptcopy-db-shadow"
    uid = names.uid("0123456789abcdef0123456789abcdef")
    assert uid == "0123456789ab"
    assert names.part(uid, names.Part.MERA) == "ptcopy-0123456789ab-mera"
    assert names.origin(names.master_key("7:3")) == "ptcopy-m7x3-origin"
    assert names.is_master_era("ptcopy-0123456789ab-mera")
    assert not names.is_master_era("ptcopy-0123456789ab-sera")
    assert not names.is_master_era("other-0123456789ab-mera")
    with pytest.raises(ValueError):
        names.part(uid, "nonsense")   # type: ignore[arg-type]


def _set(name: str = "s") -> KernelSet:
    dummy: Any = None   # enter() and dev() touch neither the engine set nor the volumes
    return KernelSet(name, dummy, Kind.INDEPENDENT, 65536, "/dev/a", "/dev/b", "/dev/c", -1,
                     1 << 20, 1 << 20, Layout(0, 0, 0), Record(), "0123456789ab",
                     Master("/dev/a", "7:0", 1 << 20, "m7x0"))


def test_a_set_changes_state_only_along_the_paths_the_kernel_path_takes() -> None:
    ks = _set()
    assert ks.state is State.SERVING and not ks.busy
    ks.enter(Phase(State.COPYING, direction=Direction.TO_SHADOW))
    assert ks.busy and ks.phase.direction is Direction.TO_SHADOW
    with pytest.raises(RuntimeError, match="copying to merging"):
        ks.enter(Phase(State.MERGING, total=8))
    ks.enter(Phase())
    ks.enter(Phase(State.MERGING, total=8, owner=3))
    ks.enter(Phase(State.MERGE_FAILED, total=8, why="Merge failed"))
    assert ks.busy
    with pytest.raises(RuntimeError):
        ks.enter(Phase())   # only a restart leaves a failed merge
    out = _set("o")
    out.enter(Phase(State.OUT_OF_SPACE))
    assert not out.busy
    with pytest.raises(RuntimeError):
        out.enter(Phase(State.COPYING, direction=Direction.TO_MASTER))
    out.enter(Phase())   # a new point in time
    assert out.dev("freeze") == "ptcopy-0123456789ab-freeze"
