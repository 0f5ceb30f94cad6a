"""Requests the daemon must refuse, each with a named error and a message a person can act on,
leaving nothing half-created: files outside --file-volumes, symlinks out of it, nonexistent
paths, directories, the same volume twice, a volume already in use, a mounted block device, bad
names, unknown or mistyped options, bad chunk sizes, volumes too small."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from dbus_fast import Variant

from ptcopy.datapath import blockdev as loopdev
from ptcopy.engine import Kind, bitmap_size
from tests.helpers.client import Client, b, o, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import ISET, IVOLUME, MANAGER, MIB, ROOT

pytestmark = pytest.mark.root


async def create(client: Client, name: str, m: str, s: str, bm: str, kind: str = "dependent",
                 **opts: Variant) -> tuple[str, str]:
    """(error name, message) of a CreateSet that must fail."""
    return await client.fails(ROOT, MANAGER, "CreateSet", "sssssa{sv}",
                              [name, kind, m, s, bm, opts])


async def nothing_created(client: Client) -> None:
    objs = await client.objects()
    ours = [p for p in objs if p != ROOT]
    assert not ours, f"a refused request left objects behind: {ours}"
    await client.assert_refresh_zero()


async def test_file_volumes_outside_the_allowed_directories(ptcopyd: Ptcopyd, client: Client,
                                                            tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    bad = outside / "bad.img"
    with bad.open("wb") as f:
        f.truncate(4 * MIB)
    link = ptcopyd.vol_dir / "link.img"          # inside the directory, pointing out of it
    link.symlink_to(bad)
    dotdot = str(ptcopyd.vol_dir / ".." / ".." / "outside" / "bad.img")
    for path in (str(bad), str(link), dotdot):
        for args in ((path, s, bm), (m, path, bm), (m, s, path)):
            name, text = await create(client, "x", *args)
            assert name == "org.ptcopy.Imaging1.Error.NotAuthorized", (args, name, text)
            assert path in text and str(ptcopyd.vol_dir) in text, text
        name, text = await client.fails(ROOT, MANAGER, "CreateOverflow", "sa{sv}", [path, {}])
        assert name == "org.ptcopy.Imaging1.Error.NotAuthorized", (path, name, text)
    assert bad.read_bytes() == bytes(4 * MIB), "a refused file volume was written"
    await nothing_created(client)


async def test_bad_paths(ptcopyd: Ptcopyd, client: Client) -> None:
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    missing = str(ptcopyd.vol_dir / "missing.img")
    cases = {
        "NotFound": [(missing, s, bm), (m, missing, bm), (m, s, missing)],
        "InvalidArgument": [("", s, bm), ("relative.img", s, bm), (m, s, str(ptcopyd.vol_dir)),
                            ("/" + "x" * 5000, s, bm), (m, s, "")],
        "SameVolume": [(m, m, bm), (m, s, m), (m, s, s)],
    }
    for error, argsets in cases.items():
        for args in argsets:
            name, text = await create(client, "x", *args)
            assert name == "org.ptcopy.Imaging1.Error." + error, (args, name, text)
            assert text
    name, text = await client.fails(ROOT, MANAGER, "CreateOverflow", "sa{sv}", [missing, {}])
    assert name == "org.ptcopy.Imaging1.Error.NotFound", (name, text)
    await nothing_created(client)


async def test_bad_names_options_and_sizes(ptcopyd: Ptcopyd, client: Client) -> None:
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    for bad in ("", ".hidden", "a" * 65, "a/b", "spaced name", "ü", "-" * 3 + "\n"):
        name, text = await create(client, bad, m, s, bm)
        assert name == "org.ptcopy.Imaging1.Error.InvalidArgument", (bad, name, text)
        assert "name" in text
    invalid = [
        ("x", "sideways", {}),                                    # kind
        ("x", "dependent", {"bogus": u(1)}),                      # unknown key
        ("x", "dependent", {"chunk_size": Variant("s", "64k")}),  # wrong type
        ("x", "dependent", {"chunk_size": Variant("t", 65536)}),  # wrong integer type
        ("x", "dependent", {"chunk_size": u(1000)}),              # not a power of two
        ("x", "dependent", {"chunk_size": u(2 * MIB)}),           # too big
        ("x", "dependent", {"group": o(ROOT + "/sets/abc")}),     # not a group path
        ("x", "dependent", {"overflow": o("/")}),
        ("x", "dependent", {"bitmap_in_memory": b(True)}),        # and a bitmap volume
    ]
    for setname, kind, opts in invalid:
        name, text = await create(client, setname, m, s, bm, kind, **opts)
        assert name == "org.ptcopy.Imaging1.Error.InvalidArgument", (kind, opts, name, text)
    name, text = await create(client, "x", m, s, bm, group=o(ROOT + "/groups/nope"))
    assert name == "org.ptcopy.Imaging1.Error.NotFound", (name, text)
    name, text = await create(client, "x", m, s, bm, overflow=o(ROOT + "/overflow/nope"))
    assert name == "org.ptcopy.Imaging1.Error.NotFound", (name, text)
    # too small: the bitmap, an independent shadow
    small_b = ptcopyd.volume(512)
    name, text = await create(client, "x", m, s, small_b)
    assert name == "org.ptcopy.Imaging1.Error.TooSmall", (name, text)
    small_s = ptcopyd.volume(1 * MIB)
    ib = ptcopyd.volume(bitmap_size(4 * MIB, 4 * MIB, 0, Kind.INDEPENDENT))
    name, text = await create(client, "x", m, small_s, ib, "independent")
    assert name == "org.ptcopy.Imaging1.Error.TooSmall", (name, text)
    await nothing_created(client)
    # the same volumes still make a set: nothing of the refusals stuck to them
    set_path, _ = await client.create_set("fine", "dependent", m, s, bm)
    name, _ = await create(client, "fine", *ptcopyd.set_volumes(4 * MIB))
    assert name == "org.ptcopy.Imaging1.Error.Exists"
    await client.assert_refresh_zero()
    await client.set_call(set_path, "Disable")
    await nothing_created(client)


async def test_volumes_already_in_use(ptcopyd: Ptcopyd, client: Client) -> None:
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    set_path, _ = await client.create_set("first", "dependent", m, s, bm)
    ov_file = ptcopyd.volume(2 * MIB)
    (ov,) = await client.ok(ROOT, MANAGER, "CreateOverflow", "sa{sv}", [ov_file, {}])
    m2, s2, b2 = ptcopyd.set_volumes(4 * MIB)
    refusals = [(m2, s, b2), (m2, s2, bm), (s, s2, b2), (m2, ov_file, b2), (m2, s2, ov_file)]
    for args in refusals:
        name, text = await create(client, "second", *args)
        assert name in ("org.ptcopy.Imaging1.Error.InUse",
                        "org.ptcopy.Imaging1.Error.SameVolume"), (args, name, text)
    for path in (s, bm, ov_file):
        name, text = await client.fails(ROOT, MANAGER, "CreateOverflow", "sa{sv}", [path, {}])
        assert name in ("org.ptcopy.Imaging1.Error.InUse", "org.ptcopy.Imaging1.Error.Exists",
                        "org.ptcopy.Imaging1.Error.SameVolume"), (path, name, text)
    objs = await client.objects()
    sets = [p for p, ifs in objs.items() if ISET in ifs]
    assert sets == [set_path]
    assert {v[IVOLUME]["Path"] for v in objs.values() if IVOLUME in v} == {m, s, bm, ov_file}
    # an overflow volume on a set that is not compact: refused, named
    name, _ = await client.fails(set_path, ISET, "AttachOverflow", "oa{sv}", [ov, {}])
    assert name == "org.ptcopy.Imaging1.Error.WrongType", name
    # several sets may share a master
    m3_s, m3_b = ptcopyd.volume(4 * MIB), ptcopyd.volume(
        bitmap_size(4 * MIB, 4 * MIB, 0, Kind.DEPENDENT))
    shared, _ = await client.create_set("shares-master", "dependent", m, m3_s, m3_b)
    await client.assert_refresh_zero()
    for p in (shared, set_path):
        await client.set_call(p, "Disable")
    await client.assert_refresh_zero()


async def test_a_mounted_block_device(ptcopyd: Ptcopyd, client: Client,
                                      tmp_path: Path) -> None:
    """A block device with a mounted file system is refused (InUse), and left alone."""
    backing = tmp_path / "mounted.img"
    with backing.open("wb") as f:
        f.truncate(16 * MIB)
    dev = loopdev.attach(str(backing))
    mp = tmp_path / "mnt"
    mp.mkdir()
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True)
        subprocess.run(["mount", dev, str(mp)], check=True, capture_output=True)
        (mp / "keep").write_text("precious")
        _, s, bm = ptcopyd.set_volumes(16 * MIB)
        for args in ((dev, s, bm), (ptcopyd.volume(16 * MIB), dev, bm)):
            name, text = await create(client, "mounted", *args)
            assert name == "org.ptcopy.Imaging1.Error.InUse", (name, text)
            assert dev in text
        assert (mp / "keep").read_text() == "precious"
    finally:
        subprocess.run(["umount", str(mp)], check=False, capture_output=True)
        loopdev.detach(dev)
    assert os.path.getsize(backing) == 16 * MIB
    await nothing_created(client)


async def test_disable_right_after_create(ptcopyd: Ptcopyd, client: Client) -> None:
    """Disable of a set nobody uses succeeds, even at once after CreateSet and with the CPU
    busy; a refused Disable would have to leave the set as it was (its loop devices)."""
    hog = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    failures = []
    try:
        for i in range(40):
            m, s, bm = ptcopyd.set_volumes(1 * MIB)
            set_path, _ = await client.create_set(f"quick{i}", "dependent", m, s, bm)
            devs = [await client.get(set_path, ISET, p) for p in ("MasterDevice",
                                                                  "ShadowDevice")]
            reply = await client.call(set_path, ISET, "Disable", "a{sv}", [{}])
            if reply.error_name:
                after = [await client.get(set_path, ISET, p) for p in ("MasterDevice",
                                                                       "ShadowDevice")]
                failures.append(f"#{i}: {reply.error_name}: {reply.body} (devices {devs} -> "
                                f"{after})")
                await client.wait_prop(set_path, ISET, "Name", lambda _: True)
                await asyncio.sleep(0.5)
                await client.set_call(set_path, "Disable")
    finally:
        hog.kill()
        hog.wait()
    assert not failures, "Disable of an unused set refused:\n" + "\n".join(failures)
    await nothing_created(client)
