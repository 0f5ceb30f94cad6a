"""ptcopyd hardening (issue 11; security review findings 6, 8, 9, 12 and 16): one daemon per
state directory, any file name, an event loop that never waits on a long operation, no
existence oracle for unprivileged callers, and the smaller refusals."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from ptcopy.daemon.discovery import bus_label_escape, volume_id
from ptcopy.daemon.inventory import BoundedCache
from ptcopy.daemon.main import AlreadyRunning, _lock_holder, lock_state_dir
from ptcopy.daemon.state import GroupRow, SetRow, Store
from ptcopy.datapath import blockdev as loopdev
from tests.helpers.bus import PrivateBus
from tests.helpers.client import Client, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import BUS_NAME, IJOB, ISET, IVOLUME, MANAGER, MIB, REPO, ROOT
from tests.integration.daemon import unpriv_client

pytestmark = pytest.mark.root

Connect = Callable[[], Coroutine[Any, Any, Client]]


# ---- helpers -----------------------------------------------------------------------------------


def as_nobody(bus: PrivateBus, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls made by a dbus-fast client running as uid 65534."""
    return unpriv_client.as_nobody(bus.address, calls)


def candidates_call(master: str, role: str = "shadow") -> dict[str, Any]:
    return {"path": ROOT, "iface": MANAGER, "member": "Candidates", "sig": "ssa{sv}",
            "body": [master, role, {}]}


def fingerprint(*dirs: Path) -> dict[str, tuple[int, str]]:
    """Every file under the directories: its mtime and the sha256 of its content."""
    out: dict[str, tuple[int, str]] = {}
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p)] = (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@contextlib.contextmanager
def ext4_mount(base: Path, size: int = 64 * MIB) -> Iterator[Path]:
    """A small ext4 file system on a loop device, mounted under ``base`` (to freeze it)."""
    img = base / "fs.img"
    with img.open("xb") as f:
        f.truncate(size)
    dev = loopdev.attach(str(img), direct_io=False)
    mp = base / "mnt"
    mp.mkdir()
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True)
        subprocess.run(["mount", dev, str(mp)], check=True, capture_output=True)
        try:
            mp.chmod(0o700)
            yield mp
        finally:
            subprocess.run(["fsfreeze", "-u", str(mp)], check=False, capture_output=True)
            subprocess.run(["umount", "--lazy", str(mp)], check=False, capture_output=True)
    finally:
        with contextlib.suppress(loopdev.LoopError):   # a failed test may leave it busy
            loopdev.detach(dev)


def sparse(path: Path, size: int) -> str:
    with path.open("xb") as f:
        f.truncate(size)
    return str(path)


def daemon_has_open(pid: int, path: str) -> bool:
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            if os.readlink(os.path.join(fd_dir, fd)) == path:
                return True
    return False


async def until(pred: Callable[[], bool], what: str, limit: float = 30) -> None:
    """Poll ``pred`` (a bound on a hang, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not pred():
        assert loop.time() < end, f"{what} did not happen"
        await asyncio.sleep(0.05)


# ---- finding 6: one daemon per state directory -----------------------------------------------


async def test_second_daemon_on_the_same_state_dir_refuses_and_touches_nothing(
        daemon_factory: Callable[..., Ptcopyd], client: Client) -> None:
    """A second ptcopyd on the same --state-dir (on another bus, so the bus name cannot stop
    it) exits non-zero naming the first one's PID, before it reads or writes anything."""
    first = daemon_factory()
    m, s, b = first.set_volumes(4 * MIB)
    await client.create_set("locked", "dependent", m, s, b)
    assert stat.S_IMODE(first.state_dir.stat().st_mode) == 0o700
    lock = first.state_dir / "ptcopyd.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert first.proc is not None
    assert lock.read_text().strip() == str(first.proc.pid)

    before = fingerprint(first.state_dir, first.vol_dir)
    other_bus = PrivateBus.start()
    second = daemon_factory(start=False)
    second.bus = other_bus
    second.state_dir = first.state_dir
    second.vol_dir = first.vol_dir
    try:
        r = await asyncio.to_thread(subprocess.run, second.command(), capture_output=True,
                                    text=True, timeout=60, check=False)
    finally:
        other_bus.stop()
    assert r.returncode != 0, r.stderr
    assert f"pid {first.proc.pid}" in r.stderr and str(first.state_dir) in r.stderr, r.stderr
    assert fingerprint(first.state_dir, first.vol_dir) == before
    assert not second.run_dir.exists(), "the refused daemon created its run directory"
    assert first.running
    await client.ping()


def test_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    """The lock file is opened O_NOFOLLOW: a symbolic link there is refused, and its target
    is left alone."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (state / "ptcopyd.lock").symlink_to(target)
    r = subprocess.run([sys.executable, "-m", "ptcopy.daemon.main", "--bus", "unix:path=/nowhere",
                        "--state-dir", str(state), "--run-dir", str(tmp_path / "run"),
                        "--data-path", "none"],
                       cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0
    assert "symbolic link" in r.stderr, r.stderr
    assert target.read_text() == "keep me\n"
    assert not (state / "state.db").exists()


def test_lock_holder_is_named_from_proc_locks_before_it_wrote_its_pid(tmp_path: Path) -> None:
    """A holder that has not written its PID yet is still named (/proc/locks)."""
    lock = tmp_path / "ptcopyd.lock"
    lock.touch()
    holder = subprocess.Popen(["flock", "--exclusive", str(lock), "-c", "echo locked; sleep 60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        fd = os.open(lock, os.O_RDONLY)
        try:
            assert _lock_holder(fd) == str(holder.pid)
        finally:
            os.close(fd)
        with pytest.raises(AlreadyRunning, match=f"pid {holder.pid}"):
            lock_state_dir(str(tmp_path))
        assert lock.read_text() == "", "the refused daemon wrote into the holder's lock file"
    finally:
        holder.kill()
        holder.wait()


# ---- finding 8: any file name ------------------------------------------------------------------


def test_volume_ids_are_valid_for_any_name() -> None:
    """sd_bus_path_encode's escaping; /dev nodes keep their short ids; no two paths share an
    id."""
    assert volume_id("/dev/loop3") == "dev_loop3"
    assert volume_id("/dev/mapper/vg0") == "dev_mapper_vg0"
    assert bus_label_escape("") == "_"
    assert bus_label_escape("1a-é") == "_31a_2d_c3_a9"
    paths = ["/v/données.img", "/v/a b.img", "/v/a_b.img", "/v/a-b.img", "/v/a.b.img",
             "/v/a/b.img", "/dev/a/b", "/dev/a_b", "/dev/a_2fb", "/dev/2fb", "/x" * 300]
    ids = [volume_id(p) for p in paths]
    assert len(set(ids)) == len(ids), ids
    for i in ids:
        assert i and all(c.isascii() and (c.isalnum() or c == "_") for c in i), i


async def test_non_ascii_and_odd_file_names_survive_a_restart(ptcopyd: Ptcopyd,
                                                              client: Client) -> None:
    """A set on données.img (and names with spaces, dots and dashes) is created, exported
    with its Volume objects, and still served after a restart."""
    d = ptcopyd
    m = sparse(d.vol_dir / "données.img", 4 * MIB)
    s = sparse(d.vol_dir / "ombre du jour.img", 4 * MIB)
    bm = sparse(d.vol_dir / "bit-map.v1.img", 1 * MIB)
    set_path, _ = await client.create_set("donnees", "dependent", m, s, bm)

    async def check() -> None:
        objs = await client.objects()
        assert objs[set_path][ISET]["Name"] == "donnees"
        paths = {v[IVOLUME]["Path"] for v in objs.values() if IVOLUME in v}
        assert {m, s, bm} <= paths, paths
        assert f"{ROOT}/volumes/{volume_id(m)}" in objs

    await check()
    d.stop_and_check()
    d.start()
    await check()
    assert await client.get(set_path, ISET, "Status") == "normal"
    await client.set_call(set_path, "Disable")


async def test_an_id_no_object_path_can_carry_never_stops_the_daemon(ptcopyd: Ptcopyd,
                                                                      client: Client) -> None:
    """A state store row whose id is not a valid object path element (written by hand, or by
    a future version) is logged and skipped: the daemon starts and serves the other sets."""
    d = ptcopyd
    m, s, bm = d.set_volumes(4 * MIB)
    good, _ = await client.create_set("good", "dependent", m, s, bm)
    d.stop_and_check()
    store = Store(str(d.state_dir))
    try:
        store.put_set(SetRow(id="not a path élément", name="odd", kind="dependent",
                             master="/nonexistent/m", shadow="/nonexistent/s",
                             bitmap="/nonexistent/b", chunk_size=32768))
        store.put_group(GroupRow(id="grp-with-dashes", name="oddgroup"))
    finally:
        store.close()
    d.start()
    objs = await client.objects()
    assert objs[good][ISET]["Status"] == "normal"
    assert not [p for p in objs if "/groups/" in p or p.endswith("/sets/odd")]
    assert "cannot export" in d.log_text()
    await client.set_call(good, "Disable")


# ---- finding 9: the event loop never waits on a long operation -------------------------------


async def test_loop_answers_while_an_operation_holds_the_service_lock(
        daemon_factory: Callable[..., Ptcopyd], client: Client, connect: Connect,
        tmp_path: Path) -> None:
    """A CreateSet stuck writing to a frozen file system holds the service lock; a udev
    removal of another set's volume arrives meanwhile. The loop still answers (Properties.Get
    returns while CreateSet has not), and the removal is applied once the lock is free."""
    with ext4_mount(tmp_path) as mnt:
        d = daemon_factory("--file-volumes", str(mnt))
        assert d.proc is not None
        img = sparse(tmp_path / "shadow-a.img", 4 * MIB)
        shadow_dev = loopdev.attach(img)
        try:
            m, _s, bm = d.set_volumes(4 * MIB)
            set_a, _ = await client.create_set("on-loop", "dependent", m, shadow_dev, bm)
            vol = f"{ROOT}/volumes/{volume_id(shadow_dev)}"
            await client.wait_prop(vol, IVOLUME, "Unsuitable",
                                   lambda v: "not present" not in v, timeout=30)

            mb = sparse(mnt / "m.img", 4 * MIB)
            sb = sparse(mnt / "s.img", 4 * MIB)
            bb = sparse(mnt / "b.img", 1 * MIB)
            subprocess.run(["fsfreeze", "-f", str(mnt)], check=True)
            slow_client = await connect()
            create = asyncio.ensure_future(
                slow_client.create_set("frozen", "dependent", mb, sb, bb))
            try:
                # the bitmap is opened inside the service lock, then written (and blocked)
                await until(lambda: daemon_has_open(d.proc.pid, bb), "opening the bitmap")
                subprocess.run(["udevadm", "trigger", "--action=remove", shadow_dev],
                               check=True)
                # answered by the loop after it took the removal (the old loop waited for the
                # service lock right there, and answered nothing until the thaw)
                await client.wait_prop(vol, IVOLUME, "Unsuitable",
                                       lambda v: "not present" in v, timeout=20)
                assert await client.get(ROOT, MANAGER, "Version")
                assert not create.done(), "CreateSet ended while its file system was frozen"
            finally:
                subprocess.run(["fsfreeze", "-u", str(mnt)], check=True)
            set_b, _ = await create
            await client.wait_prop(set_a, ISET, "Flags", lambda v: "shadow-offline" in v,
                                   timeout=20)
            await client.set_call(set_b, "Disable")
            await client.set_call(set_a, "Disable")
        finally:
            loopdev.detach(shadow_dev)


def test_losetup_and_umount_have_timeouts(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung losetup or umount ends in a LoopError that says so, not in a hang."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("losetup", "umount"):
        p = bin_dir / tool
        p.write_text("#!/bin/sh\nexec sleep 600\n")
        p.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(loopdev, "TIMEOUT", 0.2)
    with pytest.raises(loopdev.LoopError, match=r"losetup .*no answer"):
        loopdev.attach(str(tmp_path / "any.img"))   # list_loops reads sysfs, no losetup
    with pytest.raises(loopdev.LoopError, match=r"umount --lazy .*no answer"):
        loopdev.lazy_unmount(str(tmp_path))


# ---- finding 12: Candidates ----------------------------------------------------------------------


async def test_candidates_tell_an_unprivileged_caller_nothing_about_hidden_paths(
        ptcopyd: Ptcopyd, client: Client, system_bus: PrivateBus, tmp_path: Path) -> None:
    """As uid 65534: a path under a directory it cannot search gets the same answer whether
    it exists or not; a path it can see is answered as before. Root's answers are unchanged."""
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    present = sparse(secret / "present.img", 4 * MIB)
    absent = str(secret / "absent.img")
    img = sparse(tmp_path / "visible.img", 4 * MIB)
    dev = loopdev.attach(img)
    try:
        got = as_nobody(system_bus, [candidates_call(present), candidates_call(absent),
                                     candidates_call(present, "bitmap"),
                                     candidates_call(absent, "bitmap"), candidates_call(dev)])
        hidden = [(g["ok"], g["error"], g["text"].replace(present, "P").replace(absent, "P"))
                  for g in got[:4]]
        assert hidden[0] == hidden[1] and hidden[2] == hidden[3], hidden
        assert hidden[0][1].endswith(".NotFound"), hidden
        assert got[4]["ok"], got[4]   # a device it can see: an answer (a list)
        # root still gets the precise answers
        r_present = await client.call(ROOT, MANAGER, "Candidates", "ssa{sv}",
                                      [present, "shadow", {}])
        r_absent = await client.call(ROOT, MANAGER, "Candidates", "ssa{sv}",
                                     [absent, "shadow", {}])
        assert r_present.error_name == "org.ptcopy.Imaging1.Error.InvalidArgument"
        assert r_absent.error_name == "org.ptcopy.Imaging1.Error.NotFound"
    finally:
        loopdev.detach(dev)


def test_bounded_cache_forgets_the_least_recently_used() -> None:
    c = BoundedCache(3)
    for i in range(10):
        c.put(f"/p{i}", (2, 1, i))
    assert list(c) == ["/p7", "/p8", "/p9"]
    assert c.get_fresh("/p7") == (True, (2, 1, 7))
    c.put("/p10", None)
    assert list(c) == ["/p9", "/p7", "/p10"]
    assert c.get_fresh("/p0") == (False, None)


# ---- finding 16: the smaller ones ---------------------------------------------------------------


async def test_served_devices_are_refused_as_volumes(ptcopyd: Ptcopyd, client: Client) -> None:
    """The loop devices ptcopy serves for one set cannot be another set's volumes."""
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    set_a, _ = await client.create_set("served", "dependent", m, s, bm)
    master_dev = await client.get(set_a, ISET, "MasterDevice")
    shadow_dev = await client.get(set_a, ISET, "ShadowDevice")
    assert master_dev.startswith("/dev/loop") and shadow_dev.startswith("/dev/loop")
    m2, s2, b2 = ptcopyd.set_volumes(4 * MIB)
    for args in ([master_dev, s2, b2], [m2, shadow_dev, b2]):
        text = await client.refused("InvalidArgument", ROOT, MANAGER, "CreateSet",
                                    "sssssa{sv}", ["re-entrant", "dependent", *args, {}])
        assert "ptcopy serves" in text or "served by ptcopy" in text, text
    assert set(await client.objects()) >= {set_a}
    (found,) = await client.ok(ROOT, MANAGER, "LookUp", "s", ["re-entrant"])
    assert found == "/"
    await client.set_call(set_a, "Disable")


async def test_client_leaving_costs_a_worker_only_when_it_holds_a_lock(
        daemon_factory: Callable[..., Ptcopyd], client: Client, connect: Connect) -> None:
    """Clients that hold nothing leave without work for the daemon; a lock holder's locks go
    with it."""
    d = daemon_factory("--log-level", "debug")
    m, s, bm = d.set_volumes(4 * MIB)
    set_path, _ = await client.create_set("leaving", "dependent", m, s, bm)
    idle = await connect()
    await idle.get(set_path, ISET, "Name")
    holder = await connect()
    await holder.set_call(set_path, "Lock")
    assert await client.get(set_path, ISET, "LockedBy") == holder.name
    idle_name, holder_name = idle.name, holder.name
    idle.disconnect()
    holder.disconnect()   # NameOwnerChanged comes in this order
    await client.wait_prop(set_path, ISET, "LockedBy", lambda v: v == "", timeout=20)
    log = d.log_text()
    assert f"client {holder_name} left holding locks" in log
    assert f"client {idle_name} left" not in log
    await client.set_call(set_path, "Disable")


async def test_job_wait_refuses_nan_infinite_and_negative_timeouts(ptcopyd: Ptcopyd,
                                                                   client: Client) -> None:
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    set_path, _ = await client.create_set("waits", "dependent", m, s, bm)
    job = await client.update(set_path)
    await client.wait_job(job)
    for bad in (math.nan, math.inf, -math.inf, -1.0, 1e300):
        text = await client.refused("InvalidArgument", job, IJOB, "Wait", "d", [bad])
        assert "timeout" in text, text
    assert (await client.ok(job, IJOB, "Wait", "d", [0.0])) == [True]
    await client.ping()
    await client.set_call(set_path, "Disable")


async def test_chunk_size_out_of_range_is_a_named_refusal(ptcopyd: Ptcopyd,
                                                          client: Client) -> None:
    """chunk_size must be 0 or a power of two from 4 KiB to 1 MiB, checked before anything
    is opened; the refusal names the rule."""
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    for bad in (1, 8, 15, 16, 4097, 2048, 2 << 20, 2**31):
        text = await client.refused("InvalidArgument", ROOT, MANAGER, "CreateSet",
                                    "sssssa{sv}", ["chunky", "dependent", m, s, bm,
                                                   {"chunk_size": u(bad)}])
        assert f"chunk_size {bad} is not valid" in text, text
        text = await client.refused("InvalidArgument", ROOT, MANAGER, "Candidates",
                                    "ssa{sv}", [m, "bitmap", {"chunk_size": u(bad)}])
        assert f"chunk_size {bad} is not valid" in text, text
        text = await client.refused("InvalidArgument", ROOT, MANAGER, "CreateOverflow",
                                    "sa{sv}", [s, {"chunk_size": u(bad)}])
        assert f"chunk_size {bad} is not valid" in text, text
    assert not [p for p in await client.objects() if "/sets/" in p or "/overflow/" in p]
    set_path, _ = await client.create_set("chunky", "dependent", m, s, bm,
                                          chunk_size=Variant("u", 65536))
    assert await client.get(set_path, ISET, "ChunkSize") == 65536
    await client.set_call(set_path, "Disable")


def test_polkit_action_says_it_is_root_equivalent_and_asks_an_administrator() -> None:
    root = ET.parse(REPO / "dbus" / "org.ptcopy.imaging.policy").getroot()
    (action,) = root.findall("action")
    assert action.get("id") == "org.ptcopy.imaging.manage"
    desc = action.findtext("description") or ""
    assert "root-equivalent" in desc and "overwrite any unmounted disk" in desc, desc
    defaults = action.find("defaults")
    assert defaults is not None
    for key in ("allow_any", "allow_inactive", "allow_active"):
        assert defaults.findtext(key) in ("auth_admin", "no"), key
    assert BUS_NAME == "org.ptcopy.Imaging1"
