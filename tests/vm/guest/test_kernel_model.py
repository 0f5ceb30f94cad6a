"""The randomized model test on the kernel data path (device-mapper), inside the VM: ptcopyd with
``--data-path kernel`` driven over D-Bus, random writes, reads, copies, updates, group updates
(holds are refused on this path), aborts, suspends, renames and restarts on the served
/dev/mapper devices, checked against "each side is a byte array" (tests/daemon/model_daemon.py,
shared with the userspace test).

A failure prints a shrunk, replayable sequence (seed + op list). PTCOPY_MODEL_SEEDS and
PTCOPY_MODEL_OPS raise the run; PTCOPY_MODEL_REPLAY plays one sequence (test_kernel_model_replay).
The guest does not inherit the host's environment: put them in the guest's command, e.g.
``vmkit.run_guest("PTCOPY_MODEL_SEEDS=1-20 .venv/bin/python -m pytest -q "
"tests/vm/guest/test_kernel_model.py", timeout=3600)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptcopy import engine
from ptcopy.datapath import blockdev as loopdev
from tests.helpers.bus import PrivateBus
from tests.helpers.client import Client
from tests.helpers.daemon import Ptcopyd
from tests.integration.daemon import model_daemon as md

SEEDS = md.seeds([131])
OPS = md.env_int("PTCOPY_MODEL_OPS", 25)
SHRINK_SECONDS = md.env_int("PTCOPY_MODEL_SHRINK_SECONDS", 45)


def _take_down(d: Ptcopyd) -> None:
    """ptcopyd leaves its devices to the kernel when it stops: remove them (top devices first),
    then the loop devices over this run's file volumes."""
    if d.running:
        d.kill()
    for _ in range(3):
        names = [n for n in engine.dm_list() if n.startswith("ptcopy-")]
        if not names:
            break
        for name in sorted(names, key=lambda n: (n.endswith("-origin"), "-master" not in n
                                                 and "-shadow" not in n, n)):
            subprocess.run(["dmsetup", "remove", "--retry", name], check=False,
                           capture_output=True)
    for lp in loopdev.loops_backed_by(str(d.base)):
        with contextlib.suppress(loopdev.LoopError):
            loopdev.detach(lp.device)


@pytest.fixture
def bus() -> Iterator[PrivateBus]:
    b = PrivateBus.start()
    try:
        yield b
    finally:
        b.stop()


async def _check(cfg: md.Config, ops: list[md.Op], bus: PrivateBus, tmp_path: Path) -> None:
    client = await Client.connect(bus.address)
    runs = 0

    async def play(cfg: md.Config, ops: list[md.Op]) -> md.Driver:
        nonlocal runs
        runs += 1
        d = Ptcopyd(bus, tmp_path / f"run{runs}", ["--data-path", "kernel"])
        driver = md.Driver(cfg, d, client, "kernel")
        try:
            md.start_daemon(d)
            await driver.run(ops)
        finally:
            with contextlib.suppress(AssertionError):
                if d.running:
                    d.stop(timeout=60)
            _take_down(d)
        return driver

    async def replay(cfg: md.Config, ops: list[md.Op]) -> None:
        await play(cfg, ops)

    failure: md.Divergence | None = None
    try:
        try:
            driver = await play(cfg, ops)
            print(f"{cfg.describe()}\n{len(ops)} ops: {dict(sorted(driver.done.items()))}")
        except md.Divergence as e:
            failure = e
        if failure is not None:
            small, last = await md.shrink(replay, cfg, ops, failure,
                                          time.monotonic() + SHRINK_SECONDS)
    finally:
        client.disconnect()
    if failure is not None:
        pytest.fail(md.report(cfg, small, last, "kernel", (failure.index, len(ops))),
                    pytrace=False)


def test_kernel_model(bus: PrivateBus, tmp_path: Path) -> None:
    """Random ops for every seed of SEEDS, each run named by its seed in the failure. One test
    function rather than one per seed: tests/vm/test_kernel_guest.py expects the guest's test
    names as written in the file."""
    failures: list[str] = []
    for seed in SEEDS:
        cfg = md.config_for(seed)
        try:
            asyncio.run(_check(cfg, md.generate(cfg, OPS), bus, tmp_path / f"seed{seed}"))
        except pytest.fail.Exception as e:
            failures.append(str(e))
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def test_kernel_model_replay(bus: PrivateBus, tmp_path: Path) -> None:
    """PTCOPY_MODEL_REPLAY's sequence; without it, the second-restore sequence of issue 18
    (restore, write, restore again: the second restore must undo the write)."""
    req = md.replay_request() or md.issue18()
    asyncio.run(_check(*req, bus, tmp_path))
