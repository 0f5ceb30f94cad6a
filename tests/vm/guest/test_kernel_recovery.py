"""A ptcopyd that died in the middle of a restore's device changes, inside the VM: the next
kernel path takes the devices over and rebuilds what was left half done, keeping the point in
time (the shadow's store is never reset on take-over)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptcopy.datapath.kernel import KernelPath, tables
from ptcopy.engine import Direction, DmOp, Engine, Kind, dm_run
from tests.vm.guest.kernel_helpers import (
    MIB,
    Pool,
    digest,
    remove_ptcopy_devices,
    set_volumes,
    write_at,
)

CHUNK = 32 * 1024


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    p = Pool(str(tmp_path))
    yield p
    remove_ptcopy_devices()
    p.release()


@pytest.mark.parametrize("left", ["removed", "no table"])
def test_a_shadow_left_without_its_snapshot_is_rebuilt_over_its_store(
        pool: Pool, tmp_path: Path, left: str) -> None:
    engine = Engine()
    run = str(tmp_path / "run")
    m = pool.loop("m", 8 * MIB, random_fill=True)
    s = pool.loop("s", 9 * MIB)
    b = pool.loop("b", 16 * MIB)
    kp = KernelPath(engine, run)
    st = engine.enable(m.spec, s.spec, b.spec, kind=Kind.DEPENDENT, chunk_size=CHUNK)
    ks = kp.serve("cr", st, set_volumes(m, s, b))
    pit = digest(ks.shadow_device)
    for c in (3, 77, 200):
        write_at(ks.master_device, c * CHUNK, random.randbytes(CHUNK))
    assert digest(ks.master_device) != pit
    # the daemon dies as a restore starts: the shadow's snapshot is gone (or never got its
    # table), the store still holds the point in time
    kp.stop()
    ks.set.close()
    os.close(ks.bitmap_fd)
    shadow = "ptcopy-cr-shadow"
    dm_run([DmOp("remove", shadow)])
    tables.drop_node(shadow)
    if left == "no table":
        dm_run([DmOp("create", shadow)])
    kp2 = KernelPath(engine, run)
    try:
        again = kp2.serve("cr", engine.open(m.spec, s.spec, b.spec), set_volumes(m, s, b))
        assert digest(again.shadow_device) == pit
        kp2.copy(["cr"], Direction.TO_MASTER, full=False)
        assert kp2.wait("cr", 120)
        assert digest(again.master_device) == pit
    finally:
        kp2.teardown()
        engine.close()
