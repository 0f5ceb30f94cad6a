"""Renaming served sets on the kernel data path, inside the VM, through ptcopyd and D-Bus: the
device-mapper devices take the new name while a file system stays mounted on the master, a
restart serves them under it, and a rename a crash left half done (devices renamed, the name
not recorded) is put back to the recorded name at the next start."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptcopy.datapath.kernel import KernelPath
from ptcopy.engine import Kind, dm_info
from ptcopy.engine.dm import dm_find_uuid
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import IJOB, ISET, MANAGER, ROOT
from tests.vm.guest.kernel_helpers import CHUNK, MIB, Pool, digest, served_daemon, write_at

SIZE = 16 * MIB


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Ptcopyd, Pool]]:
    with served_daemon(str(tmp_path), "kernel") as dp:
        yield dp


def _call(d: Ptcopyd, path: str, iface: str, member: str, sig: str, *args: str) -> str:
    return d.bus.busctl("call", "org.ptcopy.Imaging1", path, iface, member, sig, *args,
                        timeout=120).stdout.strip()


def _prop(d: Ptcopyd, path: str, iface: str, name: str) -> str:
    return d.bus.busctl("get-property", "org.ptcopy.Imaging1", path, iface, name).stdout.strip()


def _wait_job(d: Ptcopyd, job: str) -> None:
    if job != "/":
        assert _call(d, job, IJOB, "Wait", "d", "240") == "b true", d.log_tail()


def _create(d: Ptcopyd, pool: Pool, name: str, kind: Kind) -> str:
    """A set on fresh loop devices (random master), its first copy done; its object path."""
    m = pool.loop(f"{name}.m", SIZE, random_fill=True)
    size = KernelPath.store_needed(SIZE, CHUNK) if kind is Kind.DEPENDENT else SIZE
    s = pool.loop(f"{name}.s", size)
    b = pool.loop(f"{name}.b", KernelPath.layout_for(SIZE, size, CHUNK, kind).total)
    out = _call(d, ROOT, MANAGER, "CreateSet", "sssssa{sv}", name, kind.name.lower(), m.path,
                s.path, b.path, "1", "chunk_size", "u", str(CHUNK))
    path, job = re.findall(r'"([^"]+)"', out)
    _wait_job(d, job)
    return path


def _update(d: Ptcopyd, set_path: str) -> None:
    _wait_job(d, re.findall(r'"([^"]+)"', _call(d, set_path, ISET, "Update", "sa{sv}",
                                                 "shadow", "0"))[0])


def _devices_of(name: str) -> dict[str, bool]:
    return {f"ptcopy-{name}-{r}": dm_info(f"ptcopy-{name}-{r}").exists
            for r in ("master", "shadow")}


def test_rename_with_a_file_system_mounted_on_the_master(
        daemon: tuple[Ptcopyd, Pool], tmp_path: Path) -> None:
    d, pool = daemon
    d.start(timeout=120)
    sp = _create(d, pool, "ra", Kind.DEPENDENT)
    master = "/dev/mapper/ptcopy-ra-master"
    rdev = os.stat(master).st_rdev
    subprocess.run(["mkfs.ext4", "-q", "-F", master], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", master, str(mnt)], check=True)
    try:
        (mnt / "before").write_bytes(b"b" * 100_000)
        held = os.open(master, os.O_RDONLY | os.O_CLOEXEC)   # an opener across the rename
        try:
            _call(d, sp, ISET, "Rename", "sa{sv}", "rb", "0")
            # the same devices under the new names; the old names are gone
            assert _devices_of("rb") == {"ptcopy-rb-master": True, "ptcopy-rb-shadow": True}
            assert _devices_of("ra") == {"ptcopy-ra-master": False, "ptcopy-ra-shadow": False}
            assert not os.path.exists(master)
            assert os.stat("/dev/mapper/ptcopy-rb-master").st_rdev == rdev
            assert _prop(d, sp, ISET, "Name") == 's "rb"'
            assert _prop(d, sp, ISET, "MasterDevice") == 's "/dev/mapper/ptcopy-rb-master"'
            assert _prop(d, sp, ISET, "ShadowDevice") == 's "/dev/mapper/ptcopy-rb-shadow"'
            # the mount and the open descriptor keep working
            (mnt / "after").write_bytes(b"a" * 200_000)
            os.sync()
            assert len(os.pread(held, 4096, 0)) == 4096
        finally:
            os.close(held)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    # a new point in time under the new name holds both files
    _update(d, sp)
    assert digest("/dev/mapper/ptcopy-rb-shadow") == digest("/dev/mapper/ptcopy-rb-master")
    subprocess.run(["mount", "-o", "ro,noload", "/dev/mapper/ptcopy-rb-shadow", str(mnt)],
                   check=True)
    try:
        assert (mnt / "before").read_bytes() == b"b" * 100_000
        assert (mnt / "after").read_bytes() == b"a" * 200_000
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    # a restart serves the set under the name the store recorded
    d.kill()
    d.start(timeout=120)
    assert _devices_of("rb") == {"ptcopy-rb-master": True, "ptcopy-rb-shadow": True}
    write_at("/dev/mapper/ptcopy-rb-master", 5 * CHUNK, b"r" * CHUNK)
    _update(d, sp)
    assert digest("/dev/mapper/ptcopy-rb-shadow") == digest("/dev/mapper/ptcopy-rb-master")
    assert "ERROR" not in d.log_text()


def test_a_rename_a_crash_left_half_done_is_undone_at_the_next_start(
        daemon: tuple[Ptcopyd, Pool]) -> None:
    d, pool = daemon
    d.start(timeout=120)
    sp = _create(d, pool, "ca", Kind.INDEPENDENT)
    uuids = {r: dm_info(f"ptcopy-ca-{r}").uuid for r in ("master", "shadow")}
    assert all(u.startswith("PTCOPY-") for u in uuids.values()), uuids
    # ptcopyd dies mid-rename: the master device (then both) renamed, the store still "ca"
    for n, renamed in enumerate((("master",), ("master", "shadow")), 1):
        d.kill()
        for r in renamed:
            subprocess.run(["dmsetup", "rename", f"ptcopy-ca-{r}", f"ptcopy-cb-{r}"],
                           check=True, capture_output=True)
        assert dm_find_uuid(uuids["master"]) == "ptcopy-cb-master"
        write_at("/dev/mapper/ptcopy-cb-master", n * CHUNK, bytes([n]) * CHUNK)
        d.start(timeout=120)
        # the recorded name wins: every device is back under it, found by its uuid
        assert _devices_of("ca") == {"ptcopy-ca-master": True, "ptcopy-ca-shadow": True}
        assert _devices_of("cb") == {"ptcopy-cb-master": False, "ptcopy-cb-shadow": False}
        assert {r: dm_find_uuid(u) for r, u in uuids.items()} == \
            {"master": "ptcopy-ca-master", "shadow": "ptcopy-ca-shadow"}
        assert _prop(d, sp, ISET, "Name") == 's "ca"'
        log = d.log_text()
        assert log.count("renamed back to ptcopy-ca-master") == n, d.log_tail()
        assert log.count("renamed back to ptcopy-ca-shadow") == n - 1, d.log_tail()
        # and it serves as before: the write made while the names were wrong is copied
        _update(d, sp)
        assert digest("/dev/mapper/ptcopy-ca-shadow") == digest("/dev/mapper/ptcopy-ca-master")
        with open("/dev/mapper/ptcopy-ca-shadow", "rb") as f:
            f.seek(n * CHUNK)
            assert f.read(CHUNK) == bytes([n]) * CHUNK
    # and a rename now completes
    _call(d, sp, ISET, "Rename", "sa{sv}", "cb", "0")
    assert _devices_of("cb") == {"ptcopy-cb-master": True, "ptcopy-cb-shadow": True}
