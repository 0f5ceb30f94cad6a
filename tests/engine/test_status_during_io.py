"""Security review finding 9 (engine part): status() and progress() must not wait for I/O.

The daemon's event loop reads them. They used to take the set's metadata and control locks,
which an overflow attach held across the bitmap header's write and fdatasync, and a reset across
its probe reads and bitmap rewrite: a stuck bitmap device stopped the daemon from answering.

The bitmap volume here lives on a small ext4 file system that the test freezes (fsfreeze), so
every write to it blocks until the thaw; the call that writes runs on a thread, and status() and
progress() must come back while it is still blocked.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ptcopy.engine import CHUNK_MIN, Engine, Flag, Kind, Set, Side, VolumeRole, bitmap_size
from tests.helpers.names import MakeVol
from tests.helpers.system import run

CHUNK = CHUNK_MIN
BOUND = 30.0   # a call still blocked after this is waiting for the frozen device

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount and freeze")


@pytest.fixture
def frozen_fs(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None], Callable[[], None]]]:
    img, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    with img.open("wb") as f:
        f.truncate(32 << 20)
    mnt.mkdir()
    run("mkfs.ext4", "-q", "-F", str(img))
    run("mount", "-o", "loop", str(img), str(mnt))
    frozen = False

    def freeze() -> None:
        nonlocal frozen
        run("fsfreeze", "-f", str(mnt))
        frozen = True

    def thaw() -> None:
        nonlocal frozen
        if frozen:
            run("fsfreeze", "-u", str(mnt))
            frozen = False

    try:
        yield mnt, freeze, thaw
    finally:
        thaw()
        run("umount", str(mnt))


def wait_blocked(t: threading.Thread) -> None:
    """Until the thread sleeps in the kernel on the frozen file system (state D)."""
    stat = Path(f"/proc/self/task/{t.native_id}/stat")
    for _ in range(int(BOUND / 0.01)):
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "D":
            return
        time.sleep(0.01)
    pytest.fail("the call never blocked on the frozen bitmap volume")


def observe_while_blocked(s: Set, blocked: Callable[[], object], thaw: Callable[[], None]) -> None:
    """Start ``blocked`` on a thread (it writes to the frozen bitmap), then require status and
    progress to return while it is still blocked."""
    started = threading.Event()
    result: list[object] = []

    def writer() -> None:
        started.set()
        try:
            result.append(blocked())
        except Exception as e:  # checked below
            result.append(e)

    w = threading.Thread(target=writer, daemon=True)
    observed: list[object] = []

    def observer() -> None:
        for _ in range(20):
            observed.append(s.status())
            observed.append(s.progress())

    try:
        w.start()
        started.wait(BOUND)
        wait_blocked(w)
        o = threading.Thread(target=observer, daemon=True)
        o.start()
        o.join(BOUND)
        assert not o.is_alive(), "status()/progress() wait for the frozen bitmap volume"
        assert len(observed) == 40
    finally:
        thaw()
    w.join(BOUND)
    assert not w.is_alive()
    assert not any(isinstance(r, Exception) for r in result), result


def compact_set(eng: Engine, tmp_vol: MakeVol, mnt: Path) -> Set:
    size, shadow = 64 * CHUNK, 8 * CHUNK
    bm = mnt / "bitmap.img"
    with bm.open("wb") as f:
        f.truncate(bitmap_size(size, shadow, CHUNK, Kind.DEPENDENT))
    return eng.enable(tmp_vol(size, "m"), tmp_vol(shadow, "s"), bm, Kind.DEPENDENT,
                      chunk_size=CHUNK)


def test_status_while_attach_writes_a_frozen_bitmap(tmp_vol: MakeVol, frozen_fs) -> None:
    mnt, freeze, thaw = frozen_fs
    with Engine() as eng:
        s = compact_set(eng, tmp_vol, mnt)
        ov = eng.init_overflow(tmp_vol(2 << 20, "ov"), CHUNK)
        freeze()
        observe_while_blocked(s, lambda: s.attach_overflow(ov), thaw)
        assert s.status().overflow_uuid == ov.status().uuid
        s.close()
        ov.close()


def test_status_while_reset_rewrites_a_frozen_bitmap(tmp_vol: MakeVol, frozen_fs) -> None:
    mnt, freeze, thaw = frozen_fs
    with Engine() as eng:
        s = compact_set(eng, tmp_vol, mnt)
        s.inject_error(VolumeRole.BITMAP)
        s.write(Side.MASTER, 0, b"z" * CHUNK)   # the bitmap flush fails: offline
        assert s.status().flags & Flag.BITMAP_OFFLINE
        s.inject_error(VolumeRole.BITMAP, False)
        freeze()
        observe_while_blocked(s, s.reset, thaw)
        assert s.wait(BOUND)
        assert not s.status().flags & Flag.BITMAP_OFFLINE
        s.close()
