"""A failing shadow (copy-on-write store) under a kernel-path dependent set, inside the VM: the
shadow volume is a device-mapper device whose table is swapped to the ``error`` target (dm-error,
built into dm-mod) while the master is written. Master writes and their fsync succeed and land,
the set is flagged (its point in time is lost: the snapshot store is invalid), and once the
volume works again a new point in time makes the shadow equal the master
(docs/RELIABILITY.md, figure "faults")."""

from __future__ import annotations

import contextlib
import os
import random

import pytest

from ptcopy import dm
from ptcopy.engine import Direction, Kind
from ptcopy.kernelpath import KernelPath
from tests.vm.guest.kernel_helpers import CHUNK, MIB, Pool, digest, kernel_path, read_at, write_at


@pytest.fixture
def pool(tmp_path):  # type: ignore[no-untyped-def]
    p = Pool(str(tmp_path))
    yield p
    p.release()


def test_shadow_volume_failing_under_a_dependent_set(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    size = 16 * MIB
    m = pool.loop("flt.master", size, random_fill=True)
    store = KernelPath.store_needed(size, CHUNK)
    raw = pool.loop("flt.store", store)
    under = "ptflt-store"
    sectors = store // 512
    dm.create(under, dm.linear(raw.path, store))
    try:
        s = pool.device(dm.node(under))
        b = pool.loop("flt.bitmap", KernelPath.layout_for(size, store, CHUNK,
                                                           Kind.DEPENDENT).total)
        with kernel_path(str(tmp_path)) as (engine, kp):
            st = engine.enable(m.spec, s.spec, b.spec, kind=Kind.DEPENDENT, chunk_size=CHUNK)
            ks = kp.serve("flt", st, m.path, s.path, b.path)
            pit = digest(ks.shadow_device)
            rng = random.Random(7)
            write_at(ks.master_device, 0, rng.randbytes(CHUNK))     # a chunk in the store
            kp.poll()
            assert not kp.status("flt")["out_of_space"]

            dm.reload(under, f"0 {sectors} error")      # the shadow volume fails
            written = {}
            for c in rng.sample(range(1, size // CHUNK), 24):
                data = rng.randbytes(CHUNK)
                write_at(ks.master_device, c * CHUNK, data)     # O_DIRECT + fsync: no error
                written[c] = data
            for c, data in written.items():
                assert read_at(ks.master_device, c * CHUNK, CHUNK) == data
                assert read_at(m.path, c * CHUNK, CHUNK) == data
            kp.poll()
            assert kp.status("flt")["out_of_space"], \
                "the shadow's store failed but the set is not flagged"
            with contextlib.suppress(OSError):   # the lost point in time is not served
                assert digest(ks.shadow_device) != pit

            dm.reload(under, dm.linear(raw.path, store))  # the volume is back
            kp.copy(["flt"], Direction.TO_SHADOW, full=False)
            assert kp.wait("flt", 60)
            kp.poll()
            assert not kp.status("flt")["out_of_space"]
            assert digest(ks.shadow_device) == digest(ks.master_device)
            fd = os.open(ks.master_device, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        with contextlib.suppress(Exception):
            dm.remove(under)
