"""GetManagedObjects and property reads come from cached snapshots and marshalled entries
(issue 13): they must follow every change. A set is changed in every way that shows in its
properties or in its volumes' (parameters, lock, a copy, export, writes through its master,
disable), and after each GetManagedObjects, GetAll and Get agree with the change;
InterfacesAdded and InterfacesRemoved arrive for the set and its volumes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers.blockio import write_dev
from tests.helpers.client import Client, plain
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import BUS_NAME, ISET, MIB, OM, ROOT

pytestmark = pytest.mark.root

VOLUME = "org.ptcopy.Imaging1.Volume"


async def _agree(client: Client, path: str, iface: str, prop: str) -> Any:
    """The property as GetManagedObjects, GetAll and Get show it (all three the same)."""
    objs = plain(await client.objects())
    via_all = plain(await client.props(path, iface))
    via_get = plain(await client.get(path, iface, prop))
    assert objs[path][iface][prop] == via_all[prop] == via_get, (prop, objs[path][iface],
                                                                via_all, via_get)
    return via_get


async def _volumes_of(client: Client, set_path: str) -> dict[str, dict[str, Any]]:
    objs = plain(await client.objects())
    return {p: ifs[VOLUME] for p, ifs in objs.items()
            if VOLUME in ifs and ifs[VOLUME]["UsedBy"] == set_path}


async def test_objects_follow_changes(daemon_factory: Callable[..., Ptcopyd],
                                      client: Client) -> None:
    ptcopyd = daemon_factory("--data-path", "none", "--volumes", "used")
    added = await client.signals(sender=BUS_NAME, interface=OM, member="InterfacesAdded")
    removed = await client.signals(sender=BUS_NAME, interface=OM, member="InterfacesRemoved")
    m, s, b = ptcopyd.set_volumes(4 * MIB)
    before = plain(await client.objects())
    set_path, job = await client.create_set("first", "independent", m, s, b)
    if job != "/":   # the first copy of 4 MiB may end before CreateSet returns
        await client.wait_job(job)
    sig = await added.wait_for(lambda x: x.body[0] == set_path)
    assert plain(sig.body[1])[ISET]["Name"] == "first"
    objs = plain(await client.objects())
    assert set(objs) - set(before) >= {set_path}
    assert objs[set_path][ISET]["Name"] == "first"
    vols = await _volumes_of(client, set_path)
    assert sorted(v["Path"] for v in vols.values()) == sorted([m, s, b]), vols
    for vpath, v in vols.items():
        assert "of set first" in v["Unsuitable"], v
        await added.wait_for(lambda x, p=vpath: x.body[0] == p)

    # unchanged: two replies in a row are the same
    assert plain(await client.objects()) == plain(await client.objects())

    await client.set_call(set_path, "SetCopyParameters", "uua{sv}", [7, 9, {}])
    assert await _agree(client, set_path, ISET, "CopyDelay") == 7
    assert await _agree(client, set_path, ISET, "CopyUnits") == 9

    await client.set_call(set_path, "Lock")
    assert await _agree(client, set_path, ISET, "LockedBy") == client.name
    await client.set_call(set_path, "Unlock")
    assert await _agree(client, set_path, ISET, "LockedBy") == ""

    job = await client.update(set_path, full=True)
    await client.wait_job(job)
    assert await _agree(client, set_path, ISET, "Job") == job
    assert "copying" not in await _agree(client, set_path, ISET, "Flags")

    await client.set_call(set_path, "Export")
    assert "exported" in await _agree(client, set_path, ISET, "Flags")

    # a second set next to it: the first one's objects stay as they were
    m2, s2, b2 = ptcopyd.set_volumes(4 * MIB)
    other, _ = await client.create_set("other", "dependent", m2, s2, b2)
    assert len(await _volumes_of(client, other)) == 3
    assert len(await _volumes_of(client, set_path)) == 3

    await client.set_call(set_path, "Disable")
    await removed.wait_for(lambda x: x.body[0] == set_path)
    for vpath in vols:
        await removed.wait_for(lambda x, p=vpath: x.body[0] == p)
    objs = plain(await client.objects())
    assert set_path not in objs and not set(vols) & set(objs), sorted(objs)
    assert other in objs and len(await _volumes_of(client, other)) == 3
    await client.assert_refresh_zero()
    await added.stop()
    await removed.stop()


async def test_objects_follow_writes(ptcopyd: Ptcopyd, client: Client) -> None:
    """Writes through the master are announced by nobody: the sweep finds them, and
    GetManagedObjects shows them within a few sweeps (Get within FRESH)."""
    m, s, b = ptcopyd.set_volumes(4 * MIB)
    set_path, _ = await client.create_set("written", "dependent", m, s, b)
    p = await client.props(set_path, ISET)
    assert p["DifferencePercent"] == 0.0 and p["LastModified"] == 0, p
    await asyncio.to_thread(write_dev, p["MasterDevice"], 0, b"\xa5" * 65536)
    end = time.monotonic() + 15
    while True:
        objs = plain(await client.objects())
        if objs[set_path][ISET]["DifferencePercent"] > 0:
            break
        assert time.monotonic() < end, objs[set_path][ISET]
        await asyncio.sleep(0.2)
    assert objs[set_path][ISET]["LastModified"] > 0
    assert (await client.get(set_path, ISET, "DifferencePercent")) > 0
    assert plain(await client.props(set_path, ISET))["DifferencePercent"] == \
        objs[set_path][ISET]["DifferencePercent"]
    await client.assert_refresh_zero()


async def test_objects_entry_layout(ptcopyd: Ptcopyd, client: Client) -> None:
    """The reply built from per-object entries unmarshals as the ordinary one: every object
    with every property, whatever the lengths of the entries (padding between them)."""
    paths = []
    for i in range(3):
        m, s, b = ptcopyd.set_volumes(4 * MIB)
        sp, _ = await client.create_set("n" + "x" * i, "dependent", m, s, b)
        paths.append(sp)
    objs = plain(await client.objects())
    for sp in paths:
        assert objs[sp][ISET] == plain(await client.props(sp, ISET))
    assert ROOT not in objs
