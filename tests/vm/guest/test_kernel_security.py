"""The kernel path's refusals and permissions, inside the VM (security review findings 5 and 7):
a group is refused as a whole before any point in time changes; sets are served from the
descriptors the daemon checked; the device nodes and files it makes are root's alone."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptcopy.datapath.base import SetVolumes
from ptcopy.engine import Direction, InUse, Kind
from tests.vm.guest.kernel_helpers import MIB, Pool, digest, kernel_path, make_set, scribble


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    p = Pool(str(tmp_path))
    yield p
    p.release()


def test_a_locked_member_refuses_the_whole_group(pool: Pool, tmp_path: Path) -> None:
    with kernel_path(str(tmp_path)) as (engine, kp):
        a = make_set(engine, kp, pool, "ga", Kind.DEPENDENT, master_size=8 * MIB)
        b = make_set(engine, kp, pool, "gb", Kind.INDEPENDENT, master_size=8 * MIB)
        kp.copy(["gb"], Direction.TO_SHADOW, full=True)
        assert kp.wait("gb", 120)
        c = make_set(engine, kp, pool, "gc", Kind.DEPENDENT, master_size=8 * MIB)
        sets = (a, b, c)
        c.set.lock(77)   # the last member: the others come first in the transaction
        for i, ks in enumerate(sets):
            scribble(ks.master_device, ks.master_size, 5, seed=i)
        before = [digest(ks.shadow_device) for ks in sets]
        for full in (False, True):
            with pytest.raises(InUse, match="gc is locked"):
                kp.copy(["ga", "gb", "gc"], Direction.TO_SHADOW, full=full, owner=5)
            assert [digest(ks.shadow_device) for ks in sets] == before
            assert not any(kp.busy(ks.name) for ks in sets)
        # a restore of the locked dependent set (a snapshot-merge) is refused too
        m_before = digest(c.master_device)
        with pytest.raises(InUse, match="gc is locked"):
            kp.copy(["gc"], Direction.TO_MASTER, full=False, owner=5)
        assert digest(c.master_device) == m_before
        assert digest(c.shadow_device) == before[2]
        # its owner may
        kp.copy(["ga", "gb", "gc"], Direction.TO_SHADOW, full=False, owner=77)
        for ks in sets:
            assert kp.wait(ks.name, 120)
            assert digest(ks.shadow_device) == digest(ks.master_device)
        c.set.unlock(77)


def _as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           *cmd], capture_output=True, text=True, check=False)


def test_served_devices_are_root_only(pool: Pool, tmp_path: Path) -> None:
    with kernel_path(str(tmp_path)) as (engine, kp):
        ks = make_set(engine, kp, pool, "pm", Kind.INDEPENDENT, master_size=8 * MIB)
        ks.set.set_copy_params(40, 1)   # slow: the frozen view and its store stay a while
        kp.copy(["pm"], Direction.TO_SHADOW, full=True)
        assert os.path.exists("/dev/mapper/" + ks.dev("freeze"))
        for dev in (ks.master_device, ks.shadow_device):
            st = os.stat(dev)
            assert stat.S_ISBLK(st.st_mode)
            assert (st.st_uid, st.st_gid) == (0, 0), dev
            assert stat.S_IMODE(st.st_mode) == 0o600, (dev, oct(st.st_mode))
        # an unprivileged user can neither write nor read a served device
        w = _as_nobody("dd", "if=/dev/zero", f"of={ks.master_device}", "bs=4096", "count=1",
                       "conv=notrunc")
        assert w.returncode != 0 and "Permission denied" in w.stderr, w
        r = _as_nobody("dd", f"if={ks.shadow_device}", "of=/dev/null", "bs=4096", "count=1")
        assert r.returncode != 0 and "Permission denied" in r.stderr, r
        # nor anything the kernel path made while a copy runs: frozen view, its store
        for name in os.listdir("/dev/mapper"):
            if name.startswith("ptcopy-"):
                st = os.stat(f"/dev/mapper/{name}")
                assert stat.S_IMODE(st.st_mode) & 0o077 == 0, (name, oct(st.st_mode))
        run = tmp_path / "run" / "kernel"
        assert stat.S_IMODE(os.stat(run).st_mode) & 0o077 == 0
        stores = list(run.iterdir())
        assert stores, "the frozen view's store is in the run directory"
        for f in stores:
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f
        ks.set.set_copy_params(0, 64)
        assert kp.wait("pm", 120)


def _sha(path: str) -> str:
    """A file's digest (buffered: the guest's /tmp is tmpfs, which has no O_DIRECT)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _file(path: Path, size: int, data: bytes | None = None) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
        if data is not None:
            f.write(data)
    return str(path)


def test_served_from_the_checked_descriptors_not_the_paths(tmp_path: Path) -> None:
    """A file and a device swapped at their paths after they were opened (checked) change
    nothing: the loop device is bound to the open file, a device is named by its number."""
    size = 8 * MIB
    original = os.urandom(size)
    m = _file(tmp_path / "m.img", size, original)
    b = _file(tmp_path / "b.img", 16 * MIB)
    pool = Pool(str(tmp_path))
    other = pool.loop("other.s", size)   # what the shadow's link will point at afterwards
    real_s = pool.loop("real.s", size)
    link = tmp_path / "shadow-link"
    link.symlink_to(real_s.path)
    try:
        with kernel_path(str(tmp_path)) as (engine, kp):
            fds = [os.open(p, os.O_RDWR | os.O_CLOEXEC) for p in (m, str(link), b)]
            try:
                st = engine.enable((m, fds[0]), (str(link), fds[1]), (b, fds[2]),
                                   kind=Kind.INDEPENDENT, chunk_size=64 * 1024)
                # the swaps: another file at the master's path, the link to another device
                os.rename(m, m + ".checked")
                _file(Path(m), size, b"\xee" * size)
                link.unlink()
                link.symlink_to(other.path)
                ks = kp.serve("fd", st, SetVolumes((m, fds[0]), (str(link), fds[1]), (b, fds[2])))
            finally:
                for fd in fds:
                    os.close(fd)
            kp.copy(["fd"], Direction.TO_SHADOW, full=True)
            assert kp.wait("fd", 120)
            assert digest(ks.master_device) == _sha(m + ".checked")
            assert digest(ks.shadow_device) == digest(real_s.path) == _sha(m + ".checked")
            assert digest(other.path) != digest(real_s.path)
            with open(m, "rb") as f:
                assert f.read(16) == b"\xee" * 16   # the impostor was never used
            table = subprocess.run(["dmsetup", "table", ks.dev("sorigin")],
                                   capture_output=True, text=True, check=True).stdout
            rdev = os.stat(real_s.path).st_rdev
            assert f"{os.major(rdev)}:{os.minor(rdev)}" in table, table
    finally:
        pool.release()
