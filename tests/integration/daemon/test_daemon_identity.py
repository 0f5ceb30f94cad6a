"""A set never opens on the wrong volume (issue 11; review findings 3 and 15).

ptcopyd records each volume's identity (loop backing file, WWN, serial, partition UUID...; a
file's inode; the set UUID in the bitmap header) and checks it on every open before the engine
writes anything. These tests restart a real ptcopyd over real files and loop devices:

- file volumes swapped between runs: refused, naming expected and found; no byte changes;
- a bitmap volume holding another set's bitmap: refused by its header;
- loop devices re-attached under other names (in rotated order): found again, set served;
- a device that returns under a new name while ptcopyd runs (a kernel uevent): found again;
- a state store from before identities were kept: they are recorded at the first open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ptcopy.datapath import blockdev as loopdev
from ptcopy.engine import Kind, bitmap_size
from tests.helpers.blockio import read_dev, write_dev
from tests.helpers.client import Client
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import ISET, MIB

pytestmark = pytest.mark.root

SIZE = 4 * MIB


def file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


class Loops:
    """Loop devices made by a test, detached at the end whatever happened."""

    def __init__(self) -> None:
        self.devices: list[str] = []

    def attach(self, path: str, dev: str = "") -> str:
        """Attach at ``dev`` when it is still free (other programs on the machine may take
        loop devices meanwhile), else at the first free one; the device used."""
        if dev and subprocess.run(["losetup", dev, path], capture_output=True,
                                  check=False).returncode == 0:
            self.devices.append(dev)
            return dev
        out = subprocess.run(["losetup", "--find", "--show", path], capture_output=True,
                             text=True, check=True).stdout.strip()
        self.devices.append(out)
        return out

    def detach(self, dev: str) -> None:
        loopdev.detach(dev)
        self.devices.remove(dev)

    def cleanup(self) -> None:
        for dev in self.devices:
            with contextlib.suppress(loopdev.LoopError):
                loopdev.detach(dev)


@pytest.fixture
def loops() -> Iterator[Loops]:
    lo = Loops()
    yield lo
    lo.cleanup()


def backing(tmp: Path, name: str, size: int) -> str:
    p = tmp / name
    with p.open("xb") as f:
        f.truncate(size)
    return str(p)


def set_id(path: str) -> str:
    return path.rsplit("/", 1)[-1]


async def ptcopyd_restart_with(ptcopyd: Ptcopyd, change: Callable[[], object]) -> None:
    """Stop ptcopyd (cleanly), change something, start it again on the same state."""
    await asyncio.to_thread(ptcopyd.stop_and_check)
    change()
    ptcopyd.start()


async def test_swapped_file_volumes_are_refused(ptcopyd: Ptcopyd, client: Client) -> None:
    """Master and shadow files of the same size swapped while ptcopyd was stopped: the set
    is not opened (an Update is refused with the expected and found identity) and no byte of
    the master, shadow or bitmap changes. Put back, the set opens again."""
    m, s, b = ptcopyd.set_volumes(SIZE)
    path, _ = await client.create_set("swap", "dependent", m, s, b)
    p = await client.props(path, ISET)
    write_dev(p["MasterDevice"], 0, random.Random(1).randbytes(MIB))
    await ptcopyd_restart_with(ptcopyd, lambda: swap_files(m, s))
    before = {v: file_hash(v) for v in (m, s, b)}

    assert await client.get(path, ISET, "Status") == "error"
    text = await client.refused("Offline", path, ISET, "Update", "sa{sv}", ["shadow", {}])
    assert f"master volume {m} is not the volume recorded for it" in text, text
    assert "expected a file (inode=" in text and "found a file (inode=" in text, text
    assert "nothing was written" in text, text
    assert {v: file_hash(v) for v in (m, s, b)} == before, "a refused volume was written"
    assert "found again" not in ptcopyd.log_text()

    await ptcopyd_restart_with(ptcopyd, lambda: swap_files(m, s))
    assert await client.get(path, ISET, "Status") == "normal"
    await client.wait_job(await client.update(path))
    await client.set_call(path, "Disable")


def swap_files(a: str, b: str) -> None:
    os.rename(a, a + ".tmp")
    os.rename(b, a)
    os.rename(a + ".tmp", b)


async def test_bitmap_of_another_set_is_refused(ptcopyd: Ptcopyd, client: Client) -> None:
    """Set A's bitmap file now holds set B's bitmap (same sizes, same file, other content):
    A is refused by the set UUID in the header, nothing is written; B is unaffected."""
    ma, sa, ba = ptcopyd.set_volumes(SIZE)
    mb, sb, bb = ptcopyd.set_volumes(SIZE)
    a, _ = await client.create_set("a", "dependent", ma, sa, ba)
    bpath, _ = await client.create_set("b", "dependent", mb, sb, bb)

    def copy_bitmap() -> None:
        with open(bb, "rb") as src, open(ba, "r+b") as dst:   # same inode, B's bytes
            dst.write(src.read())

    await ptcopyd_restart_with(ptcopyd, copy_bitmap)
    before = {v: file_hash(v) for v in (ma, sa, ba)}
    assert await client.get(a, ISET, "Status") == "error"
    assert await client.get(bpath, ISET, "Status") == "normal"
    text = await client.refused("Offline", a, ISET, "Update", "sa{sv}", ["shadow", {}])
    want = f"expected a header with UUID {set_id(a)}, found set UUID {set_id(bpath)}"
    assert f"bitmap volume {ba}" in text and want in text, text
    assert {v: file_hash(v) for v in (ma, sa, ba)} == before
    await client.set_call(bpath, "Disable")


async def test_loop_volumes_found_again_under_rotated_names(
        ptcopyd: Ptcopyd, client: Client, loops: Loops, tmp_path: Path) -> None:
    """The three loop devices of a set re-attached in rotated order while ptcopyd was
    stopped (each name now holds another volume of the set): every volume is found again by
    its backing file, the set serves the same data, the new names are stored."""
    files, devs, path, data = await _loop_set(client, loops, tmp_path, "moved", 3)

    now: list[str] = []

    def rotate() -> None:
        for d in devs:
            loops.detach(d)
        for f, d in zip(files, devs[1:] + devs[:1], strict=True):
            now.append(loops.attach(f, d))

    await ptcopyd_restart_with(ptcopyd, rotate)
    assert now != devs
    p = await client.props(path, ISET)
    assert p["Status"] == "normal", ptcopyd.log_tail()
    assert [p["Master"], p["Shadow"], p["Bitmap"]] == now, p
    assert read_dev(p["MasterDevice"], 0, MIB) == data
    moved = sum(1 for a, b in zip(devs, now, strict=True) if a != b)
    assert ptcopyd.log_text().count("found again") == moved, ptcopyd.log_tail()
    await client.wait_job(await client.update(path))
    await client.assert_refresh_zero()

    await ptcopyd_restart_with(ptcopyd, lambda: None)   # the new names were stored
    p = await client.props(path, ISET)
    assert p["Status"] == "normal" and p["Master"] == now[0], p
    assert ptcopyd.log_text().count("found again") == moved
    await client.set_call(path, "Disable")


async def test_device_back_under_a_new_name_while_running(
        ptcopyd: Ptcopyd, client: Client, loops: Loops, tmp_path: Path) -> None:
    """The master's loop device is gone when ptcopyd starts (the set cannot open; the
    refusal says no device has its identity). Attached again under another name, the kernel's
    uevent makes ptcopyd find it by identity and serve the set, without a restart."""
    files, devs, path, data = await _loop_set(client, loops, tmp_path, "late", 4)

    await ptcopyd_restart_with(ptcopyd, lambda: loops.detach(devs[0]))
    assert await client.get(path, ISET, "Status") == "error"
    text = await client.refused("Offline", path, ISET, "Update", "sa{sv}", ["shadow", {}])
    assert "master volume" in text and "no other block device" in text, text

    loops.attach(backing(tmp_path, "filler.img", MIB), devs[0])   # the old name is taken
    new = loops.attach(files[0])
    assert new not in devs, (new, devs)
    await client.wait_prop(path, ISET, "Status", lambda v: v == "normal", timeout=10)
    p = await client.props(path, ISET)
    assert p["Master"] == new, p
    assert read_dev(p["MasterDevice"], 0, MIB) == data
    await client.wait_job(await client.update(path))
    await client.set_call(path, "Disable")


async def test_state_store_without_identities(ptcopyd: Ptcopyd, client: Client) -> None:
    """A state store from before identities were kept (no identity columns): it is migrated,
    the set opens and its identities are recorded at that first open; from then on a swap is
    refused."""
    m, s, b = ptcopyd.set_volumes(SIZE)
    path, _ = await client.create_set("old", "dependent", m, s, b)

    def downgrade() -> None:
        db = sqlite3.connect(ptcopyd.state_dir / "state.db")
        with db:
            for col in ("master_ident", "shadow_ident", "bitmap_ident"):
                db.execute(f"ALTER TABLE sets DROP COLUMN {col}")
            db.execute("ALTER TABLE overflows DROP COLUMN ident")
        db.close()

    await ptcopyd_restart_with(ptcopyd, downgrade)
    assert await client.get(path, ISET, "Status") == "normal"
    assert ptcopyd.log_text().count("first open since volume identities are kept") == 3
    db = sqlite3.connect(ptcopyd.state_dir / "state.db")
    (ident,) = db.execute("SELECT master_ident FROM sets").fetchone()
    db.close()
    assert f'"inode": "{os.stat(m).st_ino}"' in ident, ident

    await ptcopyd_restart_with(ptcopyd, lambda: swap_files(m, s))
    assert await client.get(path, ISET, "Status") == "error"
    await ptcopyd_restart_with(ptcopyd, lambda: swap_files(m, s))
    assert await client.get(path, ISET, "Status") == "normal"
    await client.set_call(path, "Disable")


async def _loop_set(client: Client, loops: Loops, tmp_path: Path, name: str, seed: int
                    ) -> tuple[list[str], list[str], str, bytes]:
    """A dependent set on three loop devices over files, with 1 MiB of seeded data written
    through its served master: (backing files, loop devices, set path, data)."""
    bsize = bitmap_size(SIZE, SIZE, 0, Kind.DEPENDENT)
    files = [backing(tmp_path, "m.img", SIZE), backing(tmp_path, "s.img", SIZE),
             backing(tmp_path, "b.img", bsize)]
    devs = [loops.attach(f) for f in files]
    path, _ = await client.create_set(name, "dependent", *devs)
    data = random.Random(seed).randbytes(MIB)
    write_dev((await client.props(path, ISET))["MasterDevice"], 0, data)
    return files, devs, path, data


def _attach_again(loops: Loops, path: str, dev: str) -> str:
    """Attach path at dev once more: a detach completes asynchronously (and udev's probe may
    still hold the device), so the number is tried for a few seconds before another is used."""
    for _ in range(50):
        if subprocess.run(["losetup", dev, path], capture_output=True,
                          check=False).returncode == 0:
            loops.devices.append(dev)
            return dev
        time.sleep(0.1)
    return loops.attach(path)


def test_reused_device_number_is_another_volume(loops: Loops, tmp_path: Path) -> None:
    """Finding 15: what resumes a set whose device came back is the identity now at the
    device number, not the number itself. A loop device number re-used for another file is
    another volume (the check ptcopyd makes before a reset); the same file again is not."""
    from ptcopy.daemon import identity

    a, b = backing(tmp_path, "a.img", SIZE), backing(tmp_path, "b.img", SIZE)
    dev = loops.attach(a)
    rdev = os.stat(dev).st_rdev
    first = identity.of_devnum(rdev, "shadow")
    assert first is not None and "loop_file" in first.strong, first
    loops.detach(dev)
    if _attach_again(loops, b, dev) != dev:   # same name, same number, another medium
        pytest.skip(f"another program took {dev} meanwhile")
    other = identity.of_devnum(rdev, "shadow")
    assert other is not None
    verdict = identity.compare(first, other)
    assert not verdict.ok and "loop_file=" in verdict.why, verdict
    loops.detach(dev)
    if _attach_again(loops, a, dev) != dev:   # the same file back
        pytest.skip(f"another program took {dev} meanwhile")
    same = identity.of_devnum(rdev, "shadow")
    assert same is not None and identity.compare(first, same).ok
    assert identity.find_block(first, "shadow") == [dev]


async def test_removed_volume_back_under_a_new_name_reopens_the_set(
        ptcopyd: Ptcopyd, client: Client, loops: Loops, tmp_path: Path) -> None:
    """While ptcopyd serves a set, its master device goes away (detached: the kernel only
    defers that while the engine holds it; a remove uevent says it is gone) and the same
    backing file comes back under another loop device: ptcopyd finds it by identity, closes
    the set and opens it there, and it serves the same data again."""
    files, devs, path, data = await _loop_set(client, loops, tmp_path, "replug", 6)

    loops.detach(devs[0])
    subprocess.run(["udevadm", "trigger", "--action=remove", devs[0]], check=True)
    await client.wait_prop(path, ISET, "Status", lambda v: v == "degraded", timeout=10)
    new = loops.attach(files[0])
    assert new != devs[0]
    await client.wait_prop(path, ISET, "Master", lambda v: v == new, timeout=10)
    await client.wait_prop(path, ISET, "Status", lambda v: v == "normal", timeout=10)
    p = await client.props(path, ISET)
    assert read_dev(p["MasterDevice"], 0, MIB) == data
    await client.wait_job(await client.update(path))
    await client.set_call(path, "Disable")


def test_comparison_rule() -> None:
    """The rule every open applies: any strong identifier both sides have must be equal; a
    record with strong identifiers none of which can be read now is refused; with nothing
    strong recorded the weak ones decide (and say so); the header UUID is checked on top."""
    from ptcopy.daemon.identity import Identity, compare

    disk = Identity("block", {"serial": "S1", "wwn": "0x5000"}, {"size": "4096"})
    assert compare(disk, Identity("block", {"serial": "S1"}, {"size": "8192"})).ok
    other = compare(disk, Identity("block", {"serial": "S2", "wwn": "0x5000"}, {}))
    assert not other.ok and "serial=S1" in other.why and "serial=S2" in other.why, other
    unknown = compare(disk, Identity("block", {}, {"size": "4096"}))
    assert not unknown.ok and "none of these identifiers" in unknown.why, unknown
    assert not compare(disk, Identity("file", {"inode": "1", "st_dev": "fe00"}, {})).ok

    bare = Identity("block", {}, {"size": "4096", "id_path": "pci-0000:00:05.0"})
    weak = compare(bare, Identity("block", {}, {"size": "4096", "id_path": "pci-0000:00:05.0"}))
    assert weak.ok and weak.weak
    assert not compare(bare, Identity("block", {}, {"size": "4096", "id_path": "pci-x"})).ok
    assert not compare(bare, Identity("block", {}, {"size": "8192"})).ok

    f = Identity("file", {"inode": "7", "st_dev": "fe00", "fs_uuid": "u1"}, {})
    assert compare(f, Identity("file", {"inode": "7", "st_dev": "fe01", "fs_uuid": "u1"}, {})).ok
    assert not compare(f, Identity("file", {"inode": "8", "st_dev": "fe00"}, {})).ok
    assert compare(f, Identity("file", {"inode": "7", "st_dev": "fe00"}, {})).ok

    hdr = compare(disk, Identity(disk.kind, disk.strong, disk.weak, "bb"), header="aa")
    assert not hdr.ok and "expected a header with UUID aa, found set UUID bb" in hdr.why
    assert compare(disk, Identity(disk.kind, disk.strong, disk.weak, "aa"), header="aa").ok
    assert Identity.from_json(disk.to_json()) == disk and Identity.from_json("junk") is None
