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

from ptcopy.datapath.kernel import KernelPath, tables
from ptcopy.engine import Direction, Kind
from tests.vm.guest.kernel_helpers import (
    CHUNK,
    MIB,
    Pool,
    digest,
    kernel_path,
    read_at,
    set_volumes,
    write_at,
)


def test_shadow_volume_failing_under_a_dependent_set(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    size = 16 * MIB
    m = pool.loop("flt.master", size, random_fill=True)
    store = KernelPath.store_needed(size, CHUNK)
    raw = pool.loop("flt.store", store)
    under = "ptflt-store"
    sectors = store // 512
    tables.create(under, tables.linear(raw.path, store))
    try:
        s = pool.device(tables.node(under))
        b = pool.loop("flt.bitmap", KernelPath.layout_for(size, store, CHUNK,
                                                           Kind.DEPENDENT).total)
        with kernel_path(str(tmp_path)) as (engine, kp):
            st = engine.enable(m.spec, s.spec, b.spec, kind=Kind.DEPENDENT, chunk_size=CHUNK)
            ks = kp.serve("flt", st, set_volumes(m, s, b))
            pit = digest(ks.shadow_device)
            rng = random.Random(7)
            write_at(ks.master_device, 0, rng.randbytes(CHUNK))     # a chunk in the store
            kp.poll()
            assert not kp.status("flt")["out_of_space"]

            tables.reload(under, f"0 {sectors} error")      # the shadow volume fails
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

            tables.reload(under, tables.linear(raw.path, store))  # the volume is back
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
            tables.remove(under)
