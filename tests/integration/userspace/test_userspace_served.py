"""The served files and devices themselves: durability, refusals, teardown, prerequisites."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import random
import threading

import pytest

from ptcopy.datapath import blockdev as loopdev
from ptcopy.datapath import userspace
from ptcopy.datapath.userspace import DataPathError, UserspacePath
from ptcopy.engine import Direction, InUse, Kind, NotFound, Server, Side
from tests.helpers.names import MIB
from tests.helpers.system import mkfs, mounts_under, opened, ptcopy_mounts, sync
from tests.helpers.userspace import Harness, checksums, tree_diff, write_tree

pytestmark = pytest.mark.root

CHUNK = 32 * 1024


def aligned(data: bytes) -> mmap.mmap:
    """A page-aligned buffer holding ``data`` (O_DIRECT needs aligned memory)."""
    buf = mmap.mmap(-1, len(data))
    buf.write(data)
    return buf


def direct_write(dev: str, offset: int, data: bytes) -> None:
    with opened(dev, os.O_RDWR | os.O_DIRECT) as fd:
        assert os.pwrite(fd, aligned(data), offset) == len(data)
        os.fsync(fd)


def direct_read(dev: str, offset: int, length: int) -> bytes:
    buf = mmap.mmap(-1, length)
    with opened(dev, os.O_RDONLY | os.O_DIRECT) as fd:
        assert os.preadv(fd, [buf], offset) == length
    return bytes(buf)


def no_leftovers(up: UserspacePath, run_dir: str) -> None:
    assert up.mountpoint not in ptcopy_mounts(), ptcopy_mounts()
    assert mounts_under(run_dir) == []
    assert loopdev.loops_backed_by(run_dir) == []


# ---- 5. writes reach the volumes ----------------------------------------------------------------


def test_direct_write_to_master_device_reaches_the_master_volume(dp: Harness) -> None:
    s, (m, _, _) = dp.enable(Kind.DEPENDENT, 16 * MIB, chunk_size=CHUNK)
    up = dp.userspace()
    served = up.serve("vol", s)
    assert served.master_device
    data = random.Random(1).randbytes(8192)
    off = 5 * MIB + 7 * 4096                      # the last page of chunk 160 and into 161
    gen = s.status().last_modified_ns
    direct_write(served.master_device, off, data)
    with opened(str(m), os.O_RDONLY) as fd:
        assert os.pread(fd, len(data), off) == data
    st = s.status()
    assert s.bits("shadow") == [off // CHUNK, (off + len(data) - 1) // CHUNK]
    assert st.diff_chunks == 2 and st.last_modified_ns > gen
    # the dependent shadow keeps the point in time (zeros), copied-on-write to its volume
    assert direct_read(served.shadow_device, off, len(data)) == bytes(len(data))
    assert s.read(Side.MASTER, off, len(data)) == data


def test_direct_write_to_shadow_device_reaches_the_shadow_volume(dp: Harness) -> None:
    s, (m, sh, _) = dp.enable(Kind.INDEPENDENT, 16 * MIB, chunk_size=CHUNK)
    assert s.wait(30)
    up = dp.userspace()
    served = up.serve("vol", s)
    assert served.shadow_device
    data = random.Random(2).randbytes(CHUNK)
    off = 7 * CHUNK
    direct_write(served.shadow_device, off, data)
    with opened(str(sh), os.O_RDONLY) as fd:
        assert os.pread(fd, len(data), off) == data
    with opened(str(m), os.O_RDONLY) as fd:
        assert os.pread(fd, len(data), off) == bytes(len(data))
    assert s.bits("shadow") == [7]
    assert direct_read(served.master_device, off, len(data)) == bytes(len(data))


def test_fsync_on_mounted_fs_reaches_the_master_volume(dp: Harness) -> None:
    s, (m, _, _) = dp.enable(Kind.DEPENDENT, 32 * MIB)
    up = dp.userspace()
    served = up.serve("vol", s)
    assert served.master_device
    mkfs(served.master_device)
    mm = dp.mount(served.master_device, "master")
    bits_before = set(s.bits("shadow"))
    marker = random.Random(3).randbytes(64 * 1024)
    with (mm / "marker").open("wb") as f:
        f.write(marker)
        f.flush()
        os.fsync(f.fileno())
    raw = m.read_bytes()                    # the backing file, not through the set
    where = raw.find(marker)
    assert where >= 0, "the fsynced file is not on the master volume"
    chunks = set(range(where // s.status().chunk_size,
                       (where + len(marker) - 1) // s.status().chunk_size + 1))
    assert chunks <= set(s.bits("shadow"))
    assert set(s.bits("shadow")) - bits_before
    assert s.read(Side.MASTER, where, len(marker)) == marker


def test_served_files_have_the_volume_size_and_do_not_grow(dp: Harness) -> None:
    s, _ = dp.enable(Kind.DEPENDENT, 4 * MIB)
    up = dp.userspace()
    served = up.serve("vol", s, loop=False)
    assert served.master_device is None and served.shadow_device is None
    assert sorted(os.listdir(up.mountpoint)) == ["vol"]
    assert sorted(os.listdir(os.path.join(up.mountpoint, "vol"))) == ["master", "shadow"]
    for path in (served.master_file, served.shadow_file):
        assert os.stat(path).st_size == 4 * MIB
        with pytest.raises(OSError) as ei:
            os.truncate(path, 8 * MIB)
        assert ei.value.errno == errno.EPERM
        with opened(path, os.O_WRONLY) as fd:
            with pytest.raises(OSError) as ei:
                os.pwrite(fd, b"x" * 4096, 4 * MIB)
            assert ei.value.errno == errno.ENOSPC
            assert os.pwrite(fd, b"y" * 10, 4 * MIB - 10) == 10    # up to the end is fine
    assert s.read(Side.MASTER, 4 * MIB - 10, 10) == b"y" * 10
    assert s.read(Side.SHADOW, 4 * MIB - 10, 10) == b"y" * 10


# ---- a group of served sets ---------------------------------------------------------------------


def test_group_copy_of_two_mounted_file_systems(dp: Harness) -> None:
    rng = random.Random(4)
    up = dp.userspace()
    trees = {}
    mounts = {}
    served = {}
    for name in ("a", "b"):
        s, _ = dp.enable(Kind.DEPENDENT, 32 * MIB)
        served[name] = up.serve(name, s)
        mkfs(served[name].master_device)
        mounts[name] = dp.mount(served[name].master_device, f"m_{name}")
        write_tree(mounts[name], rng, 10)
    sync()
    for name in ("a", "b"):
        trees[name] = checksums(mounts[name])
    up.copy(["a", "b"], Direction.TO_SHADOW, full=False)
    for name in ("a", "b"):
        write_tree(mounts[name], rng, 5, prefix="later")
    sync()
    for name in ("a", "b"):
        sm = dp.mount(served[name].shadow_device, f"s_{name}", ro=True)
        got = checksums(sm)
        assert got == trees[name], tree_diff(got, trees[name])
    # one target in use refuses the whole group: nothing copied
    gen = [served[n].set.status().generation for n in ("a", "b")]
    with pytest.raises(InUse):
        up.copy(["a", "b"], Direction.TO_SHADOW, full=False)
    assert [served[n].set.status().generation for n in ("a", "b")] == gen


# ---- 6. unserve and stop ------------------------------------------------------------------------


def test_unserve_refused_while_mounted_and_stop_leaves_nothing(dp: Harness) -> None:
    s, _ = dp.enable(Kind.DEPENDENT, 32 * MIB)
    up = dp.userspace()
    run_dir = os.path.dirname(up.mountpoint)
    served = up.serve("vol", s)
    mkfs(served.master_device)
    mm = dp.mount(served.master_device, "master")
    with pytest.raises(InUse) as ei:
        up.unserve("vol")
    assert f"in use by {mm}" in str(ei.value)
    with pytest.raises(InUse):
        up.stop()
    assert "vol" in up.served                 # nothing was undone by the refusals
    assert (mm / "lost+found").is_dir()
    sync()
    up.copy(["vol"], Direction.TO_SHADOW, full=False)     # the shadow gets the file system
    dp.umount(mm)

    sm = dp.mount(served.shadow_device, "shadow", ro=True)
    with pytest.raises(InUse) as ei:
        up.unserve("vol")
    assert f"in use by {sm}" in str(ei.value)
    assert "shadow" in str(ei.value)
    dp.umount(sm)

    devices = set(served.devices.values())
    up.unserve("vol")
    assert "vol" not in up.served
    assert not devices & {lp.device for lp in loopdev.list_loops()
                          if lp.backing_file.startswith(run_dir)}
    assert os.listdir(up.mountpoint) == []
    assert loopdev.loops_backed_by(run_dir) == []
    with pytest.raises(NotFound):
        up.unserve("vol")

    served = up.serve("vol", s)               # served again, then stopped with it served
    assert loopdev.loops_backed_by(run_dir)
    up.stop()
    no_leftovers(up, run_dir)
    assert not s.closed                       # stopping the data path leaves the set open


def test_unserve_with_a_device_held_open(dp: Harness) -> None:
    """A process holding the loop device open (no mount): unserve must not leave a half-done
    state behind; either it refuses and everything still works, or it completes."""
    s, _ = dp.enable(Kind.DEPENDENT, 4 * MIB)
    up = dp.userspace()
    run_dir = os.path.dirname(up.mountpoint)
    served = up.serve("vol", s)
    assert served.master_device
    with opened(served.master_device, os.O_RDONLY) as fd:
        try:
            up.unserve("vol")
        except InUse:
            refused = True
        else:
            refused = False
        if refused:
            assert "vol" in up.served
            assert os.pread(fd, 4096, 0) == bytes(4096)
            assert {lp.device for lp in loopdev.loops_backed_by(run_dir)} == set(
                served.devices.values())
    if refused:
        up.unserve("vol")
    assert loopdev.loops_backed_by(run_dir) == []
    up.stop()
    no_leftovers(up, run_dir)


def test_stop_with_a_served_file_still_open(dp: Harness) -> None:
    """A served file still open when the server stops: the unmount is lazy, so the connection
    stays up and the server's idle workers are never woken by it; stopping must end them
    anyway rather than wait for the holder forever."""
    s, _ = dp.enable(Kind.DEPENDENT, 4 * MIB)
    up = dp.userspace()
    served = up.serve("vol", s, loop=False)
    stopped = threading.Event()

    def stop() -> None:
        up.stop(force=True)
        stopped.set()

    fd = os.open(served.master_file, os.O_RDONLY | os.O_CLOEXEC)
    try:
        threading.Thread(target=stop, daemon=True).start()
        # a hang detector, not a timing: stopping takes milliseconds when it works
        assert stopped.wait(120), "stopping the server hung while a served file was open"
    finally:
        with contextlib.suppress(OSError):   # ENOTCONN: the connection is gone, as it should be
            os.close(fd)
    assert up.mountpoint not in ptcopy_mounts()


def test_second_data_path_on_a_live_run_dir(dp: Harness) -> None:
    """Starting another UserspacePath on a run dir that a *live* server uses must not tear that
    server's mount and its users' file systems down (cleanup is for what a killed server left)."""
    s, _ = dp.enable(Kind.DEPENDENT, 32 * MIB)
    rd = dp.tmp / "shared_run"
    up = dp.userspace(rd)
    served = up.serve("vol", s)
    mkfs(served.master_device)
    mm = dp.mount(served.master_device, "master")
    (mm / "keep").write_bytes(b"data")
    with contextlib.suppress(InUse):      # refusing is fine; tearing A down is not
        dp.userspace(rd)
    sync()
    assert loopdev.mountpoints(served.master_device) == [str(mm)], \
        "the live server's user file system was unmounted"
    assert up.mountpoint in ptcopy_mounts()
    assert (mm / "keep").read_bytes() == b"data"


# ---- 8. missing prerequisites -------------------------------------------------------------------


def test_server_on_a_missing_mount_point(dp: Harness) -> None:
    where = dp.tmp / "no" / "such" / "dir"
    with pytest.raises(NotFound) as ei:
        Server(dp.engine, where)
    assert str(where) in str(ei.value)
    f = dp.tmp / "a_file"
    f.write_bytes(b"")
    with pytest.raises(NotFound) as ei:
        Server(dp.engine, f)
    assert str(f) in str(ei.value)
    assert not ptcopy_mounts() or all(not p.startswith(str(dp.tmp)) for p in ptcopy_mounts())


def test_missing_fuse_or_loop_is_named(dp: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.path.exists
    for missing, hint in (("/dev/fuse", "modprobe fuse"), ("/dev/loop-control", "modprobe loop")):
        monkeypatch.setattr(userspace.os.path, "exists",
                            lambda p, m=missing: False if p == m else real(p))
        with pytest.raises(DataPathError) as ei:
            UserspacePath(dp.engine, str(dp.tmp / "run"))
        assert missing in str(ei.value) and hint in str(ei.value)
        monkeypatch.undo()
    assert ptcopy_mounts() == [] or all(not p.startswith(str(dp.tmp)) for p in ptcopy_mounts())


# ---- what readers of the devices see after a copy -----------------------------------------------


@pytest.mark.parametrize("kind", [Kind.DEPENDENT, Kind.INDEPENDENT], ids=lambda k: k.name)
def test_buffered_readers_of_the_target_see_the_new_image(dp: Harness, kind: Kind) -> None:
    """The block devices' page cache must not show a target's old image after a copy.

    The devices stay open all along (the last close would drop the cache by itself)."""
    s, _ = dp.enable(kind, 8 * MIB, chunk_size=CHUNK)
    assert s.wait(30)
    up = dp.userspace()
    served = up.serve("vol", s)
    assert served.master_device and served.shadow_device
    off, n = 3 * MIB, 64 * 1024
    new = random.Random(5).randbytes(n)
    with opened(served.shadow_device, os.O_RDONLY) as sfd, \
            opened(served.master_device, os.O_RDONLY) as mfd:
        assert os.pread(sfd, n, off) == bytes(n)      # the shadow device caches zeros there
        direct_write(served.master_device, off, new)
        up.copy(["vol"], Direction.TO_SHADOW, full=False)
        assert s.wait(30)
        assert os.pread(sfd, n, off) == new

        # the other way: the master device caches ``new``; restore zeros from the shadow
        assert os.pread(mfd, n, off) == new
        direct_write(served.shadow_device, off, bytes(n))
        up.copy(["vol"], Direction.TO_MASTER, full=False)
        assert s.wait(30)
        assert os.pread(mfd, n, off) == bytes(n)


def test_copy_from_a_read_only_mounted_source(dp: Harness) -> None:
    """A source mounted read-only (nothing to freeze, or freezable) does not block a copy."""
    rng = random.Random(6)
    s, _ = dp.enable(Kind.DEPENDENT, 32 * MIB)
    up = dp.userspace()
    served = up.serve("vol", s)
    mkfs(served.master_device)
    mm = dp.mount(served.master_device, "master")
    write_tree(mm, rng, 10)
    dp.umount(mm)
    mm = dp.mount(served.master_device, "master", ro=True)
    want = checksums(mm)
    up.copy(["vol"], Direction.TO_SHADOW, full=False)
    sm = dp.mount(served.shadow_device, "shadow", ro=True)
    got = checksums(sm)
    assert got == want, tree_diff(got, want)
    dp.umount(mm)
    up.copy(["vol"], Direction.TO_MASTER, full=True)   # the ro-mounted shadow is the source
    assert s.wait(30)
    mm = dp.mount(served.master_device, "master", ro=True)
    got = checksums(mm)
    assert got == want, tree_diff(got, want)


def test_copy_of_a_set_that_is_not_served(dp: Harness) -> None:
    up = dp.userspace()
    with pytest.raises(NotFound) as ei:
        up.copy(["nothing"], Direction.TO_SHADOW, full=False)
    assert "nothing" in str(ei.value)
