"""Security review finding 1: only root reaches a served master or shadow.

Every route an unprivileged user (uid 65534) could take to a served file is tried: the path
under the run directory, a bind mount of the file and of the mount in a world-reachable place,
a descriptor root opened and passed on, /proc/<pid>/fd, and the loop devices. Each must fail
with EACCES or EPERM, and the master's bytes stay as they were. Root still reads and writes.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptcopy.datapath.userspace import DataPathError, UserspacePath
from ptcopy.engine import Kind, Side
from tests.helpers.names import MIB
from tests.helpers.system import mounts_under, run
from tests.helpers.userspace import Harness

pytestmark = pytest.mark.root

NOBODY = 65534
REFUSED = {"EACCES", "EPERM"}

# Run as uid 65534 by the system python (the venv need not be readable): each probe opens a path
# (then reads or writes it) or uses an inherited descriptor, and reports what happened.
PROBE = r"""
import errno, json, os, sys
out = {}
for key, how, target, flags in json.loads(sys.argv[1]):
    try:
        fd = os.open(target, flags) if how == "open" else int(target)
        if flags & (os.O_WRONLY | os.O_RDWR):
            os.pwrite(fd, b"WRITTEN BY UID 65534", 0)
        else:
            os.pread(fd, 16, 0)
        out[key] = "ok"
    except OSError as e:
        out[key] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""


def as_nobody(probes: list[tuple[str, str, str, int]], pass_fds: tuple[int, ...] = ()
              ) -> dict[str, str]:
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        "/usr/bin/python3", "-c", PROBE, json.dumps(probes)],
                       capture_output=True, text=True, check=False, pass_fds=pass_fds,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    result: dict[str, str] = json.loads(r.stdout)
    return result


def mode_of(path: str | Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid


@pytest.fixture
def exposed(dp: Harness) -> Iterator[Path]:
    """A world-reachable directory (0755 under /tmp) to hold a run directory and bind mounts:
    the test's own tmp_path is root-only, which would hide what the data path itself does.
    Torn down after the harness (mounts first)."""
    base = Path(tempfile.mkdtemp(prefix="ptcopy-access-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        dp.close()
        if not mounts_under(base):
            shutil.rmtree(base, ignore_errors=True)


def bind(dp: Harness, source: str, target: Path) -> Path:
    run("mount", "--bind", source, str(target))
    dp.mounts.append(target)   # the harness unmounts it before stopping the server
    return target


def test_unprivileged_user_reaches_no_served_file(dp: Harness, exposed: Path) -> None:
    run_dir = exposed / "run"
    run_dir.mkdir(mode=0o755)            # left loose, as an older ptcopyd (or systemd) made it
    (run_dir / "volumes").mkdir(mode=0o777)
    run_dir.chmod(0o755)
    (run_dir / "volumes").chmod(0o777)
    s, (m, _, _) = dp.enable(Kind.INDEPENDENT, 4 * MIB)
    s.write(Side.MASTER, 0, b"the master's first bytes")
    assert s.wait(10)
    up = dp.userspace(run_dir)
    served = up.serve("vol", s)
    before = m.read_bytes()

    # what is there, and whose it is
    assert mode_of(run_dir) == (stat.S_IFDIR, 0o700, 0)
    assert mode_of(up.mountpoint) == (stat.S_IFDIR, 0o700, 0)          # the FUSE mount's root
    assert mode_of(os.path.dirname(served.master_file)) == (stat.S_IFDIR, 0o700, 0)
    for f in (served.master_file, served.shadow_file):
        assert mode_of(f) == (stat.S_IFREG, 0o600, 0)
    with open("/proc/self/mountinfo", encoding="utf-8") as mi:
        line = next(x for x in mi if x.split()[4] == up.mountpoint)
    assert "default_permissions" in line.split(" - ")[1], line
    for dev in served.devices.values():
        # the kernel's loop nodes: root:disk 0660 under udev (uid 65534 is not in group disk),
        # root:root 0600 on devtmpfs alone; never anything for others
        st = os.stat(dev)
        assert stat.S_IMODE(st.st_mode) & 0o007 == 0 and st.st_uid == 0, (dev, oct(st.st_mode))
        assert st.st_gid in (0, grp.getgrnam("disk").gr_gid), dev

    # routes around the private run directory: a bind mount of one file, and of the whole mount
    (exposed / "master").touch(mode=0o666)
    file_bind = bind(dp, served.master_file, exposed / "master")
    (exposed / "volumes").mkdir(mode=0o777)
    dir_bind = bind(dp, up.mountpoint, exposed / "volumes")
    assert os.stat(file_bind).st_size == 4 * MIB    # root sees the served file through it

    # descriptors root holds: passed to the unprivileged process, and under /proc/<pid>/fd
    held = os.open(served.master_file, os.O_RDWR)
    try:
        probes: list[tuple[str, str, str, int]] = []
        for name, path in [("master", served.master_file), ("shadow", served.shadow_file),
                           ("bound file", str(file_bind)),
                           ("bound mount", str(dir_bind / "vol" / "master")),
                           ("proc fd", f"/proc/{os.getpid()}/fd/{held}"),
                           *[(f"loop {d.name.lower()}", dev)
                             for d, dev in served.devices.items()]]:
            for mode, flags in [("read", os.O_RDONLY), ("write", os.O_WRONLY),
                                ("read-write", os.O_RDWR)]:
                probes.append((f"{name} {mode}", "open", path, flags))
        probes.append(("passed descriptor read", "fd", str(held), os.O_RDONLY))
        probes.append(("passed descriptor write", "fd", str(held), os.O_RDWR))
        got = as_nobody(probes, pass_fds=(held,))
    finally:
        os.close(held)
    assert len(got) == len(probes)
    allowed = {k: v for k, v in got.items() if v not in REFUSED}
    assert not allowed, f"uid {NOBODY} got through: {allowed}"
    assert m.read_bytes() == before, "the master changed"
    assert s.read(Side.MASTER, 0, 24) == b"the master's first bytes"

    # root still reads and writes, through the run directory and through the bind mount
    fd = os.open(served.master_file, os.O_RDWR)
    try:
        assert os.pwrite(fd, b"root writes", 4096) == 11
        os.fsync(fd)
        assert os.pread(fd, 24, 0) == b"the master's first bytes"
    finally:
        os.close(fd)
    assert (exposed / "master").read_bytes()[4096:4107] == b"root writes"
    assert m.read_bytes()[4096:4107] == b"root writes"

    # nothing the unprivileged process tried holds the files open: unserving needs no force
    for mp in (file_bind, dir_bind):
        dp.umount(mp)
    up.unserve("vol")
    up.stop()
    # the mount point underneath, now that nothing is mounted over it
    assert mode_of(up.mountpoint) == (stat.S_IFDIR, 0o700, 0)


def test_run_directory_owned_by_another_user_is_refused(dp: Harness, exposed: Path) -> None:
    run_dir = exposed / "run"
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, NOBODY, NOBODY)
    with pytest.raises(DataPathError, match=f"owned by uid {NOBODY}"):
        dp.userspace(run_dir)   # (the harness stops a data path that was not refused)
    assert mounts_under(run_dir) == []
    assert mode_of(run_dir) == (stat.S_IFDIR, 0o700, NOBODY)   # refused, not taken over
    # the same for the mount point inside a root-owned run directory
    os.chown(run_dir, 0, 0)
    (run_dir / "volumes").mkdir(mode=0o755)
    os.chown(run_dir / "volumes", NOBODY, NOBODY)
    with pytest.raises(DataPathError, match=f"owned by uid {NOBODY}"):
        dp.userspace(run_dir)
    assert mounts_under(run_dir) == []
    # refused without a lock left behind: once fixed, the data path starts
    shutil.rmtree(run_dir / "volumes")
    dp.userspace(run_dir).stop()


def test_run_directory_that_is_a_symbolic_link_is_refused(dp: Harness, exposed: Path) -> None:
    target = exposed / "elsewhere"
    target.mkdir(mode=0o755)
    (exposed / "run").symlink_to(target)
    with pytest.raises(DataPathError, match="symbolic link"):
        dp.userspace(exposed / "run")
    assert mounts_under(target) == [] and list(target.iterdir()) == []
    assert mode_of(target) == (stat.S_IFDIR, 0o755, 0)


def test_a_new_run_directory_is_private(dp: Harness, exposed: Path) -> None:
    old = os.umask(0o022)
    try:
        up = UserspacePath(dp.engine, str(exposed / "a" / "run"))
    finally:
        os.umask(old)
    dp.paths.append(up)   # stopped by the harness whatever happens below
    dp.run_dirs.append(exposed / "a" / "run")
    assert mode_of(exposed / "a" / "run") == (stat.S_IFDIR, 0o700, 0)
    assert mode_of(up.mountpoint) == (stat.S_IFDIR, 0o700, 0)
    got = as_nobody([("list", "open", up.mountpoint, os.O_RDONLY | os.O_DIRECTORY)])
    assert got["list"] in REFUSED
