"""ptcopyd on the kernel data path, inside the VM: it picks device-mapper by itself, serves sets
as /dev/mapper devices through D-Bus (busctl, a real dbus-daemon), and takes its devices over
again after being killed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptcopy import engine
from ptcopy.datapath.kernel import KernelPath
from ptcopy.engine import Kind
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import IJOB, ISET, MANAGER, ROOT
from tests.vm.guest.kernel_helpers import (
    CHUNK,
    MIB,
    Pool,
    digest,
    scribble,
    served_daemon,
    write_at,
)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Ptcopyd, Pool]]:
    with served_daemon(str(tmp_path), "auto") as dp:   # the default, which picks the kernel
        yield dp


def _call(d: Ptcopyd, path: str, iface: str, member: str, sig: str, *args: str) -> str:
    return d.bus.busctl("call", "org.ptcopy.Imaging1", path, iface, member, sig, *args,
                        timeout=120).stdout.strip()


def _prop(d: Ptcopyd, path: str, iface: str, name: str) -> str:
    return d.bus.busctl("get-property", "org.ptcopy.Imaging1", path, iface, name).stdout.strip()


def _wait_job(d: Ptcopyd, job: str) -> None:
    if job != "/":
        assert _call(d, job, IJOB, "Wait", "d", "240") == "b true"


def _volumes(pool: Pool, name: str, kind: Kind, size: int = 16 * MIB) -> tuple[str, str, str]:
    m = pool.loop(f"{name}.m", size, random_fill=True)
    shadow = KernelPath.store_needed(size, CHUNK) if kind is Kind.DEPENDENT else size
    s = pool.loop(f"{name}.s", shadow)
    b = pool.loop(f"{name}.b", KernelPath.layout_for(size, shadow, CHUNK, kind).total)
    return m.path, s.path, b.path


def test_ptcopyd_serves_sets_through_device_mapper(daemon: tuple[Ptcopyd, Pool]) -> None:
    d, pool = daemon
    d.start(timeout=120)
    assert _prop(d, ROOT, MANAGER, "DataPath") == 's "kernel"'
    m, s, b = _volumes(pool, "kd", Kind.DEPENDENT)
    out = _call(d, ROOT, MANAGER, "CreateSet", "sssssa{sv}", "kd", "dependent", m, s, b, "1",
                "chunk_size", "u", str(CHUNK))
    set_path = re.findall(r'"([^"]+)"', out)[0]
    assert _prop(d, set_path, ISET, "ShadowDevice") == 's "/dev/mapper/ptcopy-kd-shadow"'
    pit = digest("/dev/mapper/ptcopy-kd-shadow")
    # a full-size shadow without room for dm-snapshot's metadata is refused, naming the size
    m2, s2, b2 = (pool.loop(f"short.{r}", 16 * MIB).path for r in "msb")
    refused = d.bus.busctl("call", "org.ptcopy.Imaging1", ROOT, MANAGER, "CreateSet",
                           "sssssa{sv}", "short", "dependent", m2, s2, b2, "1", "chunk_size",
                           "u", str(CHUNK), check=False, timeout=120)
    assert refused.returncode != 0
    assert str(KernelPath.store_needed(16 * MIB, CHUNK)) in refused.stderr, refused.stderr
    assert not engine.dm_info("ptcopy-short-shadow").exists
    with open(b2, "rb") as f:   # refused before anything was written
        assert f.read(MIB) == bytes(MIB)
    scribble("/dev/mapper/ptcopy-kd-master", 16 * MIB, 10, seed=1)
    assert digest("/dev/mapper/ptcopy-kd-shadow") == pit

    mi, si, bi = _volumes(pool, "ki", Kind.INDEPENDENT)
    out = _call(d, ROOT, MANAGER, "CreateSet", "sssssa{sv}", "ki", "independent", mi, si, bi,
                "3", "chunk_size", "u", str(CHUNK), "copy_delay", "u", "250", "copy_units", "u",
                "8")
    ipath, job = re.findall(r'"([^"]+)"', out)
    assert job != "/", d.log_tail()   # the first full copy runs as a job (throttled)
    _wait_job(d, job)
    assert digest("/dev/mapper/ptcopy-ki-shadow") == digest(mi)

    # killed: the devices stay with the kernel, and the next ptcopyd takes them over
    d.kill()
    write_at("/dev/mapper/ptcopy-ki-master", 3 * CHUNK, b"k" * CHUNK)
    assert digest("/dev/mapper/ptcopy-kd-shadow") == pit
    d.start(timeout=120)
    job = re.findall(r'"([^"]+)"', _call(d, ipath, ISET, "Update", "sa{sv}", "shadow", "0"))[0]
    _wait_job(d, job)
    assert digest("/dev/mapper/ptcopy-ki-shadow") == digest("/dev/mapper/ptcopy-ki-master")
    assert digest("/dev/mapper/ptcopy-kd-shadow") == pit
    assert "ERROR" not in d.log_text()
