"""Suspend and resume over D-Bus (userspace path): a throttled copy suspended mid-way keeps its
place and its job ends saying so; Suspend with nothing running is refused; a restart keeps it
suspended; Resume returns a job that finishes it, and the shadow is the point in time byte for
byte. Rename of a served set keeps its loop devices serving. Jobs' ProgressValid and
Cancelable."""

from __future__ import annotations

import asyncio
import mmap
import os
import random

import pytest

from tests.helpers.blockio import read_dev
from tests.helpers.client import Client, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import ISET, MIB
from tests.integration.daemon.scenario_common import devices

pytestmark = pytest.mark.root


async def test_suspend_keeps_the_place_survives_a_restart_and_resume_finishes(
        ptcopyd: Ptcopyd, client: Client) -> None:
    data = random.Random(15).randbytes(8 * MIB)
    m, s, bm = ptcopyd.set_volumes(8 * MIB, kind="independent", master_data=data)
    # 256 chunks, 2 every 50 ms: about 6 s unless suspended
    set_path, job = await client.create_set("susp", "independent", m, s, bm,
                                            copy_delay=u(50), copy_units=u(2))
    await client.refused("NoCopy", set_path, ISET, "Resume", "a{sv}", [{}])
    await client.wait_prop(set_path, ISET, "CopyPercent", lambda v: v > 0)
    await client.set_call(set_path, "Suspend")
    jp = await client.wait_job(job, 10)
    assert jp["Success"] is False and jp["Message"].startswith("suspended at "), jp
    assert jp["Cancelable"] is False and jp["ProgressValid"] is True, jp
    p = await client.props(set_path, ISET)
    assert {"copying", "suspended", "to-shadow"} <= set(p["Flags"]), p["Flags"]
    at = p["CopyPercent"]
    assert 0 < at < 100, p
    name, text = await client.fails(set_path, ISET, "Suspend", "a{sv}", [{}])
    assert "suspended already" in text, (name, text)
    await client.refused("Busy", set_path, ISET, "Update", "sa{sv}", ["shadow", {}])
    await client.refused("Busy", set_path, ISET, "Disable", "a{sv}", [{}])
    await asyncio.sleep(0.3)
    assert (await client.get(set_path, ISET, "CopyPercent")) == at   # nothing moves

    # the shadow device reads as the point in time while suspended (missing chunks redirect)
    _, sdev = await devices(client, set_path)
    assert read_dev(sdev, 0, 8 * MIB) == data

    # a restart keeps the copy suspended: it does not silently resume
    assert ptcopyd.stop() == 0
    ptcopyd.start()
    p = await client.props(set_path, ISET)
    assert {"copying", "suspended"} <= set(p["Flags"]), p["Flags"]
    await asyncio.sleep(0.3)
    assert "suspended" in await client.get(set_path, ISET, "Flags")

    await client.set_call(set_path, "SetCopyParameters", "uua{sv}", [0, 256, {}])
    (job2,) = await client.set_call(set_path, "Resume")
    assert job2 != "/"
    jp = await client.wait_job(job2, 60)
    assert jp["Success"] is True and jp["Operation"] == "resume-to-shadow", jp
    p = await client.props(set_path, ISET)
    assert not {"copying", "suspended", "incomplete"} & set(p["Flags"]), p["Flags"]
    _, sdev = await devices(client, set_path)
    assert read_dev(sdev, 0, 8 * MIB) == data
    with open(s, "rb") as f:
        assert f.read() == data
    await client.refused("NoCopy", set_path, ISET, "Suspend", "a{sv}", [{}])
    await client.assert_refresh_zero()


async def test_rename_a_served_set_keeps_its_devices_serving(
        ptcopyd: Ptcopyd, client: Client) -> None:
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    set_path, _ = await client.create_set("before", "dependent", m, s, bm)
    mdev, sdev = await devices(client, set_path)
    fd = os.open(mdev, os.O_RDWR | os.O_DIRECT)   # held open across the rename
    try:
        buf = bytearray(os.urandom(4096))
        await client.set_call(set_path, "Rename", "sa{sv}", ["after", {}])
        p = await client.props(set_path, ISET)
        assert p["Name"] == "after" and (p["MasterDevice"], p["ShadowDevice"]) == (mdev, sdev)
        m_buf = mmap.mmap(-1, 4096)
        m_buf.write(bytes(buf))
        assert os.pwritev(fd, [m_buf], 0) == 4096
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(m, "rb") as f:
        assert f.read(4096) == bytes(buf)
    run_dir = ptcopyd.run_dir / "volumes"
    assert (run_dir / "after" / "master").exists() and not (run_dir / "before").exists()
    # the old name is free again, and the set answers to the new one
    m2, s2, b2 = ptcopyd.set_volumes(4 * MIB)
    await client.create_set("before", "dependent", m2, s2, b2)
    await client.refused("Exists", set_path, ISET, "Rename", "sa{sv}", ["before", {}])
    assert ptcopyd.stop() == 0
    ptcopyd.start()
    assert (await client.get(set_path, ISET, "Name")) == "after"
    await client.assert_refresh_zero()
