"""Restores (Update/Copy to the master, a snapshot-merge) of dependent sets on the kernel path,
inside the VM: every restore brings back every chunk written since the point in time, however
soon it follows an earlier one, and the point in time survives a reassembly (issue 18)."""

from __future__ import annotations

import os
import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptcopy.datapath.kernel import KernelPath, KernelSet
from ptcopy.engine import Direction, Engine, Kind, Set
from tests.helpers.bus import PrivateBus
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import IJOB, ISET, MANAGER, ROOT
from tests.vm.guest.kernel_helpers import (
    MIB,
    Pool,
    digest,
    kernel_path,
    read_at,
    remove_ptcopy_devices,
    set_volumes,
    write_at,
)

CHUNK = 32 * 1024          # the sizes: 8 MiB master, 9 MiB shadow, 16 MiB bitmap
MASTER, SHADOW, BITMAP = 8 * MIB, 9 * MIB, 16 * MIB


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    p = Pool(str(tmp_path))
    yield p
    p.release()


def _dependent(engine: Engine, kp: KernelPath, pool: Pool, name: str) -> KernelSet:
    m = pool.loop(f"{name}.m", MASTER, random_fill=True)
    s = pool.loop(f"{name}.s", SHADOW)
    b = pool.loop(f"{name}.b", BITMAP)
    st: Set = engine.enable(m.spec, s.spec, b.spec, kind=Kind.DEPENDENT, chunk_size=CHUNK)
    return kp.serve(name, st, set_volumes(m, s, b))


def _restore(kp: KernelPath, name: str) -> None:
    kp.copy([name], Direction.TO_MASTER, full=False)
    assert kp.wait(name, 120)
    assert not kp.busy(name)


def test_restore_after_restore_brings_back_every_chunk(pool: Pool, tmp_path: Path) -> None:
    with kernel_path(str(tmp_path)) as (engine, kp):
        ks = _dependent(engine, kp, pool, "rr")
        pit = {c: read_at(ks.master_device, c * CHUNK, CHUNK) for c in (0, 116, 200)}
        write_at(ks.master_device, 116 * CHUNK, random.randbytes(CHUNK))
        _restore(kp, "rr")
        assert read_at(ks.master_device, 116 * CHUNK, CHUNK) == pit[116]
        write_at(ks.master_device, 200 * CHUNK, random.randbytes(CHUNK))
        _restore(kp, "rr")
        assert read_at(ks.master_device, 200 * CHUNK, CHUNK) == pit[200]
        assert read_at(ks.master, 200 * CHUNK, CHUNK) == pit[200]   # merged into the volume
        for _ in range(3):   # and again, back to back, several chunks at a time
            for c in (0, 116, 200):
                write_at(ks.master_device, c * CHUNK, random.randbytes(CHUNK))
            _restore(kp, "rr")
            for c in (0, 116, 200):
                assert read_at(ks.master_device, c * CHUNK, CHUNK) == pit[c], c


def test_point_in_time_after_a_restore_survives_reassembly(pool: Pool, tmp_path: Path) -> None:
    """After a restore the store is a valid one on disk: rebuilt from its volumes (as after a
    reboot), the shadow still holds the point in time, not what the master got since."""
    with kernel_path(str(tmp_path)) as (engine, kp):
        ks = _dependent(engine, kp, pool, "ra")
        pit = digest(ks.shadow_device)
        write_at(ks.master_device, 50 * CHUNK, random.randbytes(CHUNK))
        _restore(kp, "ra")
        assert digest(ks.master_device) == pit
        write_at(ks.master_device, 60 * CHUNK, random.randbytes(CHUNK))
        vols = {v.path: v for v in pool.vols}
        m, s, b = vols[ks.master], vols[ks.shadow], vols[ks.bitmap]
        kp.unserve("ra")
        ks.set.close()
        again = kp.serve("ra", engine.open(m.spec, s.spec, b.spec), set_volumes(m, s, b))
        assert digest(again.shadow_device) == pit
        assert read_at(again.master_device, 60 * CHUNK, CHUNK) != \
            read_at(again.shadow_device, 60 * CHUNK, CHUNK)
        _restore(kp, "ra")
        assert digest(again.master_device) == pit


# ---- the daemon, as issue 18 reproduced it -------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Ptcopyd]:
    bus = PrivateBus.start()
    d = Ptcopyd(bus, tmp_path, ["--data-path", "kernel"])
    try:
        yield d
    finally:
        if d.running:
            d.stop()
        remove_ptcopy_devices()
        d.cleanup()
        from ptcopy.datapath import blockdev as loopdev
        for lp in loopdev.loops_backed_by(str(tmp_path)):
            subprocess.run(["losetup", "-d", lp.device], check=False, capture_output=True)
        bus.stop()


def _call(d: Ptcopyd, path: str, iface: str, member: str, sig: str, *args: str,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    return d.bus.busctl("call", "org.ptcopy.Imaging1", path, iface, member, sig, *args,
                        timeout=120, check=check)


def _wait(d: Ptcopyd, out: str) -> None:
    job = re.findall(r'"([^"]+)"', out)[-1]
    assert job != "/"
    assert _call(d, job, IJOB, "Wait", "d", "240").stdout.strip() == "b true"
    props = _call(d, job, "org.freedesktop.DBus.Properties", "GetAll", "s", IJOB).stdout
    assert '"Success" b true' in props, props


def test_daemon_restore_after_restore(daemon: Ptcopyd) -> None:
    d = daemon
    d.start(timeout=120)
    m = d.volume(MASTER, data=random.randbytes(MASTER))
    s, b = d.volume(SHADOW), d.volume(BITMAP)
    out = _call(d, ROOT, MANAGER, "CreateSet", "sssssa{sv}", "dr", "dependent", m, s, b, "1",
                "chunk_size", "u", str(CHUNK)).stdout
    sp = re.findall(r'"([^"]+)"', out)[0]
    dev = "/dev/mapper/ptcopy-dr-master"
    pit = {c: read_at(dev, c * CHUNK, CHUNK) for c in (0, 116, 200)}
    for c in (116, 200):
        write_at(dev, c * CHUNK, random.randbytes(CHUNK))
        _wait(d, _call(d, sp, ISET, "Update", "sa{sv}", "master", "1", "confirm", "b",
                       "true").stdout)
        for k in (0, 116, 200):
            assert read_at(dev, k * CHUNK, CHUNK) == pit[k], (c, k)
    assert os.path.exists(dev)
    assert "ERROR" not in d.log_text(), d.log_tail()
