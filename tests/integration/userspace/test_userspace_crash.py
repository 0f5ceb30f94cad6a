"""Crash of a serving process: serve_child.py enables a set and serves it; the parent writes to
the served master device and SIGKILLs the child under that load. Then:

- a new UserspacePath on the same run dir cleans up what the dead server left (its FUSE mount,
  its loop devices) and serves again;
- the set reopens (RECOVERED), a dependent shadow still shows the point in time of the enable,
  an interrupted initial copy of an independent set resumes and completes with that same image;
- an update to the shadow then makes the shadow equal the master byte for byte.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import selectors
import signal
import subprocess
import sys
import threading
import time

import pytest

from ptcopy.datapath import blockdev as loopdev
from ptcopy.datapath.userspace import cleanup_stale
from ptcopy.engine import Direction, Flag, Kind, Side, bitmap_size
from tests.helpers.names import MIB, REPO
from tests.helpers.system import opened, ptcopy_mounts
from tests.helpers.userspace import Harness

pytestmark = pytest.mark.root

CHILD = "tests.integration.userspace.serve_child"   # run with -m from the repository root
SIZE = 16 * MIB
CHUNK = 32 * 1024
READY_TIMEOUT = 60.0


class Writer(threading.Thread):
    """O_DIRECT writes of random blocks to a device until stopped or the device fails."""

    def __init__(self, dev: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.dev = dev
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.done = 0
        self.error: OSError | None = None

    def run(self) -> None:
        buf = mmap.mmap(-1, 256 * 1024)
        try:
            with opened(self.dev, os.O_WRONLY | os.O_DIRECT) as fd:
                while not self.stop.is_set():
                    n = self.rng.randint(1, 64) * 4096
                    off = self.rng.randrange(0, SIZE - n + 1, 4096)
                    buf[:n] = self.rng.randbytes(n)
                    os.pwrite(fd, memoryview(buf)[:n], off)
                    self.done += 1
                    if self.done % 8 == 0:
                        os.fsync(fd)
        except OSError as e:        # the server died under the write: EIO and the like
            self.error = e


def read_ready(proc: subprocess.Popen[str]) -> tuple[str, str]:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if sel.select(timeout=0.1):
            line = proc.stdout.readline()
            if line.startswith("READY "):
                _, master, shadow = line.split()
                return master, shadow
        if proc.poll() is not None:
            break
    raise AssertionError(f"serve child not ready (exit {proc.poll()})")


def whole(path: str) -> bytes:
    buf = mmap.mmap(-1, SIZE)
    with opened(path, os.O_RDONLY | os.O_DIRECT) as fd:
        assert os.preadv(fd, [buf], 0) == SIZE
    return bytes(buf)


RUNS = [("dependent", 1), ("dependent", 2), ("dependent", 3), ("independent", 4),
        ("independent", 5)]


@pytest.mark.parametrize(("kind", "seed"), RUNS, ids=[f"{k}-{s}" for k, s in RUNS])
def test_crash_of_the_serving_process(dp: Harness, kind: str, seed: int) -> None:
    rng = random.Random(seed)
    k = Kind.INDEPENDENT if kind == "independent" else Kind.DEPENDENT
    m = dp.file("m.img", SIZE)
    sh = dp.file("s.img", SIZE)
    b = dp.file("b.img", bitmap_size(SIZE, SIZE, CHUNK, k))
    initial = rng.randbytes(SIZE)
    m.write_bytes(initial)
    run_dir = dp.tmp / "run"
    run_dir.mkdir()
    dp.run_dirs.append(run_dir)            # cleaned up even if the test stops early
    mountpoint = str(run_dir / "volumes")

    args = {"master": str(m), "shadow": str(sh), "bitmap": str(b), "run_dir": str(run_dir),
            "mode": "enable", "kind": kind, "chunk_size": CHUNK,
            # independent: slow the initial copy down so the kill interrupts it. 32 units of
            # 400 ms leave 12.8 s; at 100 ms a loaded machine once let the copy end first
            "copy_delay_ms": 400 if k is Kind.INDEPENDENT else 0, "copy_units": 16}
    err = (dp.tmp / "child.err").open("w")
    proc = subprocess.Popen([sys.executable, "-m", CHILD, json.dumps(args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=err, text=True)
    writer = None
    try:
        try:
            master_dev, shadow_dev = read_ready(proc)
        except AssertionError:
            err.flush()
            raise AssertionError((dp.tmp / "child.err").read_text()) from None
        writer = Writer(master_dev, seed)
        writer.start()
        deadline = time.monotonic() + 20
        while writer.done < 20 and writer.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.done >= 20 and writer.error is None, (writer.done, writer.error)
        time.sleep(rng.uniform(0.0, 0.3))
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        err.close()
        if writer is not None:
            writer.stop.set()
            writer.join(20)
    assert not writer.is_alive(), "a write to the dead server's device hangs"

    # what the dead server left behind
    stale_loops = {lp.device for lp in loopdev.loops_backed_by(str(run_dir))}
    assert {master_dev, shadow_dev} <= stale_loops
    assert mountpoint in ptcopy_mounts()

    # a new data path on the run dir cleans it up and serves again
    restart_error: Exception | None = None
    try:
        up = dp.userspace(run_dir)
    except OSError as e:
        # a bug (see the assertion at the end): do what the restart should have done, and check
        # the rest of the contract all the same
        restart_error = e
        cleanup_stale(mountpoint)
        up = dp.userspace(run_dir)
    assert loopdev.loops_backed_by(str(run_dir)) == []
    assert ptcopy_mounts().count(mountpoint) == 1
    assert os.listdir(mountpoint) == []            # the new server answers

    s = dp.engine.open(str(m), str(sh), str(b))
    assert s.status().flags & Flag.RECOVERED
    if k is Kind.INDEPENDENT:
        assert s.status().flags & Flag.COPYING, "the kill came after the initial copy ended"
    served = up.serve("crash", s)
    assert served.master_device and served.shadow_device
    if k is Kind.INDEPENDENT:
        # the interrupted initial copy resumed with the chunks it still had to move (it may
        # already have finished them: a few chunks take a millisecond)
        p = s.progress()
        assert p.direction is Direction.TO_SHADOW and p.chunks_total > 0, p
        s.set_copy_params(0, 256)
        assert s.wait(60)
        assert not s.status().flags & Flag.INCOMPLETE
    # the shadow still shows the point in time of the enable
    assert whole(served.shadow_device) == initial
    assert s.read(Side.SHADOW, 0, SIZE) == initial
    # the master shows what the writes left (each through the set and the device alike)
    master_now = whole(served.master_device)
    assert master_now == s.read(Side.MASTER, 0, SIZE) == m.read_bytes()

    up.copy(["crash"], Direction.TO_SHADOW, full=False)
    assert s.wait(60)
    assert whole(served.shadow_device) == master_now
    assert s.read(Side.SHADOW, 0, SIZE) == master_now
    if k is Kind.INDEPENDENT:
        assert sh.read_bytes() == m.read_bytes()   # the volumes themselves, byte for byte
    up.stop()
    assert mountpoint not in ptcopy_mounts()
    assert loopdev.loops_backed_by(str(run_dir)) == []
    assert restart_error is None, \
        f"a new UserspacePath on the run dir of a killed server failed: {restart_error!r}"
