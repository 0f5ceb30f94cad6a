"""Jobs end when the work ends: after an update with nothing to copy, a real update and a group
update, Job.Wait returns True, the job is Done at once with the right result and progress, and
Completed was signalled once. (How fast is bench/daemon_jobs.py's business, not a test's.)"""

from __future__ import annotations

import random

import pytest

from tests.helpers.blockio import read_dev, write_dev
from tests.helpers.client import Client, Signals, plain, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import BUS_NAME, IGROUP, IJOB, MIB
from tests.integration.daemon.scenario_common import devices

pytestmark = pytest.mark.root

CHUNK = 32 * 1024


async def _independent(ptcopyd: Ptcopyd, client: Client, name: str) -> str:
    data = random.Random(name).randbytes(4 * MIB)
    m, s, bm = ptcopyd.set_volumes(4 * MIB, kind="independent", master_data=data)
    set_path, job = await client.create_set(name, "independent", m, s, bm,
                                            chunk_size=u(CHUNK))
    if job != "/":   # "/": the first copy was over before CreateSet returned
        await client.wait_job(job)
    return set_path


async def _ended(client: Client, job: str, completed: Signals) -> dict[str, object]:
    """Wait returns True, and right then the job is Done with one Completed signal that
    agrees with its properties."""
    assert (await client.ok(job, IJOB, "Wait", "d", [60.0], timeout=70)) == [True]
    p = await client.props(job, IJOB)
    assert p["Done"] is True and p["Cancelable"] is False, p
    sig = await completed.wait_for(lambda x: x.path == job)
    assert plain(sig.body) == [p["Success"], p["Message"]], (sig.body, p)
    assert len(completed.for_path(job)) == 1
    return p


async def test_update_with_nothing_to_copy_ends(ptcopyd: Ptcopyd, client: Client) -> None:
    set_path = await _independent(ptcopyd, client, "noop")
    completed = await client.signals(sender=BUS_NAME, interface=IJOB, member="Completed")
    for _ in range(3):
        job = await client.update(set_path)
        p = await _ended(client, job, completed)
        assert p["Success"] is True and p["Message"] == "done", p
        assert p["Progress"] == 1.0 and p["Bytes"] == 0, p
    await client.assert_refresh_zero()


async def test_update_with_changes_ends_with_the_target_updated(ptcopyd: Ptcopyd,
                                                                client: Client) -> None:
    set_path = await _independent(ptcopyd, client, "real")
    mdev, sdev = await devices(client, set_path)
    rng = random.Random(5)
    changed = sorted(rng.sample(range(4 * MIB // CHUNK), 9))
    for c in changed:
        write_dev(mdev, c * CHUNK, rng.randbytes(CHUNK))
    completed = await client.signals(sender=BUS_NAME, interface=IJOB, member="Completed")
    job = await client.update(set_path)
    p = await _ended(client, job, completed)
    assert p["Success"] is True and p["Message"] == "done", p
    assert p["Progress"] == 1.0, p
    assert p["Bytes"] == len(changed) * CHUNK, p   # the changed chunks, nothing else
    for c in changed:
        assert read_dev(sdev, c * CHUNK, CHUNK) == read_dev(mdev, c * CHUNK, CHUNK)
    await client.assert_refresh_zero()


async def test_group_update_ends_when_its_last_set_ends(ptcopyd: Ptcopyd,
                                                        client: Client) -> None:
    a = await _independent(ptcopyd, client, "ga")
    b = await _independent(ptcopyd, client, "gb")
    group = await client.create_group("g", [a, b])
    mdev, sdev = await devices(client, b)   # only b has something to copy
    write_dev(mdev, 3 * CHUNK, b"\x5a" * CHUNK)
    completed = await client.signals(sender=BUS_NAME, interface=IJOB, member="Completed")
    job = await client.update(group, iface=IGROUP)
    p = await _ended(client, job, completed)
    assert p["Success"] is True and p["Progress"] == 1.0, p
    assert read_dev(sdev, 3 * CHUNK, CHUNK) == b"\x5a" * CHUNK
    await client.assert_refresh_zero()
