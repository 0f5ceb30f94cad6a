"""The randomized model test on the userspace data path: ptcopyd driven over D-Bus, random
writes, reads, copies, updates, group updates and holds, aborts, suspends, renames, schedule
runs and restarts on the served devices, checked against "each side is a byte array"
(tests/integration/daemon/model_daemon.py).

PTCOPY_MODEL_SEEDS (a count, or a list like "1-50,77") and PTCOPY_MODEL_OPS raise the run for
long soaks; PTCOPY_MODEL_REPLAY plays the sequence a failure printed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers.bus import PrivateBus
from tests.helpers.client import Client
from tests.helpers.daemon import Ptcopyd, finish
from tests.integration.daemon import model_daemon as md

pytestmark = [pytest.mark.root, pytest.mark.slow]

SEEDS = md.seeds([1, 14, 18, 24, 27])
OPS = md.env_int("PTCOPY_MODEL_OPS", 60)
SHRINK_SECONDS = md.env_int("PTCOPY_MODEL_SHRINK_SECONDS", 60)


async def _check(cfg: md.Config, ops: list[md.Op], system_bus: PrivateBus, client: Client,
                 tmp_path: Path) -> None:
    runs = 0

    async def replay(cfg: md.Config, ops: list[md.Op]) -> None:
        nonlocal runs
        runs += 1
        d = Ptcopyd(system_bus, tmp_path / f"replay{runs}", [])
        try:
            md.start_daemon(d)
            await md.Driver(cfg, d, client, "userspace").run(ops)
        finally:
            if d.running:
                d.kill()
            d.cleanup()

    d = Ptcopyd(system_bus, tmp_path / "run", [])
    md.start_daemon(d)
    driver = md.Driver(cfg, d, client, "userspace")
    failure: md.Divergence | None = None
    try:
        await driver.run(ops)
    except md.Divergence as e:
        failure = e
    print(f"{cfg.describe()}\n{len(ops)} ops: {dict(sorted(driver.done.items()))}")
    if failure is None:
        finish([d])   # exit 0 on SIGTERM, nothing left behind, no traceback in the log
        return
    log = d.log_tail(40)
    finish([d], check_log=False)
    small, last = await md.shrink(replay, cfg, ops, failure,
                                  time.monotonic() + SHRINK_SECONDS)
    pytest.fail(md.report(cfg, small, last, "userspace", (failure.index, len(ops)))
                + f"\n--- ptcopyd log (full run):\n{log}", pytrace=False)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed{s}")
async def test_model_userspace(seed: int, system_bus: PrivateBus, client: Client,
                               tmp_path: Path) -> None:
    cfg = md.config_for(seed)
    await _check(cfg, md.generate(cfg, OPS), system_bus, client, tmp_path)


async def test_model_userspace_replay(system_bus: PrivateBus, client: Client,
                                      tmp_path: Path) -> None:
    """PTCOPY_MODEL_REPLAY's sequence; without it, the second-restore sequence of issue 18."""
    await _check(*(md.replay_request() or md.issue18()), system_bus, client, tmp_path)
