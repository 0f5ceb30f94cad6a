"""Scenarios over D-Bus: the patent's walkthrough, a group update at one point in time, overflow,
confirm for writing the master, a SIGKILL in the middle of a copy, locks, a restart that brings
everything back. Each ends with Refresh() == 0. Jobs and copies over time: test_daemon_jobs.py."""

from __future__ import annotations

import asyncio
import os
import random
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from dbus_fast import Variant

from tests.helpers.blockio import digest, read_dev, same_content, write_dev
from tests.helpers.client import Client, b, o, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import (
    BUS_NAME,
    IGROUP,
    IJOB,
    IOVERFLOW,
    ISET,
    MANAGER,
    MIB,
    OM,
    ROOT,
)
from tests.integration.daemon.scenario_common import CHUNK, devices

pytestmark = pytest.mark.root


async def test_patent_walkthrough(ptcopyd: Ptcopyd, client: Client) -> None:
    """Enable a dependent set on A/B with a bitmap, write, update to shadow: shadow == master."""
    om = await client.signals(sender=BUS_NAME, interface=OM)
    m, s, bm = ptcopyd.set_volumes(16 * MIB)
    set_path, job = await client.create_set("patent", "dependent", m, s, bm)
    assert job == "/", "a dependent set copies nothing at enable"
    p = await client.props(set_path, ISET)
    assert (p["Name"], p["Kind"], p["Master"], p["Shadow"], p["Bitmap"]) == \
        ("patent", "dependent", m, s, bm)
    assert p["Status"] == "normal" and p["Flags"] == [] and p["Size"] == 16 * MIB
    assert p["DifferencePercent"] == 0.0 and p["LastModified"] == 0
    assert (await client.ok(ROOT, MANAGER, "LookUp", "s", ["patent"])) == [set_path]
    assert (await client.ok(ROOT, MANAGER, "LookUp", "s", [s])) == [set_path]
    added = await om.wait_for(lambda x: x.member == "InterfacesAdded" and x.body[0] == set_path)
    assert added.path == ROOT
    mdev, sdev = await devices(client, set_path)

    rng = random.Random(4)
    writes = {off: rng.randbytes(64 * 1024) for off in (0, 5 * MIB + 4096, 16 * MIB - 65536)}
    for off, data in writes.items():
        write_dev(mdev, off, data)
    for off, data in writes.items():
        assert read_dev(mdev, off, len(data)) == data
        # the shadow still shows the point in time of the enable: zeros
        assert read_dev(sdev, off, len(data)) == bytes(len(data))
    p = await client.props(set_path, ISET)
    assert p["DifferencePercent"] > 0 and p["LastModified"] > 0

    job = await client.update(set_path)
    assert (await client.get(set_path, ISET, "Job")) == job
    jp = await client.wait_job(job)
    assert jp["Success"] is True and jp["Message"], jp
    assert jp["Operation"] == "update-to-shadow" and jp["Objects"] == [set_path], jp
    assert jp["Progress"] == 1.0 and jp["StartedByUID"] == 0 and jp["Cancelable"] is False
    assert same_content(mdev, sdev) == ""
    assert (await client.get(set_path, ISET, "DifferencePercent")) == 0.0

    # the shadow is now writable on its own; the master does not see it
    write_dev(sdev, 8 * MIB, b"\xaa" * 4096)
    assert read_dev(mdev, 8 * MIB, 4096) == bytes(4096)
    await client.assert_refresh_zero()

    # disable: the objects go, InterfacesRemoved from the root path, the volumes keep the data
    await client.set_call(set_path, "Disable")
    removed = await om.wait_for(lambda x: x.member == "InterfacesRemoved"
                                and x.body[0] == set_path)
    assert removed.path == ROOT
    assert set_path not in await client.objects()
    assert not os.path.exists(os.path.join(ptcopyd.run_dir, "volumes", "patent"))
    with open(m, "rb") as f:
        for off, data in writes.items():
            f.seek(off)
            assert f.read(len(data)) == data
    await client.assert_refresh_zero()


class SeqWriter(threading.Thread):
    """Writes 1, 2, 3, ... to block 1 of every master in turn (m1=n, m2=n, m3=n, then n+1):
    at any one instant the masters hold (n, n, n), (n, n-1, n-1) or (n, n, n-1)."""

    def __init__(self, devs: list[str]) -> None:
        super().__init__(daemon=True)
        self.devs = devs
        self.stop = threading.Event()
        self.n = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        import mmap
        fds = [os.open(d, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC) for d in self.devs]
        buf = mmap.mmap(-1, 4096)
        try:
            while not self.stop.is_set():
                self.n += 1
                buf.seek(0)
                buf.write(struct.pack("<Q", self.n))
                for fd in fds:
                    assert os.pwrite(fd, buf, 4096) == 4096
        except BaseException as e:
            self.error = e
        finally:
            for fd in fds:
                os.close(fd)
            buf.close()


def seq_of(dev: str) -> int:
    return int(struct.unpack("<Q", read_dev(dev, 4096, 4096)[:8])[0])


async def test_group_update_one_point_in_time(ptcopyd: Ptcopyd, client: Client) -> None:
    sets = []
    for i in range(3):
        m, s, bm = ptcopyd.set_volumes(4 * MIB)
        set_path, _ = await client.create_set(f"member{i}", "dependent", m, s, bm)
        sets.append(set_path)
    group = await client.create_group("trio", sets)
    gp = await client.props(group, IGROUP)
    assert gp["Name"] == "trio" and sorted(gp["Sets"]) == sorted(sets) and gp["Job"] == "/"
    for sp in sets:
        assert (await client.get(sp, ISET, "Group")) == group
    devs = [await devices(client, sp) for sp in sets]

    marker_a, marker_b = b"A" * 4096, b"B" * 4096
    for mdev, _ in devs:
        write_dev(mdev, 0, marker_a)
    job = await client.update(group, iface=IGROUP)
    jp = await client.wait_job(job)
    assert jp["Success"] is True, jp
    assert set(jp["Objects"]) == {group, *sets}
    assert (await client.get(group, IGROUP, "Job")) == job
    for _, sdev in devs:
        assert read_dev(sdev, 0, 4096) == marker_a
    for mdev, _ in devs:
        write_dev(mdev, 0, marker_b)
    for mdev, sdev in devs:
        assert read_dev(sdev, 0, 4096) == marker_a, "a write after the update reached a shadow"
        assert read_dev(mdev, 0, 4096) == marker_b

    # one point in time for all three while a writer keeps going
    writer = SeqWriter([mdev for mdev, _ in devs])
    writer.start()
    try:
        while writer.n < 30 and writer.is_alive():
            await asyncio.sleep(0.01)
        job = await client.update(group, iface=IGROUP)
        await asyncio.sleep(0.05)
    finally:
        writer.stop.set()
        writer.join(10)
    assert writer.error is None, writer.error
    jp = await client.wait_job(job)
    assert jp["Success"] is True, jp
    seqs = [seq_of(sdev) for _, sdev in devs]
    assert seqs[0] >= seqs[1] >= seqs[2] >= seqs[0] - 1 >= 0, \
        f"the shadows are not one point in time: {seqs} (writer reached {writer.n})"
    assert seqs[0] < writer.n, "the writer never wrote after the update"
    await client.assert_refresh_zero()


async def test_overflow(ptcopyd: Ptcopyd, client: Client) -> None:
    ov_file = ptcopyd.volume(4 * MIB, "overflow.img")
    (ov,) = await client.ok(ROOT, MANAGER, "CreateOverflow", "sa{sv}", [ov_file, {}])
    op = await client.props(ov, IOVERFLOW)
    assert op["Path"] == ov_file and op["Sets"] == [] and op["ChunksUsed"] == 0
    assert op["ChunksTotal"] > 0 and op["CountersValid"] is True
    assert (await client.ok(ROOT, MANAGER, "LookUp", "s", [ov_file])) == [ov]

    m, s, bm = ptcopyd.set_volumes(16 * MIB, 1 * MIB)
    set_path, _ = await client.create_set("compact", "dependent", m, s, bm, overflow=o(ov))
    p = await client.props(set_path, ISET)
    assert "compact" in p["Flags"] and p["Overflow"] == ov, p
    assert 0 < p["ShadowChunksTotal"] <= MIB // CHUNK
    assert (await client.get(ov, IOVERFLOW, "Sets")) == [set_path]
    mdev, sdev = await devices(client, set_path)

    # 3 MiB of new master data: its point-in-time copies fill the 1 MiB shadow, then spill
    rng = random.Random(7)
    data = rng.randbytes(3 * MIB)
    write_dev(mdev, 2 * MIB, data)
    used = await client.wait_prop(ov, IOVERFLOW, "ChunksUsed", lambda v: v > 0)
    assert used >= (2 * MIB) // CHUNK - 1, used
    p = await client.props(set_path, ISET)
    assert "spilled" in p["Flags"], p["Flags"]
    assert p["ShadowChunksUsed"] >= 3 * MIB // CHUNK, p
    assert read_dev(sdev, 2 * MIB, 3 * MIB) == bytes(3 * MIB), "the shadow lost its point in time"

    text = await client.refused("Dependency", set_path, ISET, "DetachOverflow", "a{sv}", [{}])
    assert text
    await client.refused("Dependency", ov, IOVERFLOW, "Delete", "a{sv}", [{}])
    assert (await client.get(set_path, ISET, "Overflow")) == ov
    await client.assert_refresh_zero()

    # a new point in time frees the spilled chunks; then detach and delete work
    await client.wait_job(await client.update(set_path))
    assert same_content(mdev, sdev) == ""
    await client.wait_prop(ov, IOVERFLOW, "ChunksUsed", lambda v: v == 0)
    await client.set_call(set_path, "DetachOverflow")
    assert (await client.get(set_path, ISET, "Overflow")) == "/"
    assert (await client.get(ov, IOVERFLOW, "Sets")) == []
    await client.ok(ov, IOVERFLOW, "Delete", "a{sv}", [{}])
    assert ov not in await client.objects()
    await client.assert_refresh_zero()


async def test_writing_the_master_needs_confirm(ptcopyd: Ptcopyd, client: Client) -> None:
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    set_path, _ = await client.create_set("restore", "dependent", m, s, bm)
    group = await client.create_group("rgroup", [set_path])
    mdev, sdev = await devices(client, set_path)
    write_dev(sdev, 0, b"S" * 8192)
    for obj, iface in ((set_path, ISET), (group, IGROUP)):
        for member in ("Copy", "Update"):
            for opts in ({}, {"confirm": b(False)}):
                text = await client.refused("NotConfirmed", obj, iface, member, "sa{sv}",
                                            ["master", opts])
                assert "confirm" in text
        await client.refused("InvalidArgument", obj, iface, "Update", "sa{sv}",
                             ["master", {"confirm": Variant("s", "yes")}])
    assert read_dev(mdev, 0, 8192) == bytes(8192), "a refused restore wrote the master"
    assert (await client.get(set_path, ISET, "Job")) == "/"
    await client.assert_refresh_zero()

    job = await client.update(set_path, "master", confirm=b(True))
    jp = await client.wait_job(job)
    assert jp["Success"] is True and jp["Operation"] == "update-to-master", jp
    assert read_dev(mdev, 0, 8192) == b"S" * 8192
    assert same_content(mdev, sdev) == ""
    await client.assert_refresh_zero()


async def test_sigkill_during_a_copy_then_restart(ptcopyd: Ptcopyd, client: Client) -> None:
    size = 64 * MIB
    rng = random.Random(11)
    m, s, bm = ptcopyd.set_volumes(size, kind="independent")
    with open(m, "r+b") as f:                 # data in every 8 MiB stretch, holes between
        for off in range(0, size, 4 * MIB):
            f.seek(off)
            f.write(rng.randbytes(256 * 1024))
    with open(m, "rb") as f:
        data = f.read()
    # 2048 chunks, 32 every 50 ms: about 3.5 s
    set_path, _ = await client.create_set("crashy", "independent", m, s, bm,
                                            copy_delay=u(50), copy_units=u(32))
    await client.wait_prop(set_path, ISET, "CopyPercent", lambda v: v >= 10)
    before = await client.props(set_path, ISET)
    assert before["CopyPercent"] < 80, "the copy ended before the kill; throttle harder"
    ptcopyd.kill()
    ptcopyd.start()

    objs = await client.objects()
    assert set_path in objs, f"the set did not come back at {set_path}: {sorted(objs)}"
    after = await client.props(set_path, ISET)
    for key in ("Name", "Kind", "Master", "Shadow", "Bitmap", "ChunkSize", "Size", "CopyDelay",
                "CopyUnits"):
        assert after[key] == before[key], (key, before[key], after[key])
    # the interrupted copy resumes, with a job of its own
    assert "copying" in after["Flags"] or after["Job"] != "/", after
    job2 = after["Job"]
    assert job2 != "/" and job2 in objs and IJOB in objs[job2], (job2, sorted(objs))
    assert objs[job2][IJOB]["Objects"] == [set_path]
    await client.set_call(set_path, "SetCopyParameters", "uua{sv}", [0, 256, {}])
    jp = await client.wait_job(job2)
    assert jp["Success"] is True, jp
    mdev, sdev = await devices(client, set_path)
    assert digest(sdev) == digest(mdev)
    with open(s, "rb") as f:
        assert f.read() == data, "the shadow volume does not hold the master's image"
    await client.assert_refresh_zero()


async def test_lock_released_when_the_client_leaves(
        ptcopyd: Ptcopyd, client: Client,
        connect: Callable[[], Coroutine[Any, Any, Client]]) -> None:
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    set_path, _ = await client.create_set("locked", "dependent", m, s, bm)
    holder = await connect()
    await holder.set_call(set_path, "Lock")
    assert (await client.get(set_path, ISET, "LockedBy")) == holder.name
    await client.refused("InUse", set_path, ISET, "Update", "sa{sv}", ["shadow", {}])
    await client.refused("InUse", set_path, ISET, "Copy", "sa{sv}", ["shadow", {}])
    await client.refused("InUse", set_path, ISET, "Unlock", "a{sv}", [{}])
    assert (await client.get(set_path, ISET, "LockedBy")) == holder.name
    # the holder itself may copy
    await holder.wait_job(await holder.update(set_path))
    holder.disconnect()
    await client.wait_prop(set_path, ISET, "LockedBy", lambda v: v == "", timeout=10)
    await client.wait_job(await client.update(set_path))
    await client.set_call(set_path, "Lock")
    await client.set_call(set_path, "Unlock")
    assert (await client.get(set_path, ISET, "LockedBy")) == ""
    await client.assert_refresh_zero()


async def test_restart_brings_everything_back(ptcopyd: Ptcopyd, client: Client) -> None:
    """SIGTERM and start again: sets (compact with spilled chunks, grouped, throttled), groups,
    overflow volumes and copy parameters come back at the same paths; a set whose bitmap
    volume went missing meanwhile comes back as 'error' and Refresh() brings it back once the
    volume is there again."""
    ov_file = ptcopyd.volume(4 * MIB, "ov.img")
    (ov,) = await client.ok(ROOT, MANAGER, "CreateOverflow", "sa{sv}", [ov_file, {}])
    m, s, bm = ptcopyd.set_volumes(16 * MIB, 1 * MIB)
    compact, _ = await client.create_set("compact", "dependent", m, s, bm, overflow=o(ov))
    mdev, sdev = await devices(client, compact)
    write_dev(mdev, 0, random.Random(5).randbytes(3 * MIB))
    await client.wait_prop(ov, IOVERFLOW, "ChunksUsed", lambda v: v > 0)
    members = []
    for i in range(2):
        m, s, bm = ptcopyd.set_volumes(4 * MIB)
        members.append((await client.create_set(f"member{i}", "dependent", m, s, bm))[0])
    await client.set_call(members[0], "SetCopyParameters", "uua{sv}", [17, 33, {}])
    group = await client.create_group("grp", members)
    m, s, lost_bitmap = ptcopyd.set_volumes(4 * MIB)
    lost, _ = await client.create_set("lost", "dependent", m, s, lost_bitmap)
    m, s, _ = ptcopyd.set_volumes(4 * MIB)
    in_memory, _ = await client.create_set("inmem", "dependent", m, s, "",
                                           bitmap_in_memory=b(True))
    keys = ("Name", "Kind", "Master", "Shadow", "Bitmap", "Overflow", "Group", "ChunkSize",
            "Size", "CopyDelay", "CopyUnits", "ShadowChunksTotal", "ShadowChunksUsed",
            "DifferencePercent", "Status", "Flags")
    # (GetAll, not GetManagedObjects: that one lags up to 2 s behind I/O counters, see
    # /tmp/ptcopy-bugs/daemon.md)
    before = {p: {ISET: await client.props(p, ISET)} for p in (compact, *members)}
    before[ov] = {IOVERFLOW: await client.props(ov, IOVERFLOW)}
    await client.assert_refresh_zero()

    await asyncio.to_thread(ptcopyd.stop_and_check)
    os.rename(lost_bitmap, lost_bitmap + ".away")
    ptcopyd.start()

    after = await client.objects()
    for p in (compact, *members):
        assert p in after, f"{p} did not come back"
        want = {k: before[p][ISET][k] for k in keys}
        got = {k: after[p][ISET][k] for k in keys}
        assert got == want, p
    assert after[members[0]][ISET]["CopyDelay"] == 17
    assert after[group][IGROUP]["Name"] == "grp"
    assert sorted(after[group][IGROUP]["Sets"]) == sorted(members)
    for k in ("Path", "Sets", "ChunksTotal", "ChunksUsed"):
        assert after[ov][IOVERFLOW][k] == before[ov][IOVERFLOW][k], k
    assert after[ov][IOVERFLOW]["CountersValid"] is True
    # the point in time of the compact set survived (its chunks live on the shadow + overflow)
    mdev, sdev = await devices(client, compact)
    assert read_dev(sdev, 0, 3 * MIB) == bytes(3 * MIB)
    # the sets that could not come back are there, marked, and refuse work with a named error
    assert after[lost][ISET]["Status"] == "error"
    assert after[in_memory][ISET]["Status"] == "error"
    await client.refused("Offline", lost, ISET, "Update", "sa{sv}", ["shadow", {}])
    await client.assert_refresh_zero()

    os.rename(lost_bitmap + ".away", lost_bitmap)
    assert await client.refresh() >= 1, "Refresh() did not bring the set back"
    assert (await client.get(lost, ISET, "Status")) == "normal"
    await client.wait_job(await client.update(lost))
    await client.set_call(in_memory, "Disable")
    assert in_memory not in await client.objects()
    await client.assert_refresh_zero()
