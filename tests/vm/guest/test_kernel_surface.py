"""Suspend, resume and rename on the kernel data path (issue 15), and what it refuses exactly:
a suspended copy keeps its frozen view (its store reserved to its bound, the source's size),
resumes where it stopped and stays suspended across a restart; a rename while a copy waits
works, onto a name a device-mapper device already has it is refused; cancelling a merge is
refused (the kernel cannot stop one half way: the job says Cancelable false)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptcopy.datapath.kernel import KernelPath
from ptcopy.engine import Kind, dm_info
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
    with served_daemon(str(tmp_path), "kernel") as dp:
        yield dp


def _busctl(d: Ptcopyd, path: str, iface: str, member: str, sig: str,
            *args: str) -> subprocess.CompletedProcess[str]:
    return d.bus.busctl("call", "org.ptcopy.Imaging1", path, iface, member, sig, *args,
                        check=False, timeout=120)


def _prop(d: Ptcopyd, path: str, iface: str, name: str) -> str:
    return d.bus.busctl("get-property", "org.ptcopy.Imaging1", path, iface, name).stdout.strip()


def _volumes(pool: Pool, name: str, kind: Kind, size: int = 16 * MIB) -> tuple[str, str, str]:
    m = pool.loop(f"{name}.m", size, random_fill=True)
    shadow = KernelPath.store_needed(size, CHUNK) if kind is Kind.DEPENDENT else size
    s = pool.loop(f"{name}.s", shadow)
    b = pool.loop(f"{name}.b", KernelPath.layout_for(size, shadow, CHUNK, kind).total)
    return m.path, s.path, b.path


def _job(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stderr
    return re.findall(r'"([^"]+)"', r.stdout)[0]


def _done(d: Ptcopyd, job: str) -> None:
    assert _busctl(d, job, IJOB, "Wait", "d", "240").stdout.strip() == "b true"
    assert _prop(d, job, IJOB, "Success") == "b true", _prop(d, job, IJOB, "Message")


def test_suspend_resume_rename_and_what_is_refused(
        daemon: tuple[Ptcopyd, Pool]) -> None:
    d, pool = daemon
    d.start(timeout=120)
    mi, si, bi = _volumes(pool, "ks", Kind.INDEPENDENT)
    out = _busctl(d, ROOT, MANAGER, "CreateSet", "sssssa{sv}", "ks", "independent", mi, si, bi,
                  "3", "chunk_size", "u", str(CHUNK), "copy_delay", "u", "250", "copy_units",
                  "u", "8")
    assert out.returncode == 0, out.stderr
    ipath, job = re.findall(r'"([^"]+)"', out.stdout)
    assert job != "/"
    pit = digest(mi)
    assert _prop(d, job, IJOB, "Cancelable") == "b true"   # an engine copy can be stopped
    r = _busctl(d, ipath, ISET, "Resume", "a{sv}", "0")
    assert r.returncode != 0 and "no suspended copy" in r.stderr, r.stderr
    r = _busctl(d, ipath, ISET, "Suspend", "a{sv}", "0")
    assert r.returncode == 0, r.stderr
    # the job ends saying so; the frozen view's store is reserved whole
    assert _busctl(d, job, IJOB, "Wait", "d", "240").stdout.strip() == "b true"
    assert "suspended at" in _prop(d, job, IJOB, "Message"), d.log_tail()
    (store,) = (d.run_dir / "kernel").glob("*.freeze")
    st = store.stat()
    assert st.st_blocks * 512 >= st.st_size >= 16 * MIB
    write_at("/dev/mapper/ptcopy-ks-master", 0, b"x" * CHUNK)   # after the point in time

    # a rename onto a name a device-mapper device has is refused, and changes nothing
    blocker = "ptcopy-ks2-shadow"
    subprocess.run(["dmsetup", "create", blocker, "--table", "0 8 error"], check=True,
                   capture_output=True)
    r = _busctl(d, ipath, ISET, "Rename", "sa{sv}", "ks2", "0")
    assert r.returncode != 0 and f"{blocker} exists already" in r.stderr, r.stderr
    assert _prop(d, ipath, ISET, "Name") == 's "ks"'
    assert dm_info("ptcopy-ks-master").exists and dm_info("ptcopy-ks-shadow").exists
    assert not dm_info("ptcopy-ks2-master").exists
    subprocess.run(["dmsetup", "remove", blocker], check=True, capture_output=True)
    # while the copy waits: the devices take the new name and the copy goes on under it
    assert _busctl(d, ipath, ISET, "Rename", "sa{sv}", "ks2", "0").returncode == 0
    assert _prop(d, ipath, ISET, "Name") == 's "ks2"'
    job = _job(_busctl(d, ipath, ISET, "Resume", "a{sv}", "0"))
    _done(d, job)
    assert digest("/dev/mapper/ptcopy-ks2-shadow") == pit   # the point in time, not later
    assert not dm_info("ptcopy-ks-shadow").exists
    # suspended across a restart: the copy starts again from a new frozen view, suspended
    job = _job(_busctl(d, ipath, ISET, "Copy", "sa{sv}", "shadow", "0"))
    assert _busctl(d, ipath, ISET, "Suspend", "a{sv}", "0").returncode == 0
    _busctl(d, job, IJOB, "Wait", "d", "240")
    d.kill()
    d.start(timeout=120)
    assert digest("/dev/mapper/ptcopy-ks2-shadow") == digest("/dev/mapper/ptcopy-ks2-master")
    _done(d, _job(_busctl(d, ipath, ISET, "Resume", "a{sv}", "0")))
    assert digest("/dev/mapper/ptcopy-ks2-shadow") == digest("/dev/mapper/ptcopy-ks2-master")

    # a dependent set's restore is a merge in the kernel: its job cannot be cancelled
    md, sd, bd = _volumes(pool, "km", Kind.DEPENDENT, size=64 * MIB)
    out = _busctl(d, ROOT, MANAGER, "CreateSet", "sssssa{sv}", "km", "dependent", md, sd, bd,
                  "1", "chunk_size", "u", str(CHUNK))
    assert out.returncode == 0, out.stderr
    dpath = re.findall(r'"([^"]+)"', out.stdout)[0]
    scribble("/dev/mapper/ptcopy-km-shadow", 64 * MIB, 900, seed=3)
    out = _busctl(d, dpath, ISET, "Update", "sa{sv}", "master", "1", "confirm", "b", "true")
    assert out.returncode == 0, out.stderr
    mjob = re.findall(r'"([^"]+)"', out.stdout)[0]
    assert _prop(d, mjob, IJOB, "Cancelable") == "b false"
    r = _busctl(d, mjob, IJOB, "Cancel", "a{sv}", "0")
    # refused while the kernel merges; a merge that ended just before is not stopped either
    assert (r.returncode != 0 and "cannot be cancelled" in r.stderr) or \
        _prop(d, mjob, IJOB, "Done") == "b true", r.stderr
    assert _busctl(d, mjob, IJOB, "Wait", "d", "240").stdout.strip() == "b true"
    assert _prop(d, mjob, IJOB, "Success") == "b true"
