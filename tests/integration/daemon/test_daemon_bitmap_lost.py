"""SIGKILL of ptcopyd while a set's bitmap volume fails: no changed chunk is missed afterwards.

The bitmap volume is a loop device over a file; ``blockdev --setro`` on it makes every write
ptcopyd issues to it fail (EPERM) while reads go on working, a real failing volume without
device-mapper. Master writes through the served device still succeed; ptcopyd records in the
set's fallback record (STATE_DIR/fallback/<id>.rec) that the bitmap is lost before they are
acknowledged. ptcopyd is killed, the bitmap volume comes back, ptcopyd starts again: the set
says its bitmap was lost, refuses an update that would trust it, and a reset's full copy makes
the shadow the master's image byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import random
import stat
import subprocess
from pathlib import Path

import pytest

from ptcopy.engine import Kind, bitmap_size
from tests.helpers.blockio import digest, write_dev
from tests.helpers.client import Client
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import ISET, MIB
from tests.helpers.system import run

pytestmark = pytest.mark.root

CHUNK = 32 * 1024   # the daemon's default chunk size
SIZE = 4 * MIB


async def copied(client: Client, set_path: str, job: str) -> None:
    """The copy started ends well (a small one may end before its job is made)."""
    if job != "/":
        assert (await client.wait_job(job))["Success"] is True
    await client.wait_prop(set_path, ISET, "Flags", lambda f: "copying" not in f)
    assert (await client.get(set_path, ISET, "Status")) == "normal"


async def test_sigkill_while_the_bitmap_fails(ptcopyd: Ptcopyd, client: Client) -> None:
    rng = random.Random(5)
    m = ptcopyd.volume(SIZE, data=rng.randbytes(SIZE))
    s = ptcopyd.volume(SIZE)
    bfile = ptcopyd.volume(bitmap_size(SIZE, SIZE, CHUNK, Kind.INDEPENDENT))
    bdev = run("losetup", "--find", "--show", bfile).strip()
    try:
        set_path, job = await client.create_set("lostbm", "independent", m, s, bdev)
        await copied(client, set_path, job)
        p = await client.props(set_path, ISET)
        set_id = set_path.rsplit("/", 1)[1]
        record = ptcopyd.state_dir / "fallback" / f"{set_id}.rec"
        assert record.exists(), sorted(ptcopyd.state_dir.rglob("*"))
        mdev = p["MasterDevice"]

        run("blockdev", "--setro", bdev)   # from now on every bitmap write fails
        written = {}
        for c in range(3, SIZE // CHUNK, 7):
            data = rng.randbytes(4096)
            write_dev(mdev, c * CHUNK + 4096, data)   # acknowledged: the master never fails
            written[c] = data
        flags = await client.get(set_path, ISET, "Flags")
        assert "bitmap-offline" in flags and "changes-unrecorded" not in flags, flags
        assert record.read_bytes()[12] == 2, "the loss was not recorded before the writes"
        # root-only, as everything ptcopy creates
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        assert stat.S_IMODE(record.parent.stat().st_mode) == 0o700
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "cat", str(record)], capture_output=True, timeout=30)
        assert r.returncode != 0, "uid 65534 read the fallback record"

        ptcopyd.kill()                      # the bits of those writes were in memory only
        run("blockdev", "--setrw", bdev)    # the bitmap volume is back, without them
        ptcopyd.start()

        p = await client.props(set_path, ISET)
        assert "bitmap-lost" in p["Flags"] and "shadow-offline" in p["Flags"], p["Flags"]
        assert p["Status"] == "degraded"
        assert "was lost while offline" in ptcopyd.log_text()
        assert record.read_bytes()[12] == 1, "the record still says lost once the bits are in"
        # an update would trust a bitmap that misses chunks: refused until the reset
        await client.refused("Offline", set_path, ISET, "Update", "sa{sv}", ["shadow", {}])
        (job,) = await client.set_call(set_path, "Reset")
        await copied(client, set_path, job)
        p = await client.props(set_path, ISET)
        assert not {"bitmap-lost", "shadow-offline", "bitmap-offline"} & set(p["Flags"]), p
        assert digest(p["ShadowDevice"]) == digest(p["MasterDevice"])
        master = Path(m).read_bytes()
        for c, data in written.items():
            assert master[c * CHUNK + 4096:c * CHUNK + 8192] == data
        assert Path(s).read_bytes() == master, "a chunk written while offline was missed"
        await client.assert_refresh_zero()
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run("blockdev", "--setrw", bdev)
        # lazily: ptcopyd still holds it until the fixture stops it
        with contextlib.suppress(subprocess.CalledProcessError):
            run("losetup", "-d", bdev)


async def test_disable_removes_the_record(ptcopyd: Ptcopyd, client: Client) -> None:
    m = ptcopyd.volume(SIZE)
    s = ptcopyd.volume(SIZE)
    b = ptcopyd.volume(bitmap_size(SIZE, SIZE, CHUNK, Kind.DEPENDENT))
    set_path, _ = await client.create_set("gone", "dependent", m, s, b)
    record = ptcopyd.state_dir / "fallback" / f"{set_path.rsplit('/', 1)[1]}.rec"
    assert record.exists()
    await client.set_call(set_path, "Disable")
    assert not record.exists()
    assert os.listdir(record.parent) == []


async def test_record_replaced_by_a_symlink(ptcopyd: Ptcopyd, client: Client,
                                            tmp_path: Path) -> None:
    """ptcopyd never follows a symlink planted where a record belongs (nothing is written
    through it), and a set whose record it cannot use does not come back as if whole."""
    m = ptcopyd.volume(SIZE)
    s = ptcopyd.volume(SIZE)
    b = ptcopyd.volume(bitmap_size(SIZE, SIZE, CHUNK, Kind.DEPENDENT))
    set_path, _ = await client.create_set("linked", "dependent", m, s, b)
    record = ptcopyd.state_dir / "fallback" / f"{set_path.rsplit('/', 1)[1]}.rec"
    ptcopyd.stop_and_check()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    record.unlink()
    record.symlink_to(victim)
    ptcopyd.start()
    p = await client.props(set_path, ISET)
    assert p["Status"] == "error", p
    assert "fallback record" in ptcopyd.log_text()
    assert victim.read_bytes() == b"keep me"
    record.unlink()                     # the record back as a plain file: the set returns
    ptcopyd.stop()
    ptcopyd.start()
    assert (await client.get(set_path, ISET, "Status")) == "normal"
