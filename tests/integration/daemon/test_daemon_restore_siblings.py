"""Restore from one of several shadows through D-Bus (issue 15), and SIGKILL of ptcopyd in the
middle of it: the restarted daemon opens every set of the master before the restore moves on
(the engine holds it at open), so no other set loses its point in time, and the restore ends."""

from __future__ import annotations

import random

import pytest
from dbus_fast import Variant

from ptcopy.engine import Kind, bitmap_size
from tests.helpers.blockio import read_dev, write_dev
from tests.helpers.client import Client, o, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import ISET, MANAGER, MIB, ROOT

pytestmark = pytest.mark.root

CHUNK = 32 * 1024
SIZE = 4 * MIB


async def trio(ptcopyd: Ptcopyd, client: Client, rng: random.Random) -> dict[str, str]:
    """A master with a dependent, an independent and a compact dependent shadow (overflow)."""
    m = ptcopyd.volume(SIZE, data=rng.randbytes(SIZE))
    (ov,) = await client.ok(ROOT, MANAGER, "CreateOverflow", "sa{sv}",
                            [ptcopyd.volume(SIZE + MIB), {"chunk_size": u(CHUNK)}])
    paths = {}
    for k, kind, ssize in (("dep", Kind.DEPENDENT, SIZE), ("ind", Kind.INDEPENDENT, SIZE),
                           ("cmp", Kind.DEPENDENT, SIZE // 8)):
        opts: dict[str, Variant] = {"chunk_size": u(CHUNK)}
        if k == "cmp":
            opts["overflow"] = o(ov)
        s, b = ptcopyd.volume(ssize), ptcopyd.volume(bitmap_size(SIZE, ssize, CHUNK, kind))
        paths[k], job = await client.create_set(f"sib-{k}", kind.name.lower(), m, s, b, **opts)
        if job != "/":
            assert (await client.wait_job(job))["Success"] is True
    return paths


async def devices(client: Client, paths: dict[str, str]) -> dict[str, tuple[str, str]]:
    out = {}
    for k, p in paths.items():
        props = await client.props(p, ISET)
        out[k] = (props["MasterDevice"], props["ShadowDevice"])
    return out


async def test_sigkill_during_a_restore_with_siblings(ptcopyd: Ptcopyd, client: Client) -> None:
    rng = random.Random(15)
    paths = await trio(ptcopyd, client, rng)
    dev = await devices(client, paths)
    # every point in time differs from the master and from the others
    write_dev(dev["dep"][0], 2 * CHUNK, rng.randbytes(4 * CHUNK))
    for i, k in enumerate(paths):
        write_dev(dev[k][1], (10 * i + 1) * CHUNK, rng.randbytes(3 * CHUNK))
    write_dev(dev["dep"][1], SIZE // 2, rng.randbytes(SIZE // 2))   # a restore that lasts
    pits = {k: read_dev(dev[k][1], 0, SIZE) for k in paths}

    await client.set_call(paths["dep"], "SetCopyParameters", "uua{sv}", [200, 4, {}])
    job = await client.update(paths["dep"], "master", confirm=Variant("b", True))
    assert job != "/"
    assert read_dev(dev["dep"][0], 0, SIZE) == pits["dep"], "the restore is in force at once"
    ptcopyd.kill()
    ptcopyd.start()

    dev = await devices(client, paths)
    await client.set_call(paths["dep"], "SetCopyParameters", "uua{sv}", [0, 256, {}])
    await client.wait_prop(paths["dep"], ISET, "Flags", lambda f: "copying" not in f)
    assert "resuming its interrupted restore" in ptcopyd.log_text()
    master = read_dev(dev["dep"][0], 0, SIZE)
    assert master == pits["dep"], "the restore did not end with the master restored"
    for k in paths:
        assert read_dev(dev[k][1], 0, SIZE) == pits[k], f"set {k} lost its point in time"
        flags = await client.get(paths[k], ISET, "Flags")
        assert not {"incomplete", "out-of-space", "copying"} & set(flags), (k, flags)
    job = await client.update(paths["ind"], "shadow")
    if job != "/":
        assert (await client.wait_job(job))["Success"] is True
    assert read_dev(dev["ind"][1], 0, SIZE) == master
    await client.assert_refresh_zero()
