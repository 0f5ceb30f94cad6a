"""Shadows that move between hosts, through D-Bus with two ptcopyd (host A and host B, each
on its own bus with its own state and run directories, sharing the shadow's backing file):
export on A, ImportShadow on B, writes through B's device, a restart of B, release (Disable)
on B, Join and an update on A, then the shadow equals the master byte for byte."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable

from dbus_fast import Variant

from ptcopy.engine import Kind, bitmap_size
from tests.helpers.client import Client
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import ISET, MANAGER, MIB, ROOT

SIZE = 4 * MIB
C = 32 * 1024


def sha(path: str, size: int = SIZE) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(size)).hexdigest()


def write_device(device: str, offset: int, data: bytes) -> None:
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


async def exported_set(a: Ptcopyd, client: Client, name: str) -> tuple[str, str, str, str]:
    """An independent set on A, copied whole and exported: (object, master, shadow, bitmap)."""
    m, s, b = a.set_volumes(SIZE, kind="independent",
                            master_data=random.Random(name).randbytes(SIZE))
    path, job = await client.create_set(name, "independent", m, s, b)
    if job != "/":
        await client.wait_job(job)
    await client.set_call(path, "Export")
    await client.set_call(path, "Export")   # idempotent
    return path, m, s, b


async def test_export_import_release_join_walkthrough(
        ptcopyd: Ptcopyd, client: Client,
        second_daemon_factory: Callable[..., Ptcopyd]) -> None:
    a = ptcopyd
    b_host = second_daemon_factory("--file-volumes", str(a.vol_dir))
    b = await Client.connect(b_host.bus.address)
    try:
        set_a, m, s, _ = await exported_set(a, client, "moving")
        assert "exported" in await client.get(set_a, ISET, "Flags")
        assert await client.get(set_a, ISET, "ShadowDevice") == ""   # A no longer serves it
        await client.refused("Exported", set_a, ISET, "Update", "sa{sv}", ["shadow", {}])
        # A's master goes on changing while B has the shadow
        write_device(await client.get(set_a, ISET, "MasterDevice"), 5 * C, b"A" * 4096)

        # the shared storage both hosts see holds the new bitmap too
        ib = a.volume(bitmap_size(SIZE, SIZE, 0, Kind.INDEPENDENT), "imported.bm")
        (imp,) = await b.ok(ROOT, MANAGER, "ImportShadow", "ssa{sv}",
                            [s, ib, {"name": Variant("s", "imp")}])
        p = await b.props(imp, ISET)
        assert p["Kind"] == "imported" and "imported" in p["Flags"]
        assert p["Master"] == "" and p["MasterDevice"] == ""
        assert p["ShadowDevice"].startswith("/dev/loop") and p["Shadow"] == s
        write_device(p["ShadowDevice"], 17 * C + 100, b"B" * 5000)
        await b.refused("WrongType", imp, ISET, "Update", "sa{sv}", ["shadow", {}])
        # a bitmap B still writes is not joined
        await client.refused("InUse", set_a, ISET, "Join", "sa{sv}", [ib, {}])

        # B restarts while the shadow is imported: it comes back with its bitmap
        b_host.stop_and_check()
        b_host.start()
        b.disconnect()
        b = await Client.connect(b_host.bus.address)
        p = await b.props(imp, ISET)
        assert "imported" in p["Flags"] and p["ShadowDevice"].startswith("/dev/loop")
        assert p["ShadowChunksUsed"] >= 1   # chunk 17's bit survived the restart
        write_device(p["ShadowDevice"], 60 * C, b"b" * C)

        await b.set_call(imp, "Disable")   # the release
        assert imp not in await b.objects()
        (again,) = await b.ok(ROOT, MANAGER, "LookUp", "s", ["imp"])
        assert again == "/"

        (job,) = await client.ok(set_a, ISET, "Join", "sa{sv}", [ib, {}])
        assert job == "/"
        assert "exported" not in await client.get(set_a, ISET, "Flags")
        assert (await client.get(set_a, ISET, "ShadowDevice")).startswith("/dev/loop")
        assert sha(s) != sha(m)
        await client.wait_job(await client.update(set_a))
        assert sha(s) == sha(m)
        await client.assert_refresh_zero()
        await b.assert_refresh_zero()
    finally:
        b.disconnect()


async def test_import_and_export_refusals(ptcopyd: Ptcopyd, client: Client,
                                          second_daemon_factory: Callable[..., Ptcopyd]) -> None:
    a = ptcopyd
    b_host = second_daemon_factory("--file-volumes", str(a.vol_dir))
    b = await Client.connect(b_host.bus.address)
    try:
        bm = bitmap_size(SIZE, SIZE, 0, Kind.INDEPENDENT)
        dm, ds, db = a.set_volumes(SIZE)
        dep, _ = await client.create_set("dep", "dependent", dm, ds, db)
        await client.refused("WrongType", dep, ISET, "Export", "a{sv}", [{}])

        # B: a volume already in a set there, a bitmap too small, a bad path: nothing created
        bm_, bs, bb = b_host.set_volumes(SIZE)
        await b.create_set("local", "dependent", bm_, bs, bb)
        before = set(await b.objects())
        ib = a.volume(bm, "ib")
        await b.refused("InUse", ROOT, MANAGER, "ImportShadow", "ssa{sv}", [bs, ib, {}])
        small = b_host.volume(4096, "small")
        await b.refused("TooSmall", ROOT, MANAGER, "ImportShadow", "ssa{sv}",
                        [a.volume(SIZE), small, {}])
        reply = await b.call(ROOT, MANAGER, "ImportShadow", "ssa{sv}",
                             [a.volume(SIZE), str(b_host.base / "nope" / "ib"), {}])
        assert reply.error_name is not None and "nope" in str(reply.body)
        reply = await b.call(ROOT, MANAGER, "ImportShadow", "ssa{sv}",
                             ["/etc/passwd", ib, {}])
        assert reply.error_name is not None
        assert set(await b.objects()) == before
        with open(ib, "rb") as f:
            assert f.read(4096) == bytes(4096)   # nothing was written to the refused bitmap

        # a join of a bitmap of another chunk size is refused, naming both
        set_a, _, s, _ = await exported_set(a, client, "exp")
        (imp,) = await b.ok(ROOT, MANAGER, "ImportShadow", "ssa{sv}",
                            [s, ib, {"chunk_size": Variant("u", 4 * C)}])
        await b.set_call(imp, "Disable")
        reply = await client.call(set_a, ISET, "Join", "sa{sv}", [ib, {}])
        assert reply.error_name is not None and reply.error_name.endswith("SizeMismatch")
        assert "chunks of" in str(reply.body)
        assert "exported" in await client.get(set_a, ISET, "Flags")
        # a released bitmap not joined yet is not overwritten by a new import
        await b.refused("InUse", ROOT, MANAGER, "ImportShadow", "ssa{sv}", [s, ib, {}])
        # the export survives a restart of A: the shadow is still not served there
        a.stop_and_check()
        a.start()
        assert "exported" in await client.get(set_a, ISET, "Flags")
        assert await client.get(set_a, ISET, "ShadowDevice") == ""
        assert (await client.get(set_a, ISET, "MasterDevice")).startswith("/dev/loop")
        await client.refused("Exported", set_a, ISET, "Update", "sa{sv}", ["shadow", {}])
        await client.assert_refresh_zero()
        await b.assert_refresh_zero()
    finally:
        b.disconnect()
