"""Independent sets on the kernel path, inside the VM: full copy and incremental update from a
frozen snapshot while the master is written, restore, reassembly from the volumes, refusals."""

from __future__ import annotations

import random

import pytest

from ptcopy.datapath.kernel import tables
from ptcopy.engine import (
    Direction,
    DmOp,
    Flag,
    InvalidArgument,
    Kind,
    dm_list,
    dm_message,
    dm_run,
)
from tests.vm.guest.kernel_helpers import (
    CHUNK,
    Pool,
    Vol,
    digest,
    kernel_path,
    make_set,
    reopen,
    scribble,
    write_at,
)


def _vols(pool: Pool, name: str) -> tuple[Vol, Vol, Vol]:
    by = {v.loop_file.rsplit("/", 1)[1]: v for v in pool.vols if v.loop_file}
    return by[f"{name}.master"], by[f"{name}.shadow"], by[f"{name}.bitmap"]


def test_full_copy_is_the_frozen_image_despite_writes(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with kernel_path(str(tmp_path)) as (engine, kp):
        ks = make_set(engine, kp, pool, "i1", Kind.INDEPENDENT)
        image = digest(ks.master)
        ks.set.set_copy_params(2, 16)   # slow enough that the writer overlaps the copy
        kp.copy(["i1"], Direction.TO_SHADOW, full=True)
        assert kp.busy("i1")
        # the shadow shows the point in time at once, read-only until the copy is done
        assert digest(ks.shadow_device) == image
        rng = random.Random(1)
        for _ in range(30):
            write_at(ks.master_device, rng.randrange(ks.master_size // CHUNK) * CHUNK,
                     rng.randbytes(CHUNK))
        assert kp.wait("i1", 300)
        p = kp.progress("i1")
        assert p.result == 0 and p.chunks_done == ks.master_size // CHUNK
        assert digest(ks.shadow) == image          # the volume itself: exactly the frozen image
        assert digest(ks.shadow_device) == image
        assert digest(ks.master_device) != image
        assert not ks.set.status().flags & Flag.INCOMPLETE
        write_at(ks.shadow_device, 0, b"w" * CHUNK)   # writable again


def test_update_copies_only_what_changed(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with kernel_path(str(tmp_path)) as (engine, kp):
        ks = make_set(engine, kp, pool, "i2", Kind.INDEPENDENT)
        kp.copy(["i2"], Direction.TO_SHADOW, full=True)
        assert kp.wait("i2", 300)
        nchunks = ks.master_size // CHUNK
        changed = set(scribble(ks.master_device, ks.master_size, nchunks // 100 + 2, seed=2))
        changed |= set(scribble(ks.shadow_device, ks.master_size, 3, seed=3))
        image = digest(ks.master_device)
        kp.copy(["i2"], Direction.TO_SHADOW, full=False)
        write_at(ks.master_device, 0, b"x" * CHUNK)   # after the point in time: not copied
        assert kp.wait("i2", 120)
        p = kp.progress("i2")
        assert p.result == 0
        assert len(changed) <= p.chunks_total <= len(changed) + 2, (p, sorted(changed))
        assert digest(ks.shadow_device) == image
        # the next update copies what changed since this one, not this one's chunks again
        again = set(scribble(ks.master_device, ks.master_size, 4, seed=7))
        kp.copy(["i2"], Direction.TO_SHADOW, full=False)
        assert kp.wait("i2", 120)
        assert len(again) <= kp.progress("i2").chunks_total <= len(again) + 2
        # a metadata snapshot left held (a crash inside an update's fold) does not block it
        dm_message(ks.dev("mera"), "take_metadata_snap")
        scribble(ks.master_device, ks.master_size, 2, seed=8)
        kp.copy(["i2"], Direction.TO_SHADOW, full=False)
        assert kp.wait("i2", 120)
        image = digest(ks.master_device)
        assert digest(ks.shadow_device) == image
        assert not tables.era_held(ks.dev("mera"))
        # and back: the master becomes the shadow again
        scribble(ks.master_device, ks.master_size, 5, seed=4)
        kp.copy(["i2"], Direction.TO_MASTER, full=False)
        assert kp.wait("i2", 120)
        assert kp.progress("i2").result == 0
        assert digest(ks.master_device) == image


def test_abort_leaves_the_shadow_incomplete_and_writable(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with kernel_path(str(tmp_path)) as (engine, kp):
        ks = make_set(engine, kp, pool, "i3", Kind.INDEPENDENT)
        ks.set.set_copy_params(50, 1)
        kp.copy(["i3"], Direction.TO_SHADOW, full=True)
        kp.abort("i3")
        assert kp.wait("i3", 60)
        assert ks.set.status().flags & Flag.INCOMPLETE
        assert not tables.exists(ks.dev("freeze"))
        write_at(ks.shadow_device, 0, b"y" * CHUNK)
        ks.set.set_copy_params(0, 256)
        kp.copy(["i3"], Direction.TO_SHADOW, full=False)   # finishes the job
        assert kp.wait("i3", 300)
        assert digest(ks.shadow_device) == digest(ks.master_device)


def test_reassembly_keeps_changes_made_before_the_stop(pool: Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with kernel_path(str(tmp_path)) as (engine, kp):
        ks = make_set(engine, kp, pool, "i4", Kind.INDEPENDENT)
        kp.copy(["i4"], Direction.TO_SHADOW, full=True)
        assert kp.wait("i4", 300)
        scribble(ks.master_device, ks.master_size, 7, seed=5)
    with kernel_path(str(tmp_path)) as (engine, kp):
        m, s, b = _vols(pool, "i4")
        ks = reopen(engine, kp, "i4", m, s, b)
        kp.copy(["i4"], Direction.TO_SHADOW, full=False)
        assert kp.wait("i4", 120)
        assert 7 <= kp.progress("i4").chunks_total <= 9
        assert digest(ks.shadow_device) == digest(ks.master_device)


def test_kernel_refusals_name_the_problem_and_leave_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    before = set(dm_list())
    with pytest.raises(InvalidArgument, match="refused the table for ptcopy-bad"):
        dm_run([DmOp("create", "ptcopy-bad"),
                DmOp("load", "ptcopy-bad", "0 8 snapshot /dev/null /dev/null P 8"),
                DmOp("resume", "ptcopy-bad")])
    assert set(dm_list()) == before
    with pytest.raises(InvalidArgument, match="malformed table line"):
        dm_run([DmOp("create", "ptcopy-bad2"), DmOp("load", "ptcopy-bad2", "zero 8")])
    assert not tables.exists("ptcopy-bad2")
