"""A schedule on the kernel data path, inside the VM: ptcopyd on a clock the test moves
(--test-clock FILE, read again on SIGUSR1) rotates over two dependent shadows of one master;
each run takes a new point in time onto the least recent shadow, and each shadow then holds,
byte for byte, what the master held at its run."""

from __future__ import annotations

import random
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptcopy.datapath.kernel import KernelPath
from ptcopy.engine import Kind
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import IJOB, ISCHEDULE, MANAGER, ROOT
from tests.vm.guest.kernel_helpers import CHUNK, MIB, Pool, digest, served_daemon, write_at

SIZE = 8 * MIB
T0 = 1_900_000_000
HOUR = 3600


@pytest.fixture
def timed(tmp_path: Path) -> Iterator[tuple[Ptcopyd, Pool, Path]]:
    clock = tmp_path / "clock"
    clock.write_text(f"{T0}\n")
    with served_daemon(str(tmp_path), "kernel", ["--test-clock", str(clock)]) as (d, pool):
        yield d, pool, clock


def _call(d: Ptcopyd, path: str, iface: str, member: str, sig: str, *args: str) -> str:
    return d.bus.busctl("call", "org.ptcopy.Imaging1", path, iface, member, sig, *args,
                        timeout=120).stdout.strip()


def _prop(d: Ptcopyd, path: str, iface: str, name: str) -> str:
    return d.bus.busctl("get-property", "org.ptcopy.Imaging1", path, iface, name).stdout.strip()


def _paths(text: str) -> list[str]:
    return re.findall(r'"([^"]+)"', text)


def _next_job(d: Ptcopyd, sched: str, after: str) -> str:
    """The schedule's job of the run after the one that made ``after``, once it is done."""
    deadline = time.monotonic() + 120
    while True:
        job = _paths(_prop(d, sched, ISCHEDULE, "LastJob"))[0]
        if job not in ("/", after):
            break
        assert time.monotonic() < deadline, f"no run\n{d.log_tail()}"
        time.sleep(0.1)
    assert _call(d, job, IJOB, "Wait", "d", "240") == "b true", d.log_tail()
    assert _prop(d, job, IJOB, "Success") == "b true", d.log_tail()
    return job


def test_a_schedule_rotates_over_two_shadows(timed: tuple[Ptcopyd, Pool, Path]) -> None:
    d, pool, clock = timed
    d.start(timeout=120)
    m = pool.loop("m", SIZE, random_fill=True)
    store = KernelPath.store_needed(SIZE, CHUNK)
    sets = []
    for i in range(2):
        s = pool.loop(f"s{i}", store)
        b = pool.loop(f"b{i}", KernelPath.layout_for(SIZE, store, CHUNK, Kind.DEPENDENT).total)
        out = _call(d, ROOT, MANAGER, "CreateSet", "sssssa{sv}", f"r{i}", "dependent", m.path,
                    s.path, b.path, "1", "chunk_size", "u", str(CHUNK))
        sets.append(_paths(out)[0])
    sched = _paths(_call(d, ROOT, MANAGER, "CreateSchedule", "ssaoa{sv}", "rotate",
                         "every 1h", "2", *sets, "0"))[0]
    master = "/dev/mapper/ptcopy-r0-master"
    rng = random.Random(5)
    held: dict[int, str] = {}   # set index -> the master's digest at its last run
    job = "/"
    for n in range(1, 4):   # runs onto r0, r1, then r0 again (the least recent)
        for c in rng.sample(range(SIZE // CHUNK), 6):
            write_at(master, c * CHUNK, rng.randbytes(CHUNK))
        at_run = digest(master)
        clock.write_text(f"{T0 + n * HOUR}\n")
        assert d.proc is not None
        d.proc.send_signal(signal.SIGUSR1)
        job = _next_job(d, sched, job)
        target = (n - 1) % 2
        assert _paths(_prop(d, job, IJOB, "Objects")) == [sets[target]]
        held[target] = at_run
        for i, want in held.items():
            assert digest(f"/dev/mapper/ptcopy-r{i}-shadow") == want, (n, i)
    assert _prop(d, sched, ISCHEDULE, "LastResult").startswith('s "done'), d.log_tail()
    assert "ERROR" not in d.log_text()
