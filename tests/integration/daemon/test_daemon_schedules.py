"""Schedules over D-Bus, on a clock the test moves (ptcopyd --test-clock FILE, read again on
SIGUSR1): a rotation over three shadows of one master (dependent, independent, compact; each
run updates the least recent; each shadow holds the master's data as of its run), a restart
with exactly one catch-up run, pause/resume, no overlap with a running copy, and bad specs and
targets refused with nothing created."""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ptcopy.daemon.scheduler import stamp
from ptcopy.engine import Kind, bitmap_size
from tests.helpers.blockio import read_dev, write_dev
from tests.helpers.client import Client, u
from tests.helpers.daemon import Ptcopyd
from tests.helpers.names import IJOB, ISCHEDULE, ISET, MANAGER, MIB, OM, ROOT
from tests.integration.daemon.scenario_common import devices

pytestmark = pytest.mark.root

T0 = 1_900_000_000          # the test clock's start, seconds since the epoch
HOUR = 3600
SIZE = 4 * MIB


class MovedClock:
    """The file ptcopyd's --test-clock reads, and the signal that makes it look again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.set(T0)

    def set(self, seconds: int) -> None:
        self.path.write_text(f"{seconds}\n")

    def tick(self, d: Ptcopyd, seconds: int) -> None:
        self.set(seconds)
        assert d.proc is not None
        d.proc.send_signal(signal.SIGUSR1)


async def _rotation(d: Ptcopyd, client: Client, prefix: str) -> tuple[list[str], str]:
    """Three sets on one master (dependent, independent, compact dependent: its shadow is a
    quarter of the master), initial copies done; their paths and the master's device."""
    master = d.volume(SIZE, data=random.Random(1).randbytes(SIZE))
    paths = []
    for n, (kind, size) in enumerate([("dependent", SIZE), ("independent", SIZE),
                                      ("dependent", SIZE // 4)]):
        k = Kind.DEPENDENT if kind == "dependent" else Kind.INDEPENDENT
        shadow, bm = d.volume(size), d.volume(bitmap_size(SIZE, size, 0, k))
        sp, job = await client.create_set(f"{prefix}{n}", kind, master, shadow, bm)
        if job != "/":
            assert (await client.wait_job(job))["Success"] is True
        paths.append(sp)
    assert "compact" in await client.get(paths[2], ISET, "Flags")
    mdev, _ = await devices(client, paths[0])
    return paths, mdev


async def _schedule_jobs(client: Client, sets: list[str]) -> list[dict[str, Any]]:
    """The Job objects working on these sets."""
    objs = await client.objects()
    return [ifs[IJOB] for p, ifs in objs.items()
            if IJOB in ifs and set(ifs[IJOB]["Objects"]) & set(sets)]


async def _ran(client: Client, sched: str, at: int, after: str = "/") -> dict[str, Any]:
    """Wait for the run of time ``at`` (its job: LastJob other than ``after``) to end and be
    recorded; the schedule's properties then."""
    job = await client.wait_prop(sched, ISCHEDULE, "LastJob", lambda j: j not in ("/", after))
    assert (await client.wait_job(job))["Success"] is True
    want = f"holds the point in time of {stamp(at * 10**6)}"
    await client.wait_prop(sched, ISCHEDULE, "LastResult",
                           lambda r: r.startswith("done") and r.endswith(want))
    await client.wait_prop(sched, ISCHEDULE, "NextRun", lambda t: t > at * 10**6)
    return await client.props(sched, ISCHEDULE)


@pytest.fixture
def clock(tmp_path: Path) -> MovedClock:
    return MovedClock(tmp_path / "clock")


@pytest.fixture
def timed(daemon_factory: Callable[..., Ptcopyd], clock: MovedClock) -> Ptcopyd:
    return daemon_factory("--test-clock", str(clock.path))


async def test_rotation_and_catch_up(timed: Ptcopyd, clock: MovedClock, client: Client) -> None:
    sets, mdev = await _rotation(timed, client, "rot")
    (sched,) = await client.ok(ROOT, MANAGER, "CreateSchedule", "ssaoa{sv}",
                               ["rotate", "every 1h", sets, {}])
    p = await client.props(sched, ISCHEDULE)
    assert (p["Name"], p["Spec"], p["Targets"], p["Enabled"]) == ("rotate", "every 1h", sets,
                                                                  True), p
    assert (p["NextRun"], p["LastRun"], p["LastJob"], p["LastResult"]) == \
        ((T0 + HOUR) * 10**6, 0, "/", ""), p
    (runs,) = await client.ok(sched, ISCHEDULE, "NextRuns", "u", [3])
    assert runs == [(T0 + n * HOUR) * 10**6 for n in (1, 2, 3)]

    # four runs: A onto set 0, B onto 1, C onto 2, then D onto 0 again (the least recent)
    rng = random.Random(2)
    datas = [rng.randbytes(256 * 1024) for _ in range(4)]
    last = "/"
    for n, data in enumerate(datas, 1):
        write_dev(mdev, 0, data)
        clock.tick(timed, T0 + n * HOUR)
        p = await _ran(client, sched, T0 + n * HOUR, last)
        last = p["LastJob"]
        assert p["LastRun"] == (T0 + n * HOUR) * 10**6 and \
            p["NextRun"] == (T0 + (n + 1) * HOUR) * 10**6, p
        assert (await client.get(last, IJOB, "Objects")) == [sets[(n - 1) % 3]]
    for set_path, data in zip(sets, [datas[3], datas[1], datas[2]], strict=True):
        _, sdev = await devices(client, set_path)
        assert read_dev(sdev, 0, len(data)) == data, f"{set_path}: not its point in time"
    assert len(await _schedule_jobs(client, sets)) == 4

    # down for five hours: exactly one catch-up run at start, onto set 1 (now least recent)
    timed.stop_and_check()
    newer = rng.randbytes(256 * 1024)
    clock.set(T0 + 9 * HOUR)
    timed.start()
    # the master is reached again through the restarted daemon's devices
    mdev, _ = await devices(client, sets[0])
    p = await _ran(client, sched, T0 + 9 * HOUR)
    assert p["LastRun"] == (T0 + 9 * HOUR) * 10**6 and \
        p["NextRun"] == (T0 + 10 * HOUR) * 10**6, p
    jobs = await _schedule_jobs(client, sets)
    assert len(jobs) == 1 and jobs[0]["Objects"] == [sets[1]], jobs
    write_dev(mdev, 0, newer)
    _, sdev = await devices(client, sets[1])
    assert read_dev(sdev, 0, len(datas[3])) == datas[3], "the catch-up did not update set 1"
    await client.assert_refresh_zero()


async def test_pause_resume_and_overlap(timed: Ptcopyd, clock: MovedClock,
                                        client: Client) -> None:
    sets, _ = await _rotation(timed, client, "pr")
    (sched,) = await client.ok(ROOT, MANAGER, "CreateSchedule", "ssaoa{sv}",
                               ["nightly", "*-*-* 02:00:00", sets[1:2], {}])
    nxt = await client.get(sched, ISCHEDULE, "NextRun")
    assert nxt > T0 * 10**6 and nxt % (3600 * 10**6) == 0 and nxt - T0 * 10**6 <= 86400e6
    await client.ok(sched, ISCHEDULE, "Pause", "a{sv}", [{}])
    p = await client.props(sched, ISCHEDULE)
    assert p["Enabled"] is False and p["NextRun"] == 0, p
    assert (await client.ok(sched, ISCHEDULE, "NextRuns", "u", [2])) == [[]]
    clock.tick(timed, T0 + 3 * 86400)   # paused: nothing runs, nothing is made up
    await client.ping()
    await client.ok(sched, ISCHEDULE, "Resume", "a{sv}", [{}])
    p = await client.props(sched, ISCHEDULE)
    assert p["Enabled"] is True and p["NextRun"] > (T0 + 3 * 86400) * 10**6, p
    assert p["LastRun"] == 0 and p["LastJob"] == "/", p

    # a copy of the target runs (slow): RunNow is refused, a due run is skipped and says why
    await client.set_call(sets[1], "SetCopyParameters", "uua{sv}", [200, 1, {}])
    busy = await client.update(sets[1], full=True)
    text = await client.refused("Busy", sched, ISCHEDULE, "RunNow", "a{sv}", [{}])
    assert "pr1 is copying" in text, text
    due = p["NextRun"] // 10**6
    clock.tick(timed, due)
    result = await client.wait_prop(sched, ISCHEDULE, "LastResult", lambda r: r != "")
    assert result.startswith("skipped") and "pr1 is copying" in result, result
    await client.wait_prop(sched, ISCHEDULE, "NextRun", lambda t: t == (due + 86400) * 10**6)
    assert (await client.get(sched, ISCHEDULE, "LastJob")) == "/"
    await client.ok(busy, IJOB, "Cancel", "a{sv}", [{}])
    await client.wait_job(busy)
    await client.set_call(sets[1], "SetCopyParameters", "uua{sv}", [0, 256, {}])

    # RunNow: a job at once, paused or not; an incomplete shadow gets a full copy
    await client.ok(sched, ISCHEDULE, "Pause", "a{sv}", [{}])
    (job,) = await client.ok(sched, ISCHEDULE, "RunNow", "a{sv}", [{}])
    jp = await client.wait_job(job)
    assert jp["Success"] is True and jp["Operation"] == "copy-to-shadow", jp
    p = await client.wait_prop(sched, ISCHEDULE, "LastResult", lambda r: r.startswith("done"))
    assert (await client.get(sched, ISCHEDULE, "LastJob")) == job
    assert "incomplete" not in await client.get(sets[1], ISET, "Flags")
    await client.ok(sched, ISCHEDULE, "Delete", "a{sv}", [{}])
    assert sched not in await client.objects()
    await client.assert_refresh_zero()


async def test_refusals(timed: Ptcopyd, client: Client) -> None:
    sets, _ = await _rotation(timed, client, "bad")
    other = timed.set_volumes(SIZE)
    (elsewhere, _) = await client.create_set("bad-other", "dependent", *other)
    group = await client.create_group("bad-group", [])
    cases = [
        ("s1", "bogus", sets, "InvalidArgument", "bogus"),
        ("s2", "every fortnight-ish", sets, "InvalidArgument", "time span"),
        ("s3", "every 0", sets, "InvalidArgument", "at least one second"),
        ("s4", "2001-01-01", sets, "InvalidArgument", "never elapses"),
        ("s5", "hourly", [], "InvalidArgument", "no targets"),
        ("s6", "hourly", [sets[0], elsewhere], "InvalidArgument", "different masters"),
        ("s7", "hourly", [sets[0], sets[0]], "InvalidArgument", "twice"),
        ("s8", "hourly", [f"{ROOT}/sets/nosuch"], "NotFound", "no set"),
        ("s9", "hourly", [group], "InvalidArgument", "has no sets"),
        ("s10", "hourly", [group, sets[0]], "InvalidArgument", "not both"),
        ("bad name!", "hourly", sets, "InvalidArgument", "schedule name"),
        ("s11", "hourly", ["/org/x"], "InvalidArgument", "not a set object path"),
    ]
    for name, spec, targets, error, words in cases:
        text = await client.refused(error, ROOT, MANAGER, "CreateSchedule", "ssaoa{sv}",
                                    [name, spec, targets, {}])
        assert words in text, (name, text)
    await client.refused("InvalidArgument", ROOT, MANAGER, "CreateSchedule", "ssaoa{sv}",
                         ["s12", "hourly", sets, {"confirm": u(1)}])
    await client.ok(ROOT, MANAGER, "CreateSchedule", "ssaoa{sv}", ["dup", "hourly", sets, {}])
    await client.refused("Exists", ROOT, MANAGER, "CreateSchedule", "ssaoa{sv}",
                         ["dup", "daily", sets, {}])
    (objs,) = await client.ok(ROOT, OM, "GetManagedObjects", "", [])
    assert [p for p, ifs in objs.items() if ISCHEDULE in ifs] != []
    assert len([p for p, ifs in objs.items() if ISCHEDULE in ifs]) == 1


async def test_a_run_cut_by_a_crash(timed: Ptcopyd, clock: MovedClock, client: Client) -> None:
    """ptcopyd killed during a run: at the next start the result says so, the copy resumes by
    itself, and the run is not made up again (it did start)."""
    sets, mdev = await _rotation(timed, client, "cr")
    (sched,) = await client.ok(ROOT, MANAGER, "CreateSchedule", "ssaoa{sv}",
                               ["crash", "every 1h", sets[1:2], {}])
    # 32 changed chunks, one every 200 ms: the run's update lasts seconds
    await client.set_call(sets[1], "SetCopyParameters", "uua{sv}", [200, 1, {}])
    write_dev(mdev, 0, random.Random(3).randbytes(1 * MIB))
    clock.tick(timed, T0 + HOUR)
    await client.wait_prop(sched, ISCHEDULE, "LastResult", lambda r: r.startswith("running"))
    timed.kill()
    timed.start()
    await client.wait_prop(sched, ISCHEDULE, "LastResult", lambda r: r.startswith("unknown"))
    p = await client.props(sched, ISCHEDULE)
    assert p["LastRun"] == (T0 + HOUR) * 10**6 and p["NextRun"] == (T0 + 2 * HOUR) * 10**6, p
    assert p["LastJob"] == "/", p
    jobs = await _schedule_jobs(client, sets)
    assert [j["Operation"] for j in jobs] == ["resume"], jobs
    await client.set_call(sets[1], "Abort")


async def test_rotation_picks_right_after_a_run_and_redoes_a_failed_one(
        timed: Ptcopyd, clock: MovedClock, client: Client) -> None:
    """A run asked for the moment the previous one's job ends goes to the next shadow (the
    previous set is already the most recent); a run whose copy was cancelled left its shadow
    incomplete, so the next run takes that shadow again, in full, though another is older; a
    run cut by a crash still counts (its copy resumes), so the next run goes elsewhere."""
    sets, mdev = await _rotation(timed, client, "rr")
    pair = [sets[1], sets[0]]   # the independent set first: its update copies, slowly
    (sched,) = await client.ok(ROOT, MANAGER, "CreateSchedule", "ssaoa{sv}",
                               ["pair", "every 1h", pair, {}])
    await client.ok(sched, ISCHEDULE, "Pause", "a{sv}", [{}])   # RunNow only

    async def run_now(at: int) -> tuple[str, list[str]]:
        clock.tick(timed, at)
        await client.ping()
        (job,) = await client.ok(sched, ISCHEDULE, "RunNow", "a{sv}", [{}])
        return job, await client.get(job, IJOB, "Objects")

    job, objs = await run_now(T0 + 1)
    assert objs == [pair[0]]
    assert (await client.wait_job(job))["Success"] is True
    job, objs = await run_now(T0 + 2)            # at once after Completed
    assert objs == [pair[1]], "the run after a finished one took the same shadow again"
    assert (await client.wait_job(job))["Success"] is True

    # pair[0] is now the oldest: its run is slowed down and cancelled
    data = random.Random(4).randbytes(1 * MIB)
    write_dev(mdev, 0, data)
    await client.set_call(pair[0], "SetCopyParameters", "uua{sv}", [200, 1, {}])
    job, objs = await run_now(T0 + 3)
    assert objs == [pair[0]]
    await client.ok(job, IJOB, "Cancel", "a{sv}", [{}])
    assert (await client.wait_job(job))["Success"] is False
    assert "incomplete" in await client.get(pair[0], ISET, "Flags")
    await client.set_call(pair[0], "SetCopyParameters", "uua{sv}", [0, 256, {}])

    # pair[1] (stamped T0 + 2) is older than pair[0] (T0 + 3), but pair[0] holds nothing whole
    job, objs = await run_now(T0 + 4)
    assert objs == [pair[0]], "a shadow left incomplete was not taken first"
    jp = await client.wait_job(job)
    assert jp["Success"] is True and jp["Operation"] == "copy-to-shadow", jp
    _, sdev = await devices(client, pair[0])
    assert read_dev(sdev, 0, len(data)) == data
    job, objs = await run_now(T0 + 5)            # and the rotation goes on
    assert objs == [pair[1]]
    assert (await client.wait_job(job))["Success"] is True

    # ptcopyd killed during pair[0]'s run: its copy resumes and ends by itself, so pair[0]
    # holds the newest point in time and the next run goes to pair[1]
    write_dev(mdev, 0, random.Random(5).randbytes(1 * MIB))
    await client.set_call(pair[0], "SetCopyParameters", "uua{sv}", [200, 1, {}])
    job, objs = await run_now(T0 + 6)
    assert objs == [pair[0]]
    timed.kill()
    timed.start()
    await client.set_call(pair[0], "SetCopyParameters", "uua{sv}", [0, 256, {}])
    await client.wait_prop(pair[0], ISET, "Flags", lambda f: "copying" not in f)
    job, objs = await run_now(T0 + 7)
    assert objs == [pair[1]], "the run after a restart took the shadow just given a point in time"
    assert (await client.wait_job(job))["Success"] is True
    await client.assert_refresh_zero()
