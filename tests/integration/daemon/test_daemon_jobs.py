"""Jobs and copies over D-Bus, over time: abort and wait, jobs after they end (retention, Wait(0)),
PropertiesChanged only on real change, reads while a copy runs, copy throttles (refused when too
long, prompt aborts and stops), SIGTERM with calls in flight, progress of a throttled copy.
Each ends with Refresh() == 0."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable

import pytest

from tests.helpers.blockio import same_content
from tests.helpers.client import Client, plain, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import (
    BUS_NAME,
    ERR,
    IGROUP,
    IJOB,
    ISET,
    MANAGER,
    MIB,
    OM,
    PROPS,
    ROOT,
)
from tests.integration.daemon.scenario_common import devices

pytestmark = pytest.mark.root


async def test_abort_and_wait(ptcopyd: Ptcopyd, client: Client) -> None:
    data = random.Random(3).randbytes(8 * MIB)
    m, s, bm = ptcopyd.set_volumes(8 * MIB, kind="independent", master_data=data)
    completed = await client.signals(sender=BUS_NAME, interface=IJOB, member="Completed")
    # 256 chunks, 2 every 100 ms: about 13 s unless stopped
    set_path, job = await client.create_set("slow", "independent", m, s, bm,
                                            copy_delay=u(100), copy_units=u(2))
    assert job != "/"
    assert (await client.ok(job, IJOB, "Wait", "d", [0.3])) == [False]
    jp = await client.props(job, IJOB)
    assert jp["Done"] is False and jp["Cancelable"] is True and jp["Progress"] < 1.0, jp
    assert jp["Operation"] == "copy-to-shadow" and jp["ProgressValid"] is True
    p = await client.props(set_path, ISET)
    assert {"copying", "to-shadow"} <= set(p["Flags"]), p["Flags"]
    assert (p["CopyDelay"], p["CopyUnits"], p["Job"]) == (100, 2, job)
    await client.refused("Busy", set_path, ISET, "Disable", "a{sv}", [{}])
    await client.refused("Busy", set_path, ISET, "Update", "sa{sv}",
                         ["shadow", {}])

    await client.ok(job, IJOB, "Cancel", "a{sv}", [{}])
    sig = await completed.wait_for(lambda x: x.path == job)
    assert sig.body[0] is False and sig.body[1], sig.body
    assert (await client.ok(job, IJOB, "Wait", "d", [10.0])) == [True]
    jp = await client.props(job, IJOB)
    assert jp["Done"] is True and jp["Success"] is False and jp["Cancelable"] is False, jp
    assert jp["Message"] == sig.body[1]
    flags = await client.wait_prop(set_path, ISET, "Flags", lambda f: "copying" not in f)
    assert "incomplete" in flags, flags

    # the same through IISet.Abort, on a second (full) copy
    job2 = await client.update(set_path, full=True)
    assert job2 != job
    await asyncio.sleep(0.3)
    await client.set_call(set_path, "Abort")
    sig = await completed.wait_for(lambda x: x.path == job2)
    assert sig.body[0] is False
    jp = await client.wait_job(job2, 10)
    assert jp["Success"] is False
    name, _ = await client.fails(set_path, ISET, "Abort", "a{sv}", [{}])
    assert name.startswith(ERR), name

    # unthrottled, the update completes and the shadow is the master's image
    await client.set_call(set_path, "SetCopyParameters", "uua{sv}", [0, 256, {}])
    job3 = await client.update(set_path)
    jp = await client.wait_job(job3)
    assert jp["Success"] is True, jp
    sig = await completed.wait_for(lambda x: x.path == job3)
    assert sig.body[0] is True
    assert len([x for x in completed.got if x.path == job3]) == 1, "Completed sent twice"
    mdev, sdev = await devices(client, set_path)
    assert same_content(mdev, sdev) == ""
    assert "incomplete" not in await client.get(set_path, ISET, "Flags")
    await client.assert_refresh_zero()


async def test_finished_jobs_stay_readable_then_go(daemon_factory: Callable[..., Ptcopyd],
                                                  client: Client) -> None:
    d = daemon_factory("--job-retention", "1")
    om = await client.signals(sender=BUS_NAME, interface=OM, member="InterfacesRemoved")
    m, s, bm = d.set_volumes(4 * MIB)
    set_path, _ = await client.create_set("jobs", "dependent", m, s, bm)
    job = await client.update(set_path)
    jp = await client.wait_job(job)
    assert jp["Success"] is True
    assert job in await client.objects()
    # gone after the retention time (checked on the daemon's 2 s sweep)
    gone = await om.wait_for(lambda x: x.body[0] == job, timeout=10)
    assert gone.path == ROOT
    assert job not in await client.objects()
    name, _ = await client.fails(job, PROPS, "GetAll", "s", [IJOB])
    assert name.startswith("org.freedesktop.DBus.Error."), name
    # the set no longer names the job that is gone
    assert (await client.props(set_path, ISET))["Job"] == "/"
    await client.assert_refresh_zero()


async def test_default_retention_keeps_jobs(ptcopyd: Ptcopyd, client: Client) -> None:
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    set_path, _ = await client.create_set("keep", "dependent", m, s, bm)
    job = await client.update(set_path)
    await client.wait_job(job)
    await asyncio.sleep(4.5)     # two sweeps of the daemon
    p = await client.props(job, IJOB)
    assert p["Done"] is True and p["Success"] is True
    assert job in await client.objects()
    assert (await client.ok(job, IJOB, "Wait", "d", [1.0])) == [True]
    await client.assert_refresh_zero()


async def test_job_wait_zero_polls_a_finished_job(ptcopyd: Ptcopyd, client: Client) -> None:
    """Wait(0) is a poll: True once the job has ended."""
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    set_path, _ = await client.create_set("poll", "dependent", m, s, bm)
    job = await client.update(set_path)
    await client.wait_job(job)
    assert (await client.ok(job, IJOB, "Wait", "d", [0.0])) == [True], \
        "Wait(0) on a finished job says it has not ended"
    await client.assert_refresh_zero()


async def test_properties_changed_only_on_change(ptcopyd: Ptcopyd, client: Client) -> None:
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    set_path, _ = await client.create_set("quiet", "dependent", m, s, bm,
                                          copy_delay=u(3), copy_units=u(64))
    group = await client.create_group("quietgroup", [set_path])
    ov_file = ptcopyd.volume(2 * MIB)
    (ov,) = await client.ok(ROOT, MANAGER, "CreateOverflow", "sa{sv}", [ov_file, {}])
    await asyncio.sleep(0.5)
    changes = await client.signals(sender=BUS_NAME, interface=PROPS,
                                   member="PropertiesChanged")
    # no-op calls: the same parameters, the same names, a member that is already in
    await client.set_call(set_path, "SetCopyParameters", "uua{sv}", [3, 64, {}])
    await client.set_call(set_path, "Rename", "sa{sv}", ["quiet", {}])
    await client.ok(group, IGROUP, "Rename", "sa{sv}", ["quietgroup", {}])
    await client.ok(group, IGROUP, "AddSet", "oa{sv}", [set_path, {}])
    await client.refresh()
    await asyncio.sleep(2.5)     # one sweep of the daemon
    noisy = [(x.path, plain(x.body)) for x in changes.got if x.path in (set_path, group, ov)]
    assert not noisy, f"PropertiesChanged without a change: {noisy}"

    # a real change: one signal with exactly what changed
    await client.set_call(set_path, "SetCopyParameters", "uua{sv}", [5, 7, {}])
    await changes.wait_for(lambda x: x.path == set_path)
    await asyncio.sleep(2.5)
    got = [plain(x.body) for x in changes.for_path(set_path)]
    assert got == [[ISET, {"CopyDelay": 5, "CopyUnits": 7}, []]], got
    assert not changes.for_path(group) and not changes.for_path(ov)
    await client.assert_refresh_zero()


async def test_reads_while_a_copy_runs(ptcopyd: Ptcopyd, client: Client) -> None:
    """Reads answer at once while a copy runs (they never queue behind operations)."""
    m, s, bm = ptcopyd.set_volumes(8 * MIB, kind="independent")
    set_path, job = await client.create_set("busy", "independent", m, s, bm,
                                            copy_delay=u(100), copy_units=u(2))
    loop = asyncio.get_running_loop()
    for _ in range(5):
        t0 = loop.time()
        await client.objects()
        await client.props(set_path, ISET)
        await client.props(job, IJOB)
        assert loop.time() - t0 < 1.0
    await client.ok(job, IJOB, "Cancel", "a{sv}", [{}])
    await client.wait_job(job, 10)
    await client.assert_refresh_zero()


async def test_a_large_copy_delay_is_refused_at_create(ptcopyd: Ptcopyd, client: Client) -> None:
    """SetCopyParameters refuses a delay above 60000 ms; CreateSet must refuse it too (a copy
    throttled by 2**32-1 ms can never be aborted, and the daemon never stops)."""
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    set_path, _ = await client.create_set("limits", "dependent", m, s, bm)
    await client.refused("InvalidArgument", set_path, ISET, "SetCopyParameters", "uua{sv}",
                         [60001, 1, {}])
    m, s, bm = ptcopyd.set_volumes(4 * MIB)
    reply = await client.call(ROOT, MANAGER, "CreateSet", "sssssa{sv}",
                              ["huge-delay", "dependent", m, s, bm,
                               {"copy_delay": u(2**32 - 1), "copy_units": u(1)}])
    if reply.error_name is None:
        (created, _) = reply.body
        delay = await client.get(created, ISET, "CopyDelay")
        await client.set_call(created, "Disable")
        raise AssertionError(f"CreateSet accepted copy_delay=2**32-1 (CopyDelay={delay})")
    assert reply.error_name == ERR + "InvalidArgument", (reply.error_name, reply.body)
    await client.assert_refresh_zero()


async def test_abort_and_stop_are_prompt_with_a_long_copy_delay(ptcopyd: Ptcopyd,
                                                               client: Client) -> None:
    """Cancel (and SIGTERM) stop a throttled copy at once, not after the current pause."""
    m, s, bm = ptcopyd.set_volumes(4 * MIB, kind="independent")
    delay_ms = 4000
    set_path, job = await client.create_set("sleepy", "independent", m, s, bm,
                                            copy_delay=u(delay_ms), copy_units=u(1))
    assert (await client.ok(job, IJOB, "Wait", "d", [0.5])) == [False]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await client.ok(job, IJOB, "Cancel", "a{sv}", [{}], timeout=delay_ms / 1000 + 10)
    (ended,) = await client.ok(job, IJOB, "Wait", "d", [10.0], timeout=20)
    took = loop.time() - t0
    assert ended
    await client.assert_refresh_zero()
    # SIGTERM during such a copy: the daemon stops at once (the copy resumes on the next start)
    await client.update(set_path, full=True)
    await asyncio.sleep(0.5)
    t1 = loop.time()
    await asyncio.to_thread(ptcopyd.stop_and_check)
    stop_took = loop.time() - t1
    slow = []
    if took >= 2.0:
        slow.append(f"Job.Cancel took {took:.1f}s: it waits out the {delay_ms} ms pause")
    if stop_took >= 3.0:
        slow.append(f"SIGTERM took {stop_took:.1f}s: it waits out the {delay_ms} ms pause")
    assert not slow, "; ".join(slow)


async def test_sigterm_while_calls_are_in_flight(ptcopyd: Ptcopyd, client: Client) -> None:
    """SIGTERM while a client waits in Job.Wait (as `ptcopy wait` does) and an Abort may still
    run: exit 0, nothing left behind, no exception in the log (the fixture also checks the log
    for tracebacks)."""
    m, s, bm = ptcopyd.set_volumes(4 * MIB, kind="independent")
    set_path, job = await client.create_set("term", "independent", m, s, bm,
                                            copy_delay=u(1000), copy_units=u(1))
    assert job != "/"
    waiting = asyncio.ensure_future(client.call(job, IJOB, "Wait", "d", [3600.0]))
    await asyncio.sleep(0.3)
    abort = asyncio.ensure_future(client.call(set_path, ISET, "Abort", "a{sv}", [{}]))
    await asyncio.sleep(0.05)
    await asyncio.to_thread(ptcopyd.stop_and_check)
    for call in (waiting, abort):
        call.cancel()
    assert "Traceback" not in ptcopyd.log_text(), ptcopyd.log_tail(40)


async def test_job_progress_moves_during_a_throttled_copy(ptcopyd: Ptcopyd,
                                                          client: Client) -> None:
    """Progress/Bytes/Rate/ExpectedEndTime move while a throttled copy runs, and the Job's
    PropertiesChanged come at most twice a second."""
    m, s, bm = ptcopyd.set_volumes(8 * MIB, kind="independent")
    changes = await client.signals(sender=BUS_NAME, interface=PROPS,
                                   member="PropertiesChanged")
    loop = asyncio.get_running_loop()
    # 256 chunks, 8 every 100 ms: about 3.2 s
    set_path, job = await client.create_set("progress", "independent", m, s, bm,
                                            copy_delay=u(100), copy_units=u(8))
    seen: list[tuple[float, float, float]] = []
    while True:
        p = await client.props(job, IJOB)
        c = await client.get(set_path, ISET, "CopyPercent")
        seen.append((p["Progress"], c, loop.time()))
        if p["Done"]:
            break
        if 0 < p["Progress"] < 1:
            assert p["Rate"] > 0 and p["ExpectedEndTime"] > p["StartTime"], p
        await asyncio.sleep(0.2)
    assert p["Success"] is True and p["Progress"] == 1.0
    middle = {round(x, 3) for x, _, _ in seen if 0 < x < 1}
    assert len(middle) >= 3, f"Job.Progress hardly moved during the copy: {seen}"
    assert any(0 < c < 100 for _, c, _ in seen), f"CopyPercent never moved: {seen}"
    stamps = [at for msg, at in zip(changes.got, changes.times, strict=True)
              if msg.path == job and "Progress" in msg.body[1]
              and not plain(msg.body[1]).get("Done")]
    assert len(stamps) >= 2, "no Progress changes signalled while the job ran"
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) > 0.4, f"Progress signalled more than twice a second: gaps {gaps}"
    await client.assert_refresh_zero()
